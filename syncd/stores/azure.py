"""Azure Blob Storage target: ``azure://container/prefix`` (or ``az://container/prefix``).

A thin layer over azure-storage-blob. The storage account and credentials come from one of:
  - the option ``connection_string``, else the environment's ``AZURE_STORAGE_CONNECTION_STRING``;
  - the option ``account_url`` (https://ACCOUNT.blob.core.windows.net) with ``sas_token``, or with
    ``account_key``, or with neither: then azure-identity's DefaultAzureCredential (environment,
    workload/managed identity, Azure CLI login, ...).
No credential is ever put in a message, a log line or a repr.

Each object is one Put Blob (atomic) with ``Content-Type: application/json`` and the document's
sha256 in the blob metadata ``sha256``, which listings return, so ``list`` needs one request per
page of 1,000 blobs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import requests
import requests.adapters
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings, ExponentialRetry
from urllib3.util.retry import Retry as Urllib3Retry

from syncd.errors import ConfigError, StoreError
from syncd.stores.base import ObjectInfo
from syncd.stores.cloud import (
    DEFAULT_MAX_ATTEMPTS,
    CloudStore,
)
from syncd.stores.cloud import is_object_key as _is_object_key
from syncd.stores.cloud import max_attempts as _max_attempts
from syncd.stores.cloud import retry_after as _retry_after
from syncd.stores.cloud import split_url as _split_url

OPTION_KEYS = ("connection_string", "account_url", "sas_token", "account_key", "max_attempts")
CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
PAGE_SIZE = 1000
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BAD_CREDENTIALS = {"AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation"}
_DENIED = {"AuthorizationFailure", "AuthorizationPermissionMismatch", "AuthorizationSourceIPMismatch",
           "AuthorizationProtocolMismatch", "AuthorizationResourceTypeMismatch",
           "AuthorizationServiceMismatch", "InsufficientAccountPermissions", "AccountIsDisabled",
           "KeyBasedAuthenticationNotPermitted"}
_NO_CONTAINER = {"ContainerNotFound", "ContainerBeingDeleted", "ContainerDisabled"}

# azure-core logs every request's headers at INFO; keep a daemon's log to what syncd itself says.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


class AzureStore(CloudStore):
    """One container and blob-name prefix in an Azure storage account."""

    scheme, service, noun = "azure", "Azure", "container"
    probe_hint = "check the account"
    listing_hashes = True  # listings carry the metadata

    @property
    def identity(self) -> str:
        client = self._client()
        return f"{self.url}?account={client.scheme}://{client.primary_hostname}"

    def __init__(self, url: str, container: str, prefix: str, *, connection_string: str | None = None,
                 account_url: str | None = None, credential: Any = None, use_default_credential: bool = False,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, transfers: int = 8):
        self._connection_string = connection_string
        self._account_url = account_url
        self._credential = credential
        self._use_default_credential = use_default_credential
        self._target(container, prefix, max_attempts, transfers)
        self._client()  # a malformed connection string or URL shows now, as a ConfigError; no request

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any], *, transfers: int = 8) -> AzureStore:
        container, prefix = _split_url(url, url.split("://", 1)[0].lower() if "://" in url else "azure", "container")
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(f"target {url!r}: unknown azure option {unknown[0]!r}; "
                              f"the azure options are {', '.join(OPTION_KEYS)}")
        opts = {k: v for k, v in options.items() if v is not None and v != ""}
        for key in ("connection_string", "account_url", "sas_token", "account_key"):
            if key in opts and not isinstance(opts[key], str):
                raise ConfigError(f"target {url!r}: azure option {key!r} must be a string")
        max_attempts = _max_attempts(url, "azure", opts.get("max_attempts"))
        common = {"max_attempts": max_attempts, "transfers": transfers}
        if "connection_string" in opts:
            if set(opts) & {"account_url", "sas_token", "account_key"}:
                raise ConfigError(f"target {url!r}: give the azure option 'connection_string' alone, or "
                                  "'account_url' with 'sas_token', 'account_key' or neither")
            return cls(url, container, prefix, connection_string=opts["connection_string"], **common)
        if "account_url" not in opts:
            if set(opts) & {"sas_token", "account_key"}:
                raise ConfigError(f"target {url!r}: the azure options 'sas_token' and 'account_key' need "
                                  "'account_url' (https://ACCOUNT.blob.core.windows.net)")
            env = os.environ.get(CONNECTION_STRING_ENV)
            if not env:
                raise ConfigError(f"target {url!r}: no Azure storage account given; set "
                                  f"{CONNECTION_STRING_ENV}, or the azure option 'account_url' (signing in "
                                  "with DefaultAzureCredential, 'sas_token' or 'account_key')")
            return cls(url, container, prefix, connection_string=env, **common)
        account_url = opts["account_url"].rstrip("/")
        parts = urlsplit(account_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"target {url!r}: the azure option 'account_url' must look like "
                              "https://ACCOUNT.blob.core.windows.net")
        if parts.query or "@" in parts.netloc:
            raise ConfigError(f"target {url!r}: put no credential in the azure option 'account_url'; "
                              "give it as 'sas_token' or 'account_key'")
        if "sas_token" in opts and "account_key" in opts:
            raise ConfigError(f"target {url!r}: give the azure option 'sas_token' or 'account_key', not both")
        if "sas_token" in opts:
            return cls(url, container, prefix, account_url=account_url,
                       credential=opts["sas_token"].lstrip("?"), **common)
        if "account_key" in opts:
            return cls(url, container, prefix, account_url=account_url, credential=opts["account_key"],
                       **common)
        if parts.scheme != "https":
            raise ConfigError(f"target {url!r}: signing in to Azure with 'account_url' alone "
                              "(DefaultAzureCredential) needs an https:// account_url")
        return cls(url, container, prefix, account_url=account_url, use_default_credential=True, **common)

    @property
    def container(self) -> str:
        return self.bucket

    # -- the client, made again in a forked child ------------------------------------------------------

    def _make_client(self) -> ContainerClient:
        session = requests.Session()
        # azure-core retries in its own pipeline; urllib3 must not retry underneath it.
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=max(self.transfers, 10),
            max_retries=Urllib3Retry(total=False, redirect=False, raise_on_status=False))
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        kwargs: dict[str, Any] = {
            "transport": RequestsTransport(session=session, session_owner=True, connection_timeout=10,
                                           read_timeout=60),
            "retry_policy": ExponentialRetry(retry_total=0),  # RetryingStore.call retries, once
            "max_single_put_size": 256 * 1024 * 1024,  # one Put Blob per document, never staged blocks
        }
        try:
            if self._connection_string is not None:
                service = BlobServiceClient.from_connection_string(self._connection_string, **kwargs)
            else:
                credential = self._credential
                if self._use_default_credential:
                    try:
                        from azure.identity import DefaultAzureCredential
                    except ImportError:
                        raise ConfigError(f"target {self.url!r}: signing in with 'account_url' alone "
                                          "needs azure-identity; run: pip install 'labelstudio-syncd[azure]'"
                                          ) from None
                    credential = DefaultAzureCredential()
                service = BlobServiceClient(self._account_url or "", credential=credential, **kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError, AzureError) as exc:
            source = ("connection string" if self._connection_string is not None
                      else "'account_url' or its key")
            # The SDK's own message may quote the connection string or key: name the problem only.
            raise ConfigError(f"target {self.url!r}: the Azure {source} is malformed "
                              f"({type(exc).__name__}); check it") from None
        return service.get_container_client(self.container)

    # -- the Store interface: every request once (the SDK's retry policy allows none), retried by
    #    RetryingStore.call ------------------------------------------------------------------------

    def put(self, key: str, data: bytes, sha256: str) -> None:  # (listings carry the sha256: no etag)
        self.call("write", key, lambda: self._client().upload_blob(
            self.prefix + key, data, overwrite=True, metadata={"sha256": sha256},
            content_settings=ContentSettings(content_type="application/json"), max_concurrency=1))

    def delete(self, key: str) -> None:
        self.call("delete", key, lambda: _unless_missing(lambda: self._client().delete_blob(self.prefix + key)))

    def head(self, key: str) -> ObjectInfo | None:
        props = self.call("read", key, lambda: _unless_missing(
            lambda: self._client().get_blob_client(self.prefix + key).get_blob_properties()))
        return None if props is None else _info(key, props)

    def get(self, key: str) -> bytes | None:
        return self.call("read", key, lambda: _unless_missing(
            lambda: self._client().download_blob(self.prefix + key, max_concurrency=1).readall()))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            def page(token: str | None = token) -> tuple[list[Any], str | None]:
                pages = self._client().list_blobs(name_starts_with=self.prefix + prefix, include=["metadata"],
                                                  results_per_page=PAGE_SIZE).by_page(continuation_token=token)
                items = list(next(pages, ()))  # one request
                return items, pages.continuation_token

            items, token = self.call("list", prefix, page, listing=True)
            for props in items:
                key = props.name[len(self.prefix):]
                metadata = props.metadata or {}
                if _is_object_key(key) and metadata.get("hdi_isfolder") != "true":  # ADLS Gen2 folders
                    yield _info(key, props)
            if not token:
                return

    # -- errors ----------------------------------------------------------------------------------

    def _account(self) -> str:
        client = self._clients.current
        name = getattr(client, "account_name", None) if client is not None else None
        return f" in storage account {name!r}" if name else ""

    def _error(self, action: str, key: str, exc: Exception, *, listing: bool = False) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        what = f"cannot {action} {self._where(key)}{'*' if listing else ''}"
        if isinstance(exc, HttpResponseError) and exc.status_code is not None:
            raw_code = exc.error_code
            code = str(getattr(raw_code, "value", raw_code)) if raw_code else None
            status = exc.status_code
            reason = f"{code or exc.reason or 'error'} (HTTP {status})"
            headers = getattr(exc.response, "headers", None) or {}
            retry_after = _retry_after(headers.get("Retry-After"))
            missing = status == 404 and action in ("write", "list") and code != "BlobNotFound"
            if code in _NO_CONTAINER or missing:
                return StoreError(f"Azure container {self.container!r} does not exist{self._account()}; "
                                  f"create it or fix the target URL {self.url}", fatal=True)
            if code in _BAD_CREDENTIALS or status == 401:
                return StoreError(f"{what}: Azure rejected the credentials ({reason}){self._account()}; "
                                  f"check the account key, SAS token or {CONNECTION_STRING_ENV}, and that "
                                  "the SAS token has not expired", fatal=True)
            if code in _DENIED or status == 403:
                return StoreError(f"{what}: access denied ({reason}){self._account()}; give the identity "
                                  "'Storage Blob Data Contributor' on the container, or a SAS token with "
                                  "read, add, create, write, delete and list permissions", fatal=True)
            if status in (429, 503) or code == "ServerBusy":
                return StoreError(f"{what}: throttled, {reason}; if it persists, lower 'transfers'", retryable=True,
                                  retry_after=retry_after)
            if status >= 500 or status == 408 or code == "OperationTimedOut":
                return StoreError(f"{what}: server error, {reason}", retryable=True,
                                  retry_after=retry_after)
            return StoreError(f"{what}: {reason}")
        if isinstance(exc, ClientAuthenticationError):
            # No HTTP answer: signing in failed before a request was sent (DefaultAzureCredential).
            return StoreError(f"{what}: could not sign in to Azure ({type(exc).__name__}); sign in "
                              "(az login, a managed or workload identity, AZURE_CLIENT_ID/AZURE_TENANT_ID/"
                              f"AZURE_CLIENT_SECRET), or set {CONNECTION_STRING_ENV} or a 'sas_token'",
                              fatal=True)
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, requests.exceptions.RequestException,
                            ConnectionError, TimeoutError)):
            return StoreError(f"{what}: network error{self._account()}: {type(exc).__name__}; "
                              "check the network and 'account_url' if it persists", retryable=True)
        if isinstance(exc, ConfigError):
            return StoreError(str(exc), fatal=True)
        return StoreError(f"{what}: {type(exc).__name__}")


def _unless_missing(request: Callable[[], Any]) -> Any:
    """The request's answer, or None when the blob does not exist (a missing container raises)."""
    try:
        return request()
    except ResourceNotFoundError as exc:
        if exc.error_code in _NO_CONTAINER:
            raise
        return None


def _info(key: str, props: Any) -> ObjectInfo:
    sha = str((props.metadata or {}).get("sha256", "")).lower()
    return ObjectInfo(key=key, size=int(props.size or 0), sha256=sha if _SHA256.fullmatch(sha) else None)
