"""Reading single objects named by cloud URIs (``s3://bucket/key``, ``gs://...``, Label Studio's
``azure-blob://container/key``) through the storage adapters: what ``syncd convert
--download-images`` gives the converters to fetch cloud images with.

One store per bucket, opened on first use and reused. Stores are opened with no options: each
SDK finds its credentials and endpoint in the environment by its standard chain (AWS_*
variables, shared config files and roles; GOOGLE_APPLICATION_CREDENTIALS or ADC,
STORAGE_EMULATOR_HOST; AZURE_STORAGE_CONNECTION_STRING); a config's ``s3:``/``gcs:``/``azure:``
sections are not used. The SDKs are imported only when such a URI is read.
"""

from __future__ import annotations

import threading

from syncd.stores import open_store
from syncd.stores.base import Store

# Label Studio's cloud URI schemes -> syncd's store schemes
CLOUD_SCHEMES = {"s3": "s3", "gs": "gs", "azure-blob": "azure", "azure-spi": "azure", "azure": "azure"}


class CloudReader:
    """``reader(uri)`` -> the object's bytes; raises ``LookupError``/``ValueError`` or the
    store's ``SyncdError`` with a one-line reason."""

    def __init__(self, transfers: int = 8):
        self._transfers = transfers
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def __call__(self, uri: str) -> bytes:
        scheme, _, rest = uri.partition("://")
        store_scheme = CLOUD_SCHEMES.get(scheme.lower())
        if store_scheme is None:
            raise ValueError("not a cloud URI syncd can read (s3://, gs://, azure-blob://, azure-spi://, azure://)")
        bucket, _, key = rest.partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ValueError("a cloud URI names a bucket and an object: SCHEME://BUCKET/KEY")
        bucket_url = f"{store_scheme}://{bucket}"
        with self._lock:
            store = self._stores.get(bucket_url)
            if store is None:
                store = self._stores[bucket_url] = open_store(bucket_url, {}, transfers=self._transfers)
        data = store.get(key)
        if data is None:
            raise LookupError(f"no such object in {bucket_url}")
        return data

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
