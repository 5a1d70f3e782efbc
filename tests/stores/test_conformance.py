"""One suite for every storage adapter (as rclone's fstests and litestream's integration tests do).

Each test runs against a local directory and against real servers for S3 (moto), GCS
(gcp-storage-emulator) and Azure Blob (Azurite): see tests/servers.py. A backend whose server is
not available is skipped, or fails when SYNCD_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from syncd.errors import ConfigError, StoreError
from syncd.stores import ObjectInfo, Store, open_store
from tests.servers import (
    ALL_SERVICES,
    CLOUD_SERVICES,
    AzureService,
    S3Service,
    Service,
    apply_env,
    azure_service_fixture,  # noqa: F401  (pytest fixtures, registered under their own names)
    fault_proxy_fixture,  # noqa: F401
    free_port,
    gcs_service_fixture,  # noqa: F401
    get_service,
    local_service_fixture,  # noqa: F401
    s3_auth_service_fixture,  # noqa: F401
    s3_boto3_service_fixture,  # noqa: F401
    s3_service_fixture,  # noqa: F401
)


def doc(value: Any) -> tuple[bytes, str]:
    data = json.dumps(value, ensure_ascii=False).encode()
    return data, hashlib.sha256(data).hexdigest()


def bucket_of(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[0]


class Harness:
    """Opens stores on fresh targets of one service, with that service's environment applied."""

    def __init__(self, service: Service, monkeypatch: pytest.MonkeyPatch):
        self.service = service
        self.monkeypatch = monkeypatch
        self.stores: list[Store] = []

    def open(self, url: str, options: dict[str, Any], env: dict[str, str | None], *, transfers: int = 8,
             **extra: Any) -> Store:
        apply_env(self.monkeypatch, env)
        store = open_store(url, {**options, **extra}, transfers=transfers)
        self.service.configure(store)
        self.stores.append(store)
        return store

    def fresh(self, prefix: str = "", *, endpoint: str | None = None, transfers: int = 8, check: bool = True,
              **extra: Any) -> tuple[Store, str]:
        """A store on a new empty bucket, and the bucket's name; checked writable first, as a run
        does before it writes."""
        bucket = self.service.new_bucket()
        url, options, env = self.service.target(bucket, prefix, endpoint=endpoint)
        store = self.open(url, options, env, transfers=transfers, **extra)
        if check:
            store.check_writable()
        return store, bucket

    def close(self) -> None:
        for store in self.stores:
            store.close()


def _harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = Harness(get_service(request, request.param), monkeypatch)
    yield harness
    harness.close()


@pytest.fixture(params=ALL_SERVICES)
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from _harness(request, monkeypatch)


@pytest.fixture(params=CLOUD_SERVICES)
def cloud(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    yield from _harness(request, monkeypatch)


def listing(store: Store, prefix: str = "") -> dict[str, ObjectInfo]:
    infos = list(store.list(prefix))
    keys = [info.key for info in infos]
    assert len(keys) == len(set(keys)), "list yielded a key twice"
    return {info.key: info for info in infos}


def put(store: Store, key: str, data: bytes, sha: str) -> tuple[ObjectInfo, ObjectInfo]:
    """Put an object; what ``head`` must then say of it, and what a listing must say: the sha256
    where the store's listings carry it, else the etag ``put`` returned."""
    etag = store.put(key, data, sha)
    assert store.listing_hashes or etag, "a store whose listings carry no sha256 must return an etag"
    return (ObjectInfo(key, len(data), sha, etag),
            ObjectInfo(key, len(data), sha if store.listing_hashes else None, etag))


# -- basic operations ----------------------------------------------------------------------------


def test_put_then_head_and_list_report_size_and_sha256_or_etag(harness: Harness) -> None:
    store, _ = harness.fresh()
    data, sha = doc({"id": 1, "annotations": [{"result": []}]})
    head, listed = put(store, "1.json", data, sha)

    assert store.head("1.json") == head
    assert listing(store) == {"1.json": listed}
    assert store.head("2.json") is None


def test_listings_come_in_key_order(harness: Harness) -> None:
    """The audit merges a listing with the checkpoint, both in key order (by code point)."""
    store, _ = harness.fresh("ordered")
    data, sha = doc({})
    keys = ["b.json", "a/1.json", "a.json", "a-b/2.json", "a0.json", "Z.json", "é.json", "a/b/c.json", "aa.json"]
    for key in keys:
        store.put(key, data, sha)
    assert [info.key for info in store.list()] == sorted(keys)


def test_stored_bytes_are_exactly_the_document(harness: Harness) -> None:
    store, bucket = harness.fresh()
    data, sha = doc({"text": "ünïcödé ✓", "n": 3})
    store.put("7.json", data, sha)
    assert harness.service.read_object(bucket, "7.json") == data


def test_get_returns_what_put_stored(harness: Harness) -> None:
    store, _ = harness.fresh("got")
    data, sha = doc({"text": "ünïcödé ✓", "n": 3})
    store.put("3.json", data, sha)
    store.put("sub/4.json", b"", hashlib.sha256(b"").hexdigest())

    assert store.get("3.json") == data
    assert store.get("sub/4.json") == b""
    assert store.get("missing.json") is None
    assert store.get("sub/missing.json") is None
    assert store.get("sub") is None  # a folder is no object


def test_get_of_foreign_and_overwritten_objects(harness: Harness) -> None:
    store, bucket = harness.fresh()
    harness.service.put_foreign(bucket, "other.bin", b"\x89PNG\r\n\x1a\n\x00")
    assert store.get("other.bin") == b"\x89PNG\r\n\x1a\n\x00"
    new, new_sha = doc({"v": "newer"})
    store.put("other.bin", new, new_sha)
    assert store.get("other.bin") == new
    store.delete("other.bin")
    assert store.get("other.bin") is None


def test_overwrite_replaces_content_and_hash(harness: Harness) -> None:
    store, bucket = harness.fresh()
    old, old_sha = doc({"id": 5, "v": "old"})
    new, new_sha = doc({"id": 5, "v": "a newer, longer value"})
    first, _ = put(store, "5.json", old, old_sha)
    head, listed = put(store, "5.json", new, new_sha)

    assert store.head("5.json") == head
    assert listing(store) == {"5.json": listed}
    assert harness.service.read_object(bucket, "5.json") == new
    assert head.etag is None or head.etag != first.etag


def test_delete_removes_and_deleting_a_missing_key_is_no_error(harness: Harness) -> None:
    store, _ = harness.fresh()
    data, sha = doc({"id": 9})
    store.put("9.json", data, sha)
    store.put("10.json", data, sha)

    store.delete("9.json")
    assert store.head("9.json") is None
    assert set(listing(store)) == {"10.json"}

    store.delete("9.json")  # already gone
    store.delete("never-existed.json")
    assert set(listing(store)) == {"10.json"}


def test_list_under_a_sub_prefix(harness: Harness) -> None:
    store, _ = harness.fresh()
    data, sha = doc({})
    for key in ("a/1.json", "a/2.json", "ab/3.json", "b/4.json", "5.json"):
        store.put(key, data, sha)

    assert set(listing(store, "a/")) == {"a/1.json", "a/2.json"}
    assert set(listing(store, "a")) == {"a/1.json", "a/2.json", "ab/3.json"}
    assert set(listing(store)) == {"a/1.json", "a/2.json", "ab/3.json", "b/4.json", "5.json"}
    assert listing(store, "zzz/") == {}


def test_a_target_prefix_scopes_every_operation(harness: Harness) -> None:
    inner, bucket = harness.fresh("exports/project-7")
    outer = harness.open(*harness.service.target(bucket))
    outer.check_writable()
    data, sha = doc({"id": 1})
    inner.put("1.json", data, sha)
    inner.put("sub/2.json", data, sha)
    outer.put("outside.json", data, sha)
    outer.put("exports/project-70/1.json", data, sha)  # shares the prefix's characters, not its folder
    inner_head = inner.head("1.json")

    assert set(listing(inner)) == {"1.json", "sub/2.json"}
    assert set(listing(inner, "sub/")) == {"sub/2.json"}
    assert inner.head("outside.json") is None
    assert set(listing(outer)) == {"exports/project-7/1.json", "exports/project-7/sub/2.json", "outside.json",
                                   "exports/project-70/1.json"}
    assert outer.head("exports/project-7/1.json") == ObjectInfo("exports/project-7/1.json", len(data), sha,
                                                                inner_head.etag)
    inner.delete("1.json")
    assert outer.head("exports/project-7/1.json") is None
    assert outer.head("exports/project-70/1.json") is not None


def test_keys_with_unicode_spaces_and_punctuation(harness: Harness) -> None:
    store, bucket = harness.fresh("préfixe avec espace")
    keys = ["tâche/ünïcode ✓.json", "with space/a b.json", "日本語/タスク.json",
            "punct/it's (1) & [2] +=.json", "emoji/🙂.json"]
    for i, key in enumerate(keys):
        data, sha = doc({"id": i, "key": key})
        head, _ = put(store, key, data, sha)
        assert store.head(key) == head
        assert store.get(key) == data
    assert set(listing(store)) == set(keys)
    assert set(listing(store, "tâche/")) == {"tâche/ünïcode ✓.json"}
    for key in keys:
        store.delete(key)
    assert listing(store) == {}


def test_a_10_mb_document(harness: Harness) -> None:
    store, bucket = harness.fresh("big")
    data, sha = doc({"id": 42, "annotations": [{"result": [{"value": {"text": "x" * 1000}}] * 10_240}]})
    assert len(data) > 10 * 1024 * 1024
    head, _ = put(store, "42.json", data, sha)

    assert store.head("42.json") == head
    assert listing(store)["42.json"].size == len(data)
    assert store.get("42.json") == data
    assert hashlib.sha256(harness.service.read_object(bucket, "big/42.json")).hexdigest() == sha


MANY = 1050  # past one page of 1,000 keys on every service
_populated: dict[str, tuple[str, dict[str, ObjectInfo]]] = {}


def populated_bucket(harness: Harness) -> tuple[str, dict[str, ObjectInfo]]:
    """A bucket with MANY documents under "many/", written concurrently once per service and shared
    by the listing tests (they only read it)."""
    if (harness.service.endpoint or harness.service.name) not in _populated:
        store, bucket = harness.fresh("many", transfers=16)
        expected = {}

        def put_one(i: int) -> None:
            data, sha = doc({"id": i})
            expected[f"{i}.json"] = put(store, f"{i}.json", data, sha)[1]

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put_one, range(MANY)))
        _populated[harness.service.endpoint or harness.service.name] = (bucket, expected)
    return _populated[harness.service.endpoint or harness.service.name]


def test_list_pages_past_1000_keys(harness: Harness) -> None:
    bucket, expected = populated_bucket(harness)
    store = harness.open(*harness.service.target(bucket, "many"), transfers=16)
    assert listing(store) == expected
    assert set(listing(store, "10")) == {k for k in expected if k.startswith("10")}


def test_listing_is_lazy_and_paged(cloud: Harness, fault_proxy: Callable[[str], Any]) -> None:
    service = cloud.service
    bucket, expected = populated_bucket(cloud)
    proxy = fault_proxy(service.endpoint)
    store = cloud.open(*service.target(bucket, "many", endpoint=proxy.url), transfers=16)
    list_marker = {"s3": "list-type=2", "gcs": "/o?", "azure": "comp=list"}[service.name]
    page_size = {"s3": "max-keys=1000", "gcs": "maxResults=1000", "azure": "maxresults=1000"}[service.name]

    listed = store.list()
    assert proxy.count() == 0, "list() must not send a request before it is iterated"
    first = next(iter(listed))
    assert first == expected[first.key]
    assert proxy.count("GET", list_marker) == 1
    assert proxy.count("GET", page_size) == 1
    assert {first.key} | {info.key for info in listed} == set(expected)
    if service.name == "gcs":
        # gcp-storage-emulator answers every object in one page whatever maxResults says, so only real
        # GCS would show the second page request here.
        assert proxy.count("GET", list_marker) == 1
    else:
        assert proxy.count("GET", list_marker) == 2


def test_check_writable_passes_and_leaves_nothing_behind(harness: Harness) -> None:
    store, bucket = harness.fresh("checked")
    store.check_writable()
    assert listing(store) == {}
    assert harness.service.raw_keys(bucket) == []


def test_a_probe_left_by_a_crash_goes_with_the_next_check(cloud: Harness) -> None:
    store, bucket = cloud.fresh("crashed", check=False)
    cloud.service.put_foreign(bucket, "crashed/.syncd/write-check", b"{}")  # killed between its PUT and DELETE
    assert listing(store) == {}  # never taken for an object
    store.check_writable()
    assert cloud.service.raw_keys(bucket) == []


def test_missing_bucket_is_a_fatal_error_naming_it(harness: Harness) -> None:
    url, options, env = harness.service.missing_target()
    store = harness.open(url, options, env)
    name = bucket_of(url) if harness.service.name != "local" else url.rsplit("/", 2)[-2]
    with pytest.raises(StoreError) as err:
        store.check_writable()
    assert err.value.fatal and not err.value.retryable
    assert name in str(err.value)
    assert "\n" not in str(err.value)
    if harness.service.name != "local":
        with pytest.raises(StoreError) as err:
            store.put("1.json", *doc({}))
        assert err.value.fatal and name in str(err.value)
    if harness.service.name == "gcs":
        # gcp-storage-emulator answers a read in a missing bucket with a bare 404, as for a missing
        # object; real GCS says which (test_gcs_get_in_a_missing_bucket_is_fatal plays that answer).
        assert store.get("1.json") is None
    elif harness.service.name != "local":
        with pytest.raises(StoreError) as err:
            store.get("1.json")
        assert err.value.fatal and name in str(err.value)
    else:
        assert store.get("1.json") is None


def test_unknown_option_is_a_config_error_naming_it(harness: Harness) -> None:
    url, options, env = harness.service.fresh_target()
    apply_env(harness.monkeypatch, env)
    with pytest.raises(ConfigError, match="bucket_typo"):
        open_store(url, {**options, "bucket_typo": "x"})


# -- what the cloud stores keep with each object -----------------------------------------------


def test_objects_are_stored_as_json_with_their_sha256(cloud: Harness) -> None:
    store, bucket = cloud.fresh("meta")
    data, sha = doc({"id": 3})
    store.put("3.json", data, sha)
    content_type, metadata = cloud.service.object_properties(bucket, "meta/3.json")
    assert content_type == "application/json"
    assert metadata.get("sha256") == sha


def test_objects_written_by_others_have_no_sha256(cloud: Harness) -> None:
    store, bucket = cloud.fresh()
    data, sha = doc({"id": 8})
    store.put("8.json", data, sha)
    cloud.service.put_foreign(bucket, "other.json", b'{"x": 1}')
    head = store.head("other.json")
    assert (head.key, head.size, head.sha256) == ("other.json", 8, None)
    assert listing(store)["other.json"] == head


def test_connection_pool_is_sized_to_transfers(cloud: Harness, caplog: pytest.LogCaptureFixture) -> None:
    store, _ = cloud.fresh("pool", transfers=24)
    caplog.set_level(logging.WARNING, logger="urllib3")
    with ThreadPoolExecutor(24) as pool:
        list(pool.map(lambda i: store.put(f"{i}.json", *doc({"id": i})), range(240)))
    assert len(listing(store)) == 240
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]


# -- failures --------------------------------------------------------------------------------------

THROTTLE_CODE = {"s3": "SlowDown", "gcs": "rateLimitExceeded", "azure": "ServerBusy"}
SERVER_CODE = {"s3": "InternalError", "gcs": "backendError", "azure": "InternalError"}
DENIED_CODE = {"s3": "AccessDenied", "gcs": "forbidden", "azure": "AuthorizationPermissionMismatch"}
BAD_REQUEST_CODE = {"s3": "InvalidArgument", "gcs": "invalid", "azure": "InvalidHeaderValue"}


@pytest.mark.parametrize(
    ("status", "codes", "retry_after", "retryable", "fatal"),
    [
        (503, THROTTLE_CODE, "7", True, False),
        (429, THROTTLE_CODE, None, True, False),
        (500, SERVER_CODE, None, True, False),
        (403, DENIED_CODE, None, False, True),
        (400, BAD_REQUEST_CODE, None, False, False),
    ],
    ids=["503-retry-after", "429", "500", "403", "400"],
)
def test_http_errors_are_classified(cloud: Harness, fault_proxy: Callable[[str], Any], status: int,
                                    codes: dict[str, str], retry_after: str | None, retryable: bool,
                                    fatal: bool) -> None:
    proxy = fault_proxy(cloud.service.endpoint)
    store, bucket = cloud.fresh("faults", endpoint=proxy.url, max_attempts=1)
    proxy.clear()
    headers, body = cloud.service.error_answer(status, codes[cloud.service.name])
    if retry_after:
        headers["Retry-After"] = retry_after
    proxy.fail(status, headers=headers, body=body, times=10)
    lean = getattr(store, "_signed_put", None) is not None

    with pytest.raises(StoreError) as err:
        store.put("1.json", *doc({"id": 1}))
    assert (err.value.retryable, err.value.fatal) == (retryable, fatal)
    assert err.value.retry_after == (float(retry_after) if retry_after else None)
    message = str(err.value)
    assert bucket in message and "\n" not in message
    # S3's lean upload path hands a 400 to boto3 once (a store may refuse its checksum header).
    expected = 2 if lean and status == 400 else 1
    assert proxy.count("PUT") + proxy.count("POST") == expected, "max_attempts=1 must not retry in the SDK"


@pytest.mark.parametrize("method", ["head", "get"])
def test_read_errors_are_classified(cloud: Harness, fault_proxy: Callable[[str], Any], method: str) -> None:
    # HEAD answers carry no body, so the status alone must classify them; get must agree with head:
    # 403 is fatal, 500 retryable.
    proxy = fault_proxy(cloud.service.endpoint)
    store, bucket = cloud.fresh(endpoint=proxy.url, max_attempts=1)
    proxy.clear()
    headers, body = cloud.service.error_answer(403, DENIED_CODE[cloud.service.name])
    proxy.fail(403, headers=headers, body=body, times=10)
    with pytest.raises(StoreError) as err:
        getattr(store, method)("1.json")
    assert err.value.fatal and not err.value.retryable
    assert bucket in str(err.value) and "\n" not in str(err.value)

    proxy.clear()
    headers, body = cloud.service.error_answer(500, SERVER_CODE[cloud.service.name])
    proxy.fail(500, headers=headers, body=body, times=10)
    with pytest.raises(StoreError) as err:
        getattr(store, method)("1.json")
    assert err.value.retryable and not err.value.fatal
    assert bucket in str(err.value)


def test_unreachable_endpoint_is_retryable(cloud: Harness) -> None:
    store, bucket = cloud.fresh(endpoint=f"http://127.0.0.1:{free_port()}", max_attempts=1, check=False)
    with pytest.raises(StoreError) as err:
        store.put("1.json", *doc({"id": 1}))
    assert err.value.retryable and not err.value.fatal
    assert bucket in str(err.value)


def test_the_store_retries_throttling_by_itself(cloud: Harness, fault_proxy: Callable[[str], Any]) -> None:
    proxy = fault_proxy(cloud.service.endpoint)
    store, _ = cloud.fresh("retried", endpoint=proxy.url, max_attempts=3)
    proxy.clear()
    headers, body = cloud.service.error_answer(503, THROTTLE_CODE[cloud.service.name])
    proxy.fail(503, headers=headers, body=body, times=1)
    data, sha = doc({"id": 1})
    head, _ = put(store, "1.json", data, sha)  # the first try is throttled, the second passes

    assert store.head("1.json") == head
    assert proxy.count("PUT") + proxy.count("POST") == 2


# -- credentials -------------------------------------------------------------------------------------


def test_s3_wrong_credentials_are_fatal(request: pytest.FixtureRequest,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    service: S3Service = get_service(request, "s3")  # type: ignore[assignment]
    url, options, env = service.fresh_target()
    env.update(AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1", AWS_SECRET_ACCESS_KEY="not-the-secret-6f1c2a")
    apply_env(monkeypatch, env)
    store = open_store(url, options)
    with service.enforce_auth(), pytest.raises(StoreError) as err:
        store.check_writable()
    assert err.value.fatal and not err.value.retryable
    message = str(err.value)
    assert bucket_of(url) in message and "credentials" in message
    assert "not-the-secret-6f1c2a" not in message + repr(store)
    store.check_writable()  # the same store works again once the server accepts the credentials


def test_azure_wrong_account_key_is_fatal(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    service: AzureService = get_service(request, "azure")  # type: ignore[assignment]
    url, _, env = service.fresh_target()
    env["AZURE_STORAGE_CONNECTION_STRING"] = None
    apply_env(monkeypatch, env)
    wrong_key = "d3Jvbmcta2V5LW5vdC10aGUtcmVhbC1vbmUtMTIzNDU2Nzg5MA=="
    store = open_store(url, {"account_url": service.account_url, "account_key": wrong_key})
    with pytest.raises(StoreError) as err:
        store.check_writable()
    assert err.value.fatal and not err.value.retryable
    assert bucket_of(url) in str(err.value)
    assert wrong_key not in str(err.value) + repr(store)


def test_gcs_rejected_credentials_are_fatal(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                            fault_proxy: Callable[[str], Any]) -> None:
    # gcp-storage-emulator checks no credentials at all, so GCS's 401 answer is played by the proxy.
    service = get_service(request, "gcs")
    proxy = fault_proxy(service.endpoint)
    url, options, env = service.fresh_target(endpoint=proxy.url)
    apply_env(monkeypatch, env)
    store = open_store(url, {**options, "max_attempts": 1})
    headers, body = service.error_answer(401, "authError")
    proxy.fail(401, headers=headers, body=body, times=10)
    with pytest.raises(StoreError) as err:
        store.check_writable()
    assert err.value.fatal and not err.value.retryable
    assert bucket_of(url) in str(err.value) and "credentials" in str(err.value)


def test_gcs_get_in_a_missing_bucket_is_fatal(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                              fault_proxy: Callable[[str], Any]) -> None:
    service = get_service(request, "gcs")
    proxy = fault_proxy(service.endpoint)
    url, options, env = service.fresh_target(endpoint=proxy.url)
    apply_env(monkeypatch, env)
    store = open_store(url, {**options, "max_attempts": 1})
    body = {"error": {"code": 404, "message": "The specified bucket does not exist.",
                      "errors": [{"message": "The specified bucket does not exist.", "domain": "global",
                                  "reason": "notFound"}]}}
    proxy.fail(404, headers={"Content-Type": "application/json; charset=UTF-8"}, body=json.dumps(body).encode(),
               times=10)
    with pytest.raises(StoreError) as err:
        store.get("1.json")
    assert err.value.fatal and bucket_of(url) in str(err.value)
    proxy.clear()
    assert store.get("1.json") is None  # the bucket exists; the object does not


@pytest.mark.parametrize(("service_name", "lean"), [("s3", True), ("s3_boto3", False), ("s3_auth", True)])
def test_s3_uploads_take_the_path_the_variant_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                                    service_name: str, lean: bool) -> None:
    """The S3 variants of this suite really cover both upload paths: the lean signed PUT (learned
    from boto3's probe upload) and boto3's own put_object."""
    harness = Harness(get_service(request, service_name), monkeypatch)
    try:
        store, bucket = harness.fresh()
        assert (store._signed_put is not None) == lean
        data, sha = doc({"id": 1})
        store.put("1.json", data, sha)
        assert harness.service.read_object(bucket, "1.json") == data
        assert (store._signed_put is not None) == lean  # a good upload keeps the path
    finally:
        harness.close()


def test_a_wrong_signature_is_refused_by_the_authenticating_server(request: pytest.FixtureRequest,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The s3_auth variant checks signatures: the same upload signed with a wrong secret fails, as
    fatal (it would fail for every object)."""
    service: S3Service = get_service(request, "s3_auth")  # type: ignore[assignment]
    url, options, env = service.fresh_target()
    env["AWS_SECRET_ACCESS_KEY"] = "x" + service.secret_key[1:]
    apply_env(monkeypatch, env)
    store = open_store(url, {**options, "max_attempts": 1})
    try:
        with pytest.raises(StoreError) as err:
            store.check_writable()
        assert err.value.fatal and "credentials" in str(err.value)
    finally:
        store.close()


def test_retry_after_is_honoured_on_every_call(cloud: Harness, fault_proxy: Callable[[str], Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A throttled PUT, HEAD, GET, DELETE or listing is tried again no earlier than the server's
    Retry-After asked (and at most max_attempts times in all)."""
    from syncd import retry

    waits: list[float] = []
    monkeypatch.setattr(retry, "sleep", waits.append)
    proxy = fault_proxy(cloud.service.endpoint)
    store, _ = cloud.fresh("after", endpoint=proxy.url, max_attempts=2)
    data, sha = doc({"id": 1})
    headers, body = cloud.service.error_answer(503, THROTTLE_CODE[cloud.service.name])
    calls = {"put": lambda: store.put("1.json", data, sha), "head": lambda: store.head("1.json"),
             "get": lambda: store.get("1.json"), "list": lambda: list(store.list()),
             "delete": lambda: store.delete("1.json")}
    for name, call in calls.items():
        proxy.clear()
        waits.clear()
        proxy.fail(503, headers={**headers, "Retry-After": "7"}, body=body, times=1)
        call()
        assert waits and min(waits) >= 7, f"{name} retried after {waits}"
        assert len(proxy.requests) == 2, f"{name}: {proxy.requests}"
