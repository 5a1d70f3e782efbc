"""S3's lean upload path (syncd/stores/s3_signed_put.py) against moto's server, through a proxy."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import quote, urlsplit

import pytest

from syncd.errors import StoreError
from syncd.stores import open_store
from tests.servers import (
    apply_env,
    fault_proxy_fixture,  # noqa: F401  (pytest fixtures, registered under their own names)
    get_service,
    s3_service_fixture,  # noqa: F401
)


@pytest.fixture
def s3_via_proxy(request, monkeypatch, fault_proxy):
    service = get_service(request, "s3")
    proxy = fault_proxy(service.endpoint)
    bucket = service.new_bucket()
    url, options, env = service.target(bucket, "docs", endpoint=proxy.url)
    apply_env(monkeypatch, env)
    store = open_store(url, {**options, "max_attempts": 1}, transfers=4)
    store.check_writable()
    yield service, proxy, bucket, store
    store.close()


def body(n: int) -> tuple[bytes, str]:
    data = f'{{"id": {n}, "text": "Straße"}}'.encode()
    return data, hashlib.sha256(data).hexdigest()


def test_uploads_are_verified_by_s3_with_the_documents_sha256(s3_via_proxy):
    service, proxy, bucket, store = s3_via_proxy
    assert store._signed_put is not None, "check_writable should have learned the lean path"
    data, sha = body(1)
    store.put("a/1.json", data, sha)
    head = service.client().head_object(Bucket=bucket, Key="docs/a/1.json", ChecksumMode="ENABLED")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"sha256": sha}
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    assert service.read_object(bucket, "docs/a/1.json") == data


def test_throttling_is_retryable_with_retry_after(s3_via_proxy):
    _service, proxy, _bucket, store = s3_via_proxy
    proxy.fail(503, headers={"Retry-After": "7"}, method="PUT")
    with pytest.raises(StoreError) as raised:
        store.put("b.json", *body(3))
    assert raised.value.retryable and raised.value.retry_after == 7 and "b.json" in str(raised.value)


def test_a_store_that_refuses_the_lean_request_gets_boto3s(s3_via_proxy):
    service, proxy, bucket, store = s3_via_proxy
    proxy.fail(400, body=b"<Error><Code>InvalidArgument</Code></Error>", method="PUT")
    data, sha = body(4)
    store.put("c.json", data, sha)
    assert service.read_object(bucket, "docs/c.json") == data
    assert store._signed_put is None  # boto3 from now on
    store.put("d.json", *body(5))
    assert "docs/d.json" in service.raw_keys(bucket)


@pytest.mark.parametrize("base_url", ["https://bucket.s3.eu-west-1.amazonaws.com/",
                                      "http://127.0.0.1:9000/bucket/",
                                      "https://[::1]:8443/bucket/",
                                      "http://minio.internal:80/bucket/"])
@pytest.mark.parametrize("token", [None, "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJH+token="])
def test_each_request_is_signed_as_botocore_signs_it(monkeypatch, base_url, token):
    """The lean path's own SigV4 gives botocore's Authorization header for the same request,
    key characters that need quoting, SSE headers and session tokens included."""
    import datetime
    import time

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from syncd.stores.s3_signed_put import SignedPut

    when = datetime.datetime(2026, 12, 1, 3, 4, 5)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: when)
    monkeypatch.setattr(time, "gmtime", lambda *_: when.timetuple())
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    static = {"Content-Type": "application/json", "x-amz-server-side-encryption": "aws:kms",
              "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:eu-west-1:1:key/k",
              "x-amz-storage-class": "STANDARD_IA"}
    lean = SignedPut(base_url, "eu-west-1", credentials, static, transfers=4)
    sent = []

    class Connections:
        def request(self, method, path, headers, body):
            sent.append((method, path, body, headers))

    monkeypatch.setattr(lean, "_connections", Connections)
    for key in ("docs/1.json", "docs/a b/Straße~(1)+x.json", "p/%2F/ü=&?.json"):
        data, sha = body(len(key))
        lean.put(key, data, sha)
        method, path, sent_body, headers = sent.pop()
        assert (method, sent_body) == ("PUT", data)
        request = AWSRequest(method="PUT", url=base_url + quote(key, safe="/~"), data=data, headers={
            name: value for name, value in headers.items()
            if name not in ("authorization", "host", "x-amz-date", "x-amz-security-token")})
        botocore.auth.S3SigV4Auth(credentials, "s3", "eu-west-1").add_auth(request)
        assert headers["authorization"] == request.headers["Authorization"], key
        assert headers["x-amz-date"] == request.headers["X-Amz-Date"]
        assert headers.get("x-amz-security-token") == request.headers.get("X-Amz-Security-Token")
        assert headers["host"] == botocore.auth._host_from_url(request.url)  # the Host botocore signed
        assert path == urlsplit(request.url).path
