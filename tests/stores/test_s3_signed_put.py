"""S3's lean upload path (syncd/stores/s3_signed_put.py) against moto's server, through a proxy."""

from __future__ import annotations

import base64
import hashlib

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
