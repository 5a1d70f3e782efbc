"""Storage adapters, selected by URL scheme.

Each backend lives in its own module and registers an opener here by scheme; cloud SDKs are
imported only when their scheme is used, so a local-only install needs none of them.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

from syncd.errors import ConfigError
from syncd.stores.base import ObjectInfo, Store

# scheme -> (module, class name, pip extra that provides the SDK)
_BACKENDS: dict[str, tuple[str, str, str | None]] = {
    "file": ("syncd.stores.local", "LocalStore", None),
    "s3": ("syncd.stores.s3", "S3Store", "s3"),
    "gs": ("syncd.stores.gcs", "GCSStore", "gcs"),
    "azure": ("syncd.stores.azure", "AzureStore", "azure"),
    "az": ("syncd.stores.azure", "AzureStore", "azure"),
}


def scheme_of(url: str) -> str:
    """The URL scheme of a target; a plain path is a local directory."""
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def public_url(url: str | None) -> str:
    """A target URL as it may be shown (status page, notifications): no password, no query
    (an Azure SAS token)."""
    if not url:
        return ""
    from syncd.sources.labelstudio.database import mask_url

    return mask_url(url.split("?", 1)[0])


def open_store(url: str, options: Mapping[str, Any] | None = None, *, transfers: int = 8,
               stop: threading.Event | None = None) -> Store:
    """Open the storage adapter for ``url`` with backend ``options`` from the config.

    ``transfers`` is how many puts/deletes the caller runs at once; adapters size their HTTP
    connection pools to it. ``stop``, once set, ends every wait for a retry."""
    scheme = scheme_of(url)
    if scheme not in _BACKENDS:
        known = ", ".join(f"{s}://" for s in _BACKENDS)
        raise ConfigError(f"target {url!r}: unknown URL scheme {scheme}://; use one of {known} "
                          "or a plain directory path")
    module_name, class_name, extra = _BACKENDS[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f"pip install 'labelstudio-syncd[{extra}]'" if extra else "reinstall labelstudio-syncd"
        raise ConfigError(f"target {url!r} needs a package that is not installed ({exc.name}); "
                          f"run: {hint}") from None
    opener: Callable[..., Store] = getattr(module, class_name).from_url
    store = opener(url, dict(options or {}), transfers=transfers)
    store.stop = stop
    return store


def backends() -> dict[str, type]:
    """Every registered adapter class by scheme (imports each SDK: for tests and docs)."""
    return {scheme: getattr(importlib.import_module(module), name)
            for scheme, (module, name, _) in _BACKENDS.items()}


__all__ = ["ObjectInfo", "Store", "backends", "open_store", "scheme_of"]
