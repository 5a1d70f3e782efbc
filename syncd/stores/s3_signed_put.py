"""A lean PutObject for ``S3Store``: boto3's own request, signed with SigV4, sent on kept connections.

boto3 spends most of its client CPU per PutObject on work that is the same for every object of
a bucket: resolving the endpoint rules, building the user agent, walking its event hooks. For
a stream of small JSON documents that costs more than everything else syncd does per task.
This path learns the request shape once, from a real boto3 PutObject (the probe object of
``check_writable``: its final URL, so virtual/path style, region, FIPS and dual-stack choices
stay boto3's), then for every object builds the same request, signs it with the same
credential chain, and sends it through a connection pool sized to
``transfers``. The object's sha256, which syncd computes anyway, travels as
``x-amz-checksum-sha256``, so S3 verifies every upload end to end at no CPU cost here.

An error answer is turned into the adapter's usual error, and retried (or not) like any other
request of the adapter. A 400 or 501 (a store that refuses the checksum header, say) is tried
once more through boto3, and if boto3 succeeds this path is turned off for the store.

The request is signed here (``SigV4``), not by botocore's signer, which for every request
builds a header map, parses the URL, hashes the body again and derives the signing key (four
HMACs): together more CPU than sending the request. The signature is botocore's for the same
request and time (a test compares the two), and the server checks it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.httpsession import get_cert_path

from syncd.stores.http1 import DEFAULT_PORTS, HTTPConnections, Response


class SigV4:
    """AWS Signature Version 4 as S3 takes it (the path signed as sent, not normalised), for
    one region and service; the signing key of each day is derived once."""

    def __init__(self, region: str, service: str = "s3"):
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, day, signing key): the last derived

    def authorization(self, method: str, path: str, headers: dict[str, str], payload_sha256: str,
                      access_key: str, secret_key: str, amz_date: str) -> str:
        """The Authorization header for a request whose headers (``headers``: lower-case names,
        ``host`` and ``x-amz-date`` included) are all signed."""
        names = sorted(headers)
        signed = ";".join(names)
        canonical = "\n".join((method, path, "", *(f"{name}:{' '.join(headers[name].split())}" for name in names),
                               "", signed, payload_sha256))
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        return f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"

    def _signing_key(self, secret_key: str, day: str) -> bytes:
        cached_secret, cached_day, key = self._key
        if (cached_secret, cached_day) != (secret_key, day):
            key = f"AWS4{secret_key}".encode()
            for part in (day, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (secret_key, day, key)  # (one assignment: threads see the old key or the new)
        return key


def host_header(url: str) -> str:
    """The Host a SigV4 request to ``url`` is signed with (and sent with): lower case, no
    default port, IPv6 in brackets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class SignedPut:
    def __init__(self, base_url: str, region: str, credentials: Any, headers: dict[str, str], transfers: int):
        self.base_url = base_url  # everything before the quoted key
        self.base_path = urlsplit(base_url).path
        self.region = region
        self.credentials = credentials
        # Content-Type, SSE, storage class; and the Host, so that what is signed is what is sent.
        self.headers = {name.lower(): value for name, value in headers.items()}
        self.headers["host"] = host_header(base_url)
        self.signer = SigV4(region)
        self.transfers = transfers
        self._pool: HTTPConnections | None = None
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

    def _connections(self) -> HTTPConnections:
        pid = os.getpid()
        if self._pool is None or self._pid != pid:  # connections are not shared with a forked child
            with self._lock:
                if self._pool is None or self._pid != pid:
                    self._pool = HTTPConnections(self.base_url, max(self.transfers, 10),
                                                 ca_certs=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True))
                    self._pid = pid
        return self._pool

    def put(self, full_key: str, data: bytes, sha256: str) -> Response:
        """The response (status, headers, data): the caller reads the ETag of a stored object,
        or explains a failure. One request: the caller retries (``RetryingStore.call``); a
        network error raises an ``OSError`` (``ConnectionError``, ``TimeoutError``, ...)."""
        credentials = self.credentials.get_frozen_credentials()  # (refreshed when they expire)
        headers = dict(self.headers)
        headers["x-amz-meta-sha256"] = sha256
        headers["x-amz-sdk-checksum-algorithm"] = "SHA256"
        headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        headers["x-amz-content-sha256"] = sha256  # the payload hash SigV4 signs: already known
        headers["x-amz-date"] = amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        if credentials.token:
            headers["x-amz-security-token"] = credentials.token
        path = self.base_path + quote(full_key, safe="/~")
        headers["authorization"] = self.signer.authorization("PUT", path, headers, sha256, credentials.access_key,
                                                             credentials.secret_key, amz_date)
        return self._connections().request("PUT", path, headers, data)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
