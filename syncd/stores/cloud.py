"""What the cloud adapters share: ``CloudStore`` (one bucket or container and a key prefix, an SDK
client per process, the write probe), target URLs, option checks and error text."""

from __future__ import annotations

import email.utils
import hashlib
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from syncd.errors import ConfigError, StoreError
from syncd.stores.base import DEFAULT_MAX_ATTEMPTS, RetryingStore

# check_writable writes and removes this object: always the same key, so one a crash left between
# the write and the delete is replaced and removed by the next check. Listings skip it (and the
# per-run probes, ".syncd-write-check-<uuid>", of syncd before 0.2).
PROBE_KEY = ".syncd/write-check"
LEGACY_PROBE = ".syncd-write-check-"
PROBE_DATA = b"{}"
PROBE_SHA256 = hashlib.sha256(PROBE_DATA).hexdigest()


def split_url(url: str, scheme: str, noun: str = "bucket") -> tuple[str, str]:
    """``scheme://bucket/some/prefix`` -> (bucket, 'some/prefix/'); the prefix is '' or ends with '/'."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    bucket, _, prefix = rest.partition("/")
    if not bucket or any(c in bucket for c in "?#@ "):
        upper = noun.upper()
        raise ConfigError(f"target {url!r}: name the {noun}, as {scheme}://{upper} or {scheme}://{upper}/PREFIX")
    prefix = prefix.strip("/")
    if "//" in prefix:
        raise ConfigError(f"target {url!r}: the prefix has an empty path segment ('//')")
    return bucket, prefix + "/" if prefix else ""


def max_attempts(url: str, backend: str, value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_ATTEMPTS
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 20:
        raise ConfigError(f"target {url!r}: {backend} option 'max_attempts' must be a whole number "
                          f"from 1 to 20 (got {value!r})")
    return value


def is_object_key(key: str) -> bool:
    # Folder placeholders ("dir/") made by consoles and tools, and leftovers of check_writable, are no objects.
    return bool(key) and not key.endswith("/") and key != PROBE_KEY \
        and not key.rsplit("/", 1)[-1].startswith(LEGACY_PROBE)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def one_line(text: str) -> str:
    return " ".join(text.split())


def probe_round_trip(store: Any, put: Callable[[str], None], unreturned: str) -> None:
    """``check_writable`` of a cloud store: write, read back, list and delete a small probe
    object, so each permission a run needs is tried once before it starts (the probe is filtered
    out of listings, so the list only checks the permission). ``unreturned``: the fatal message
    when the store accepts the probe but does not return it."""
    for attempt in (1, 2):
        put(PROBE_KEY)
        try:
            info = store.head(PROBE_KEY)
            if info is not None and info.size == len(PROBE_DATA):
                next(iter(store.list(PROBE_KEY)), None)
                return
        finally:
            store.delete(PROBE_KEY)
        if attempt == 1:  # another syncd checking the same target may have removed it: once more
            time.sleep(random.uniform(0.1, 0.5))
    raise StoreError(unreturned.format(where=store._where(PROBE_KEY)), fatal=True)


class PerProcess:
    """A client made on first use, and made again in a forked child: SDK clients and their
    connection pools are not fork-safe (fsspec's lesson)."""

    def __init__(self, make: Callable[[], Any]):
        self._make = make
        self._lock = threading.Lock()
        self._client: Any = None
        self._pid = 0

    def get(self) -> Any:
        pid = os.getpid()
        client = self._client
        if client is not None and self._pid == pid:
            return client
        with self._lock:
            if self._client is None or self._pid != pid:
                self._client = self._make()
                self._pid = pid
            return self._client

    @property
    def current(self) -> Any:
        """The client if one was made (in any process), without making one."""
        return self._client

    def take(self) -> Any:
        """Forget the client and return it (to close it), or None."""
        with self._lock:
            client, self._client = self._client, None
            return client


class CloudStore(RetryingStore):
    """One bucket (an Azure container) and key prefix. A subclass names its ``scheme``, ``service``
    and ``noun``, makes its SDK client in ``_make_client`` and calls ``_target`` first."""

    scheme = ""  # of its URLs: s3, gs, azure
    service = ""  # for messages: S3, GCS, Azure
    noun = "bucket"
    probe_hint = "check the endpoint and the bucket's settings"  # when the probe object is not returned

    def _target(self, bucket: str, prefix: str, max_attempts: int, transfers: int) -> None:
        self.url = f"{self.scheme}://{bucket}/{prefix}".rstrip("/")  # canonical: checkpoints are keyed by it
        self.bucket = bucket
        self.prefix = prefix
        self.transfers = max(1, transfers)
        self._max_attempts = max_attempts
        self._clients = PerProcess(self._make_client)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def _where(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}{key}"

    def _client(self) -> Any:
        return self._clients.get()

    def _make_client(self) -> Any:
        raise NotImplementedError

    def _probe_put(self, key: str) -> None:
        self.put(key, PROBE_DATA, PROBE_SHA256)

    def check_writable(self) -> None:
        probe_round_trip(self, self._probe_put, f"{self.service} {self.noun} {self.bucket!r} accepted a test object "
                         f"at {{where}} but does not return it; {self.probe_hint}")

    def close(self) -> None:
        client = self._clients.take()
        if client is not None:
            client.close()
