"""Amazon S3 (and S3-compatible) target: ``s3://bucket/prefix``.

A thin layer over boto3. Credentials come only from boto3's default chain (environment,
shared config/credentials files and ``profile``, container/instance/IRSA roles); the endpoint
from ``endpoint_url`` or boto3's own ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``.

Each object is written with one PutObject (atomic), ``Content-Type: application/json`` and the
document's sha256 in the user metadata ``x-amz-meta-sha256``. S3 listings do not carry user
metadata: ``list`` gives each object's size and ETag (the MD5 of a single-part upload), which
``put`` returns too, so comparing a listing with what was written costs one request per 1,000
objects, not a HEAD per object.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from syncd.errors import ConfigError, StoreError
from syncd.stores.base import ObjectInfo
from syncd.stores.cloud import (
    DEFAULT_MAX_ATTEMPTS,
    PROBE_DATA,
    PROBE_SHA256,
    CloudStore,
)
from syncd.stores.cloud import is_object_key as _is_object_key
from syncd.stores.cloud import max_attempts as _max_attempts
from syncd.stores.cloud import one_line as _one_line
from syncd.stores.cloud import retry_after as _retry_after
from syncd.stores.cloud import split_url as _split_url
from syncd.stores.s3_signed_put import SignedPut

log = logging.getLogger("syncd")

OPTION_KEYS = ("endpoint_url", "region", "addressing_style", "profile", "sse", "kms_key_id",
               "storage_class", "max_attempts")
PAGE_SIZE = 1000

_THROTTLING = {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "TooManyRequestsException",
               "RequestLimitExceeded", "RequestThrottled", "RequestThrottledException",
               "ProvisionedThroughputExceededException", "BandwidthLimitExceeded"}
_TRANSIENT = {"RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
              "OperationAborted", "PriorRequestNotComplete"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
                    "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId",
                    "UnrecognizedClientException", "AuthFailure", "MissingSecurityHeader"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidObjectState", "InvalidPayer",
           "NotSignedUp", "AccessDeniedException", "Forbidden"}
_WRONG_REGION = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
                 "InvalidRegion"}
_NO_CREDENTIALS = (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError,
                   botocore.exceptions.CredentialRetrievalError, botocore.exceptions.NoAuthTokenError,
                   botocore.exceptions.TokenRetrievalError, botocore.exceptions.SSOError)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class S3Store(CloudStore):
    """One bucket and key prefix on S3 or an S3-compatible service.

    ``lean_put``: upload through ``SignedPut`` once ``check_writable`` learned its request (the
    default); False keeps every upload on boto3's ``put_object``."""

    lean_put = True
    scheme, service = "s3", "S3"
    listing_hashes = False

    def __init__(self, url: str, bucket: str, prefix: str, *, endpoint_url: str | None = None,
                 region: str | None = None, addressing_style: str = "auto", profile: str | None = None,
                 sse: str | None = None, kms_key_id: str | None = None, storage_class: str | None = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, transfers: int = 8):
        self._endpoint_url = endpoint_url
        self._region = region
        self._addressing_style = addressing_style
        self._profile = profile
        self._put_args: dict[str, str] = {}
        if sse:
            self._put_args["ServerSideEncryption"] = sse
        if kms_key_id:
            self._put_args["SSEKMSKeyId"] = kms_key_id
        if storage_class:
            self._put_args["StorageClass"] = storage_class
        self._target(bucket, prefix, max_attempts, transfers)
        self._credentials: Any = None
        self._signed_put: SignedPut | None = None  # learned by check_writable
        self._client()  # a wrong profile or endpoint shows now, as a ConfigError; no request is made

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any], *, transfers: int = 8) -> S3Store:
        bucket, prefix = _split_url(url, "s3")
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(f"target {url!r}: unknown s3 option {unknown[0]!r}; "
                              f"the s3 options are {', '.join(OPTION_KEYS)}")
        opts = {k: v for k, v in options.items() if v is not None and v != ""}
        for key in OPTION_KEYS:
            if key in opts and key != "max_attempts" and not isinstance(opts[key], str):
                raise ConfigError(f"target {url!r}: s3 option {key!r} must be a string")
        style = opts.get("addressing_style", "auto")
        if style not in ("auto", "path", "virtual"):
            raise ConfigError(f"target {url!r}: s3 option 'addressing_style' must be auto, path or virtual "
                              f"(got {style!r})")
        sse = opts.get("sse")
        if sse is not None and sse not in ("AES256", "aws:kms"):
            raise ConfigError(f"target {url!r}: s3 option 'sse' must be AES256 or aws:kms (got {sse!r})")
        if "kms_key_id" in opts and sse != "aws:kms":
            raise ConfigError(f"target {url!r}: s3 option 'kms_key_id' needs sse: aws:kms")
        endpoint = opts.get("endpoint_url")
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"target {url!r}: s3 option 'endpoint_url' must start with http:// or https:// "
                              f"(got {endpoint!r})")
        return cls(url, bucket, prefix, endpoint_url=endpoint, region=opts.get("region"),
                   addressing_style=style, profile=opts.get("profile"), sse=sse,
                   kms_key_id=opts.get("kms_key_id"), storage_class=opts.get("storage_class"),
                   max_attempts=_max_attempts(url, "s3", opts.get("max_attempts")), transfers=transfers)

    # -- the client, created again in a forked child (boto3 clients are not fork-safe) -------------

    def _make_client(self) -> Any:
        try:
            session = boto3.session.Session(profile_name=self._profile, region_name=self._region)
        except botocore.exceptions.ProfileNotFound:
            raise ConfigError(f"target {self.url!r}: AWS profile {self._profile!r} is not in the AWS config "
                              "or credentials file; fix the s3 option 'profile' or AWS_PROFILE") from None
        config = Config(
            max_pool_connections=max(self.transfers, 10),
            retries={"mode": "standard", "total_max_attempts": 1},  # RetryingStore.call retries, once
            s3={"addressing_style": self._addressing_style},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="labelstudio-syncd",
        )
        self._credentials = session.get_credentials()
        try:
            return session.client("s3", endpoint_url=self._endpoint_url, config=config)
        except (botocore.exceptions.BotoCoreError, ValueError) as exc:
            raise ConfigError(f"target {self.url!r}: cannot set up the S3 client: "
                              f"{_one_line(str(exc))}") from None

    # -- the Store interface ---------------------------------------------------------------------

    @property
    def identity(self) -> str:
        meta = self._client().meta
        return f"{self.url}?endpoint={meta.endpoint_url}&region={meta.region_name}"

    def put(self, key: str, data: bytes, sha256: str) -> str | None:
        return self.call("write", key, lambda: self._put(key, data, sha256))

    def _put(self, key: str, data: bytes, sha256: str) -> str | None:
        fast = self._signed_put
        if fast is not None:
            response = fast.put(self.prefix + key, data, sha256)
            if 200 <= response.status < 300:
                return _etag(response.headers.get("etag"))
            if response.status not in (400, 501):
                raise self._error("write", key, _client_error(response))
        answer = self._client().put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data,
                                           ContentType="application/json", Metadata={"sha256": sha256},
                                           **self._put_args)
        if fast is not None:
            # boto3 stored what the lean path could not: this store wants boto3's requests.
            log.info("S3 target %s: using boto3 for every upload", self.url)
            self._signed_put = None
        return _etag(answer.get("ETag"))

    def _probe_put(self, key: str) -> None:
        """Put the probe object through boto3 and learn the request's shape (see s3_signed_put)."""
        client = self._client()
        seen: dict[str, Any] = {}

        def capture(request: Any, **_: Any) -> None:
            seen.setdefault("request", request)

        client.meta.events.register("before-send.s3.PutObject", capture)
        try:
            self.put(key, PROBE_DATA, PROBE_SHA256)
        finally:
            client.meta.events.unregister("before-send.s3.PutObject", capture)
        if "request" in seen and self.transfers > 1 and self.lean_put:
            headers = {"Content-Type": "application/json"}
            for name, header in (("ServerSideEncryption", "x-amz-server-side-encryption"),
                                 ("SSEKMSKeyId", "x-amz-server-side-encryption-aws-kms-key-id"),
                                 ("StorageClass", "x-amz-storage-class")):
                if name in self._put_args:
                    headers[header] = self._put_args[name]
            self._signed_put = SignedPut.learn(seen["request"], self.prefix + key, self._credentials,
                                               headers, self.transfers)

    def delete(self, key: str) -> None:
        def request() -> None:
            try:
                self._client().delete_object(Bucket=self.bucket, Key=self.prefix + key)
            except botocore.exceptions.ClientError as exc:
                if _status(exc) != 404 or _code(exc) == "NoSuchBucket":
                    raise  # (some S3-compatible services answer 404 instead of 204)

        self.call("delete", key, request)

    def head(self, key: str) -> ObjectInfo | None:
        return self.call("read", key, lambda: self._head(key))

    def get(self, key: str) -> bytes | None:
        def request() -> bytes | None:
            try:
                resp = self._client().get_object(Bucket=self.bucket, Key=self.prefix + key)
            except botocore.exceptions.ClientError as exc:
                if _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                    return None
                raise
            with resp["Body"] as body:
                return body.read()

        return self.call("read", key, request)

    def _head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self._client().head_object(Bucket=self.bucket, Key=self.prefix + key)
        except botocore.exceptions.ClientError as exc:
            if _status(exc) == 404:
                return None
            raise
        sha = (resp.get("Metadata") or {}).get("sha256", "").lower()
        return ObjectInfo(key=key, size=int(resp["ContentLength"]), sha256=sha if _SHA256.fullmatch(sha) else None,
                          etag=_etag(resp.get("ETag")))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix, "MaxKeys": PAGE_SIZE}
        while True:
            page = self.call("list", prefix, lambda: self._client().list_objects_v2(**request), listing=True)
            for obj in page.get("Contents", ()):
                key = obj["Key"][len(self.prefix):]
                if _is_object_key(key):
                    yield ObjectInfo(key, int(obj["Size"]), None, _etag(obj.get("ETag")))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            request["ContinuationToken"] = token

    def close(self) -> None:
        super().close()
        if self._signed_put is not None:
            self._signed_put.close()

    # -- errors ----------------------------------------------------------------------------------

    def _error(self, action: str, key: str, exc: Exception, *, listing: bool = False) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        where = self._where(key) + ("*" if listing else "")
        what = f"cannot {action} {where}"
        endpoint = self._endpoint_label()
        if isinstance(exc, botocore.exceptions.ClientError):
            code, status = _code(exc), _status(exc)
            message = _one_line(str((exc.response.get("Error") or {}).get("Message") or ""))[:200]
            reason = f"{code or 'error'} (HTTP {status})" + (f": {message}" if message else "")
            retry_after = _retry_after(((exc.response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {})
                                       .get("retry-after"))
            if code == "NoSuchBucket":
                return StoreError(f"S3 bucket {self.bucket!r} does not exist{endpoint}; create it or fix the "
                                  f"target URL {self.url}", fatal=True)
            if code in _BAD_CREDENTIALS or status == 401:
                return StoreError(f"{what}: S3 rejected the credentials ({code or status}){endpoint}; "
                                  "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), "
                                  "AWS_PROFILE or the 's3.profile' option, or the role syncd runs with",
                                  fatal=True)
            if code in _DENIED or status == 403 or (code or "").startswith("KMS."):
                return StoreError(f"{what}: access denied ({reason}); grant the credentials s3:PutObject, "
                                  f"s3:GetObject, s3:DeleteObject and s3:ListBucket on bucket {self.bucket!r}"
                                  + (" and use of the KMS key" if "SSEKMSKeyId" in self._put_args
                                     or self._put_args.get("ServerSideEncryption") == "aws:kms" else ""),
                                  fatal=True)
            if code in _WRONG_REGION or status == 301:
                return StoreError(f"{what}: {reason}; bucket {self.bucket!r} is in another region or behind "
                                  "another endpoint: set the 's3.region' option (or AWS_REGION) or "
                                  "'s3.endpoint_url'", fatal=True)
            if code in _THROTTLING or status in (429, 503):
                return StoreError(f"{what}: throttled, {reason}; if it persists, lower 'transfers'", retryable=True,
                                  retry_after=retry_after)
            if code in _TRANSIENT or status in (408, 500, 502, 504) or (status or 0) >= 500:
                return StoreError(f"{what}: server error, {reason}", retryable=True,
                                  retry_after=retry_after)
            return StoreError(f"{what}: {reason}")
        if isinstance(exc, _NO_CREDENTIALS):
            return StoreError(f"{what}: no usable AWS credentials ({type(exc).__name__}); set "
                              "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the 's3.profile' "
                              "option, or run with an instance/IRSA role", fatal=True)
        if isinstance(exc, ssl.SSLCertVerificationError) or (
                isinstance(exc, botocore.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)):
            return StoreError(f"{what}: the TLS certificate of the endpoint{endpoint} is not trusted; set "
                              "AWS_CA_BUNDLE to its CA bundle", fatal=True)
        if isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError, OSError)):
            return StoreError(f"{what}: network error{endpoint}: {type(exc).__name__}; "
                              "check the network and 's3.endpoint_url' if it persists", retryable=True)
        if isinstance(exc, ConfigError):
            return StoreError(str(exc), fatal=True)
        return StoreError(f"{what}: {type(exc).__name__}: {_one_line(str(exc))[:200]}")

    def _endpoint_label(self) -> str:
        client = self._clients.current
        endpoint = client.meta.endpoint_url if client is not None else self._endpoint_url
        if not endpoint or endpoint.endswith(".amazonaws.com"):
            return ""
        return f" at {endpoint.split('@')[-1]}"


def _client_error(response: Any) -> botocore.exceptions.ClientError:
    """An error answer of the lean upload path, as the ClientError boto3 would have raised."""
    code = message = None
    text = response.data.decode("utf-8", "replace") if response.data else ""
    if "<Code>" in text:
        code = text.split("<Code>", 1)[1].split("</Code>", 1)[0]
    if "<Message>" in text:
        message = text.split("<Message>", 1)[1].split("</Message>", 1)[0]
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code or str(response.status), "Message": message or ""},
         "ResponseMetadata": {"HTTPStatusCode": response.status, "HTTPHeaders": response.headers}}, "PutObject")


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None


def _code(exc: Exception) -> str | None:
    if isinstance(exc, botocore.exceptions.ClientError):
        return (exc.response.get("Error") or {}).get("Code")
    return None


def _status(exc: Exception) -> int | None:
    if isinstance(exc, botocore.exceptions.ClientError):
        return (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return None
