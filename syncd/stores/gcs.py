"""Google Cloud Storage target: ``gs://bucket/prefix``.

A thin layer over google-cloud-storage. Credentials come only from Application Default
Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's application-default login, the metadata
server of GCE/GKE/Cloud Run); when ``STORAGE_EMULATOR_HOST`` is set the client talks to that
emulator with anonymous credentials and looks for no credentials at all.

Each object is written in one upload (atomic: the object appears when the upload completes) with
``Content-Type: application/json`` and the document's sha256 in the custom metadata ``sha256``,
which listings return, so ``list`` needs one request per page of 1,000 objects.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import google.auth
import google.auth.exceptions
import requests
import requests.adapters
from google.api_core import exceptions as api_exceptions
from google.auth.credentials import AnonymousCredentials
from google.auth.transport.requests import AuthorizedSession
from google.cloud import storage
from google.cloud.storage.retry import _should_retry  # the library's own rule: 408/429/5xx, network

from syncd.errors import ConfigError, StoreError
from syncd.stores.base import ObjectInfo
from syncd.stores.cloud import (
    DEFAULT_MAX_ATTEMPTS,
    CloudStore,
)
from syncd.stores.cloud import is_object_key as _is_object_key
from syncd.stores.cloud import max_attempts as _max_attempts
from syncd.stores.cloud import one_line as _one_line
from syncd.stores.cloud import retry_after as _retry_after
from syncd.stores.cloud import split_url as _split_url

OPTION_KEYS = ("project", "max_attempts")
PAGE_SIZE = 1000
TIMEOUT = (10, 60)  # connect, read (seconds)
SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class GCSStore(CloudStore):
    """One bucket and object-name prefix on Google Cloud Storage."""

    scheme, service = "gs", "GCS"
    probe_hint = "check STORAGE_EMULATOR_HOST and the bucket's settings"
    listing_hashes = True  # listings carry the custom metadata

    @property
    def identity(self) -> str:
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
        return f"{self.url}?endpoint={endpoint}" + (f"&project={self._project}" if self._project else "")

    def __init__(self, url: str, bucket: str, prefix: str, *, project: str | None = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS, transfers: int = 8):
        self._project = project
        self._target(bucket, prefix, max_attempts, transfers)

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any], *, transfers: int = 8) -> GCSStore:
        bucket, prefix = _split_url(url, "gs")
        unknown = sorted(set(options) - set(OPTION_KEYS))
        if unknown:
            raise ConfigError(f"target {url!r}: unknown gcs option {unknown[0]!r}; "
                              f"the gcs options are {', '.join(OPTION_KEYS)}")
        project = options.get("project") or None
        if project is not None and not isinstance(project, str):
            raise ConfigError(f"target {url!r}: gcs option 'project' must be a string")
        return cls(url, bucket, prefix, project=project,
                   max_attempts=_max_attempts(url, "gcs", options.get("max_attempts")), transfers=transfers)

    # -- the client: made on first use (finding credentials may ask the metadata server), and made
    #    again in a forked child --------------------------------------------------------------------

    def _make_client(self) -> storage.Client:
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(self.transfers, 10))
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            credentials: Any = AnonymousCredentials()
            session: requests.Session = requests.Session()
            project = self._project or os.environ.get("GOOGLE_CLOUD_PROJECT") or "test"
        else:
            credentials, adc_project = google.auth.default(scopes=SCOPES)
            session = AuthorizedSession(credentials)
            project = self._project or adc_project
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        client = storage.Client(project=project, credentials=credentials, _http=session)
        # The library looks up each bucket's metadata in a background thread only to label tracing
        # spans; syncd makes no request it did not ask for and keeps no cache of remote state.
        if getattr(client, "_bucket_metadata_cache", None) is not None:
            client._bucket_metadata_cache = None
        return client

    # -- the Store interface: every request once, with the library's own retries off (retry=None),
    #    retried by RetryingStore.call -------------------------------------------------------------------

    def _bucket(self) -> storage.Bucket:
        return self._client().bucket(self.bucket)

    def put(self, key: str, data: bytes, sha256: str) -> None:
        def request() -> None:  # (listings carry the sha256: no etag to return)
            blob = self._bucket().blob(self.prefix + key)
            blob.metadata = {"sha256": sha256}
            blob.upload_from_string(data, content_type="application/json", timeout=TIMEOUT, retry=None)

        self.call("write", key, request)

    def delete(self, key: str) -> None:
        def request() -> None:
            try:
                self._bucket().delete_blob(self.prefix + key, timeout=TIMEOUT, retry=None)
            except api_exceptions.NotFound as exc:
                if _is_missing_bucket(exc):
                    raise

        self.call("delete", key, request)

    def head(self, key: str) -> ObjectInfo | None:
        blob = self.call("read", key, lambda: self._bucket().get_blob(self.prefix + key, timeout=TIMEOUT, retry=None))
        return None if blob is None else self._info(key, blob)

    def get(self, key: str) -> bytes | None:
        def request() -> bytes | None:
            try:
                return self._bucket().blob(self.prefix + key).download_as_bytes(timeout=TIMEOUT, retry=None)
            except api_exceptions.NotFound as exc:
                if _is_missing_bucket(exc):
                    raise
                return None

        return self.call("read", key, request)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        token: str | None = None
        while True:
            def page(token: str | None = token) -> tuple[list[Any], str | None]:
                blobs = self._client().list_blobs(self.bucket, prefix=self.prefix + prefix, page_size=PAGE_SIZE,
                                                  page_token=token, timeout=TIMEOUT, retry=None,
                                                  fields="items(name,size,metadata),nextPageToken")
                items = list(next(blobs.pages, ()))  # one request
                return items, blobs.next_page_token

            items, token = self.call("list", prefix, page, listing=True)
            for blob in items:
                key = blob.name[len(self.prefix):]
                if _is_object_key(key):
                    yield self._info(key, blob)
            if not token:
                return

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _info(key: str, blob: Any) -> ObjectInfo:
        sha = str((blob.metadata or {}).get("sha256", "")).lower()
        return ObjectInfo(key=key, size=int(blob.size or 0), sha256=sha if _SHA256.fullmatch(sha) else None)

    def _error(self, action: str, key: str, exc: Exception, *, listing: bool = False) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        what = f"cannot {action} {self._where(key)}{'*' if listing else ''}"
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        at = f" at {emulator}" if emulator else ""
        if isinstance(exc, api_exceptions.GoogleAPICallError):
            status = exc.code
            message = _one_line(str(exc.message or ""))[:200]
            reason = f"HTTP {status}" + (f": {message}" if message else "")
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or {}
            retry_after = _retry_after(headers.get("Retry-After"))
            if status == 404 and (action in ("write", "list") or _is_missing_bucket(exc)):
                return StoreError(f"GCS bucket {self.bucket!r} does not exist{at}; create it or fix the "
                                  f"target URL {self.url}", fatal=True)
            if status == 401:
                return StoreError(f"{what}: Google Cloud Storage rejected the credentials ({reason}); check "
                                  "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default "
                                  "login`", fatal=True)
            if status == 403:
                return StoreError(f"{what}: access denied ({reason}); grant the service account "
                                  f"roles/storage.objectAdmin (objects create, get, list, delete) on bucket "
                                  f"{self.bucket!r}", fatal=True)
            if status == 429:
                return StoreError(f"{what}: throttled, {reason}; if it persists, lower 'transfers'", retryable=True,
                                  retry_after=retry_after)
            if status is not None and (status >= 500 or status == 408):
                return StoreError(f"{what}: server error, {reason}", retryable=True,
                                  retry_after=retry_after)
            return StoreError(f"{what}: {reason}")
        if isinstance(exc, google.auth.exceptions.DefaultCredentialsError):
            return StoreError(f"{what}: no Google credentials found; set GOOGLE_APPLICATION_CREDENTIALS to a "
                              "service-account key file, run `gcloud auth application-default login`, or run "
                              "with a service account on GCP", fatal=True)
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return StoreError(f"{what}: the Google credentials were rejected ({_one_line(str(exc))[:120]}); "
                              "check GOOGLE_APPLICATION_CREDENTIALS or the service account", fatal=True)
        if isinstance(exc, google.auth.exceptions.TransportError) or _should_retry(exc):
            return StoreError(f"{what}: network error{at}: {type(exc).__name__}; check the "
                              "network if it persists", retryable=True)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int) and (status >= 500 or status in (408, 429)):
            return StoreError(f"{what}: HTTP {status}", retryable=True,
                              retry_after=_retry_after(exc.response.headers.get("Retry-After")))  # type: ignore
        if type(exc).__name__ == "DataCorruption":
            return StoreError(f"{what}: the upload arrived corrupted (checksum mismatch)",
                              retryable=True)
        if isinstance(exc, ConfigError):
            return StoreError(str(exc), fatal=True)
        return StoreError(f"{what}: {type(exc).__name__}: {_one_line(str(exc))[:200]}")


def _is_missing_bucket(exc: Exception) -> bool:
    # GCS answers 404 both for a missing object ("No such object: BUCKET/NAME") and a missing
    # bucket; only the message tells them apart.
    return "specified bucket does not exist" in str(getattr(exc, "message", "") or "").lower()
