"""Target URLs, backend options and credential sources of the cloud adapters.

The option checks need no server; the credential sources are tried against the test servers of
tests/servers.py (skipped, or failed under SYNCD_REQUIRE_SERVICES=1, when one is not available).
"""

from __future__ import annotations

import hashlib
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from syncd.errors import ConfigError, StoreError
from syncd.stores import ObjectInfo, open_store
from tests.servers import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AzureService,
    GCSService,
    S3Service,
    apply_env,
    azure_service_fixture,  # noqa: F401  (pytest fixtures, registered under their own names)
    free_port,
    gcs_service_fixture,  # noqa: F401
    s3_service_fixture,  # noqa: F401
)

DATA = b'{"id": 1}'
SHA = hashlib.sha256(DATA).hexdigest()


def roundtrip(store: Any) -> None:
    store.check_writable()
    etag = store.put("1.json", DATA, SHA)
    assert store.head("1.json") == ObjectInfo("1.json", len(DATA), SHA, etag)
    assert [info.key for info in store.list()] == ["1.json"]


# -- options checked before any request ------------------------------------------------------------


@pytest.fixture
def no_cloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                 "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")


@pytest.mark.usefixtures("no_cloud_env")
@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("s3://", {}, "name the bucket"),
        ("s3:///prefix", {}, "name the bucket"),
        ("gs://", {}, "name the bucket"),
        ("azure://", {"account_url": "https://acct.blob.core.windows.net"}, "name the container"),
        ("s3://bucket/a//b", {}, "empty path segment"),
        ("s3://bucket", {"endpoint": "http://x"}, "'endpoint'"),
        ("s3://bucket", {"addressing_style": "dns"}, "addressing_style"),
        ("s3://bucket", {"sse": "aes256"}, "AES256 or aws:kms"),
        ("s3://bucket", {"kms_key_id": "alias/k"}, "needs sse: aws:kms"),
        ("s3://bucket", {"endpoint_url": "minio:9000"}, "http:// or https://"),
        ("s3://bucket", {"region": 5}, "'region' must be a string"),
        ("s3://bucket", {"max_attempts": 0}, "max_attempts"),
        ("s3://bucket", {"max_attempts": True}, "max_attempts"),
        ("s3://bucket", {"profile": "no-such-profile"}, "no-such-profile"),
        ("gs://bucket", {"projet": "p"}, "'projet'"),
        ("gs://bucket", {"project": 12}, "'project' must be a string"),
        ("gs://bucket", {"max_attempts": "many"}, "max_attempts"),
        ("azure://c", {"account_name": "x"}, "'account_name'"),
        ("azure://c", {}, "AZURE_STORAGE_CONNECTION_STRING"),
        ("azure://c", {"sas_token": "sv=x"}, "need 'account_url'"),
        ("azure://c", {"connection_string": "x", "account_url": "https://a.blob.core.windows.net"},
         "'connection_string' alone"),
        ("azure://c", {"account_url": "https://a.blob.core.windows.net", "sas_token": "a",
                       "account_key": "b"}, "not both"),
        ("azure://c", {"account_url": "a.blob.core.windows.net"}, "must look like https://"),
        ("azure://c", {"account_url": "http://a.blob.core.windows.net"}, "needs an https:// account_url"),
    ],
)
def test_bad_targets_and_options_are_config_errors(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_store(url, options)
    assert message in str(err.value)


@pytest.mark.usefixtures("no_cloud_env")
@pytest.mark.parametrize(
    ("options", "secret"),
    [
        ({"connection_string": "AccountName=x;AccountKey=c2VjcmV0LXZhbHVlLTk5;Garbage"},
         "c2VjcmV0LXZhbHVlLTk5"),
        ({"account_url": "https://acct.blob.core.windows.net?sv=2024&sig=c2lnbmF0dXJlLTk5"},
         "c2lnbmF0dXJlLTk5"),
    ],
)
def test_config_errors_never_quote_a_credential(options: dict[str, str], secret: str) -> None:
    with pytest.raises(ConfigError) as err:
        open_store("azure://container", options)
    assert secret not in str(err.value)


@pytest.mark.usefixtures("no_cloud_env")
def test_repr_and_url_carry_no_credential() -> None:
    key = "c2VjcmV0LWtleS12YWx1ZS0xMjM0NTY3ODkwYWJjZGVm"
    store = open_store("az://container/prefix", {"account_url": "https://acct.blob.core.windows.net",
                                                  "account_key": key})
    assert key not in repr(store) and key not in store.url
    store = open_store("azure://container", {"account_url": "https://acct.blob.core.windows.net",
                                             "sas_token": "?sv=2024&sig=c2lnbmF0dXJl"})
    assert "c2lnbmF0dXJl" not in repr(store)


@pytest.mark.usefixtures("no_cloud_env")
@pytest.mark.parametrize(
    ("url", "options", "canonical"),
    [
        ("s3://bucket/exports/p1/", {}, "s3://bucket/exports/p1"),
        ("s3://bucket/", {}, "s3://bucket"),
        ("gs://bucket//exports/", {}, "gs://bucket/exports"),
        ("az://container/exports/", {"account_url": "https://acct.blob.core.windows.net"},
         "azure://container/exports"),
    ],
)
def test_store_url_is_canonical(url: str, options: dict[str, Any], canonical: str) -> None:
    # The checkpoint (and the default state file) is keyed by the store's url: one target, one url.
    assert open_store(url, options).url == canonical


# -- S3 ------------------------------------------------------------------------------------------


def test_s3_endpoint_from_aws_endpoint_url(s3_service: S3Service, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, env = s3_service.fresh_target("env-endpoint")
    apply_env(monkeypatch, {**env, "AWS_ENDPOINT_URL": s3_service.endpoint})
    roundtrip(open_store(url, {}))


def test_s3_path_addressing_and_region(s3_service: S3Service, monkeypatch: pytest.MonkeyPatch) -> None:
    url, options, env = s3_service.fresh_target()
    apply_env(monkeypatch, env)
    roundtrip(open_store(url, {**options, "addressing_style": "path", "region": "us-east-1"}))


def test_s3_credentials_from_a_named_profile(s3_service: S3Service, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    url, options, env = s3_service.fresh_target()
    config = tmp_path / "aws-config"
    config.write_text(textwrap.dedent("""\
        [profile labelstudio]
        aws_access_key_id = profilekey
        aws_secret_access_key = profilesecret
        region = us-east-1
    """))
    apply_env(monkeypatch, {**env, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                            "AWS_CONFIG_FILE": str(config)})
    store = open_store(url, {**options, "profile": "labelstudio"})
    roundtrip(store)
    credentials = store._client()._request_signer._credentials  # what boto3 signs with
    assert credentials.access_key == "profilekey"


def test_s3_no_credentials_is_fatal(s3_service: S3Service, monkeypatch: pytest.MonkeyPatch) -> None:
    url, options, env = s3_service.fresh_target()
    apply_env(monkeypatch, {**env, "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    with pytest.raises(StoreError) as err:
        open_store(url, options).check_writable()
    assert err.value.fatal and "no usable AWS credentials" in str(err.value)


def test_s3_encryption_and_storage_class_reach_the_object(s3_service: S3Service,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url, options, env = s3_service.fresh_target()
    apply_env(monkeypatch, env)
    bucket = url.split("://", 1)[1]
    store = open_store(url, {**options, "sse": "AES256", "storage_class": "STANDARD_IA"})
    roundtrip(store)
    head = s3_service.client().head_object(Bucket=bucket, Key="1.json")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["StorageClass"] == "STANDARD_IA"


def test_s3_kms_key_reaches_the_object(s3_service: S3Service, monkeypatch: pytest.MonkeyPatch) -> None:
    url, options, env = s3_service.fresh_target()
    apply_env(monkeypatch, env)
    bucket = url.split("://", 1)[1]
    store = open_store(url, {**options, "sse": "aws:kms", "kms_key_id": "alias/syncd-test"})
    store.put("1.json", DATA, SHA)
    head = s3_service.client().head_object(Bucket=bucket, Key="1.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert "alias/syncd-test" in head.get("SSEKMSKeyId", "")


# -- GCS -----------------------------------------------------------------------------------------


def test_gcs_project_option(gcs_service: GCSService, monkeypatch: pytest.MonkeyPatch) -> None:
    url, options, env = gcs_service.fresh_target("with-project")
    apply_env(monkeypatch, {**env, "GOOGLE_CLOUD_PROJECT": None})
    store = open_store(url, {**options, "project": "label-studio-test"})
    roundtrip(store)
    assert store._client().project == "label-studio-test"


def test_gcs_without_any_credentials_is_fatal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("google.cloud.storage")
    from google.auth.compute_engine import _metadata

    # No emulator, no key file, no gcloud login; and no look for a metadata server, which would
    # leave this machine: Application Default Credentials find nothing.
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(_metadata, "_NO_GCE_CHECK", True)
    store = open_store("gs://some-bucket/prefix", {})
    with pytest.raises(StoreError) as err:
        store.check_writable()
    assert err.value.fatal and "no Google credentials found" in str(err.value)
    assert "some-bucket" in str(err.value)


# -- Azure ---------------------------------------------------------------------------------------


def test_azure_connection_string_option(azure_service: AzureService, monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, env = azure_service.fresh_target("cs")
    connection_string = env.pop("AZURE_STORAGE_CONNECTION_STRING")
    apply_env(monkeypatch, {**env, "AZURE_STORAGE_CONNECTION_STRING": None})
    roundtrip(open_store(url, {"connection_string": connection_string}))


def test_azure_account_url_with_account_key_and_az_alias(azure_service: AzureService,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, env = azure_service.fresh_target("key")
    apply_env(monkeypatch, {**env, "AZURE_STORAGE_CONNECTION_STRING": None})
    store = open_store(url.replace("azure://", "az://"), {"account_url": azure_service.account_url,
                                                          "account_key": AZURITE_KEY})
    roundtrip(store)
    assert store.url == url  # az:// is an alias of azure://, and the same target


def _container_sas(container: str, **permissions: bool) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    return generate_container_sas(AZURITE_ACCOUNT, container, account_key=AZURITE_KEY,
                                  permission=ContainerSasPermissions(**permissions),
                                  expiry=datetime.now(timezone.utc) + timedelta(hours=1))


def test_azure_account_url_with_sas_token(azure_service: AzureService,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, env = azure_service.fresh_target()
    container = url.split("://", 1)[1]
    apply_env(monkeypatch, {**env, "AZURE_STORAGE_CONNECTION_STRING": None})
    sas = _container_sas(container, read=True, add=True, create=True, write=True, delete=True, list=True)
    roundtrip(open_store(url, {"account_url": azure_service.account_url, "sas_token": "?" + sas}))


def test_azure_read_only_sas_token_is_fatal(azure_service: AzureService,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, _, env = azure_service.fresh_target()
    container = url.split("://", 1)[1]
    apply_env(monkeypatch, {**env, "AZURE_STORAGE_CONNECTION_STRING": None})
    sas = _container_sas(container, read=True, list=True)
    store = open_store(url, {"account_url": azure_service.account_url, "sas_token": sas})
    with pytest.raises(StoreError) as err:
        store.check_writable()
    assert err.value.fatal and not err.value.retryable
    assert container in str(err.value) and "access denied" in str(err.value)
    assert sas not in str(err.value) and sas.split("sig=")[-1] not in str(err.value)
