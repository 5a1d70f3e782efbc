"""A lean PutObject for ``S3Store``: boto3's own request, signed with botocore, sent over urllib3.

boto3 spends most of its client CPU per PutObject on work that is the same for every object of
a bucket: resolving the endpoint rules, building the user agent, walking its event hooks. For
a stream of small JSON documents that costs more than everything else syncd does per task.
This path learns the request shape once, from a real boto3 PutObject (the probe object of
``check_writable``: its final URL, so virtual/path style, region, FIPS and dual-stack choices
stay boto3's), then for every object builds the same request, signs it with botocore's SigV4
signer and the same credential chain, and sends it through a connection pool sized to
``transfers``. The object's sha256, which syncd computes anyway, travels as
``x-amz-checksum-sha256``, so S3 verifies every upload end to end at no CPU cost here.

An error answer is turned into the adapter's usual error, and retried (or not) like any other
request of the adapter. A 400 or 501 (a store that refuses the checksum header, say) is tried
once more through boto3, and if boto3 succeeds this path is turned off for the store.
"""

from __future__ import annotations

import base64
import os
import threading
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path


class SignedPut:
    def __init__(self, base_url: str, region: str, credentials: Any, headers: dict[str, str], transfers: int):
        self.base_url = base_url  # everything before the quoted key
        self.region = region
        self.credentials = credentials
        self.headers = headers  # Content-Type, SSE, storage class
        self.transfers = transfers
        self._pool: urllib3.PoolManager | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @classmethod
    def learn(cls, request: Any, full_key: str, credentials: Any, headers: dict[str, str],
              transfers: int) -> SignedPut | None:
        """From the prepared request of a boto3 PutObject of ``full_key``; None when it cannot
        be reproduced (anonymous access, a proxy in the way, an unexpected URL or signature)."""
        if credentials is None:
            return None
        url = request.url.split("?", 1)[0]
        quoted = quote(full_key, safe="/~")
        if not url.endswith("/" + quoted):
            return None
        authorization = request.headers.get("Authorization", b"")
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        # "AWS4-HMAC-SHA256 Credential=AKID/20261125/us-east-1/s3/aws4_request, ..."
        try:
            scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
            region, service = scope[2], scope[3]
        except IndexError:
            return None
        if not authorization.startswith("AWS4-HMAC-SHA256") or service != "s3":
            return None
        host = urlsplit(url).hostname or ""
        if not urllib.request.proxy_bypass(host) and urllib.request.getproxies().get(urlsplit(url).scheme):
            return None  # boto3 goes through the proxy; keep it that way
        return cls(url[: -len(quoted)], region, credentials, headers, transfers)

    def _pool_manager(self) -> urllib3.PoolManager:
        pid = os.getpid()
        if self._pool is None or self._pid != pid:  # pools are not shared with a forked child
            with self._lock:
                if self._pool is None or self._pid != pid:
                    self._pool = urllib3.PoolManager(
                        maxsize=max(self.transfers, 10), block=False, retries=False,
                        timeout=urllib3.Timeout(connect=10, read=60),
                        ca_certs=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True))
                    self._pid = pid
        return self._pool

    def put(self, full_key: str, data: bytes, sha256: str) -> Any:
        """The response (status, headers, data): the caller reads the ETag of a stored object,
        or explains a failure. One request: the caller retries (``RetryingStore.call``); a
        network error raises urllib3's ``HTTPError``."""
        headers = dict(self.headers)
        headers["x-amz-meta-sha256"] = sha256
        headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
        headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        headers["X-Amz-Content-SHA256"] = sha256  # the payload hash SigV4 signs: already known
        url = self.base_url + quote(full_key, safe="/~")
        request = AWSRequest(method="PUT", url=url, data=data, headers=headers)
        S3SigV4Auth(self.credentials.get_frozen_credentials(), "s3", self.region).add_auth(request)
        response = self._pool_manager().request("PUT", url, body=data, headers=dict(request.headers.items()),
                                                redirect=False)
        return response

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
