"""The bundles index: one ``bundles.json`` per target listing every project/format's current bundle.

It lives at the root of the bundles' keys, the fixed start of ``bundles.key_template`` up to its
last ``/`` before the first field (``exports/bundles.json`` for the default template,
``bundles.json`` at the target's root for ``{project_id}/{format}``), so a pipeline finds every
bundle with one read and no listing.

Replicas publish different projects at the same time, and object stores have no transactions, so
nobody edits ``bundles.json`` in place. Each publish writes its own small entry,
``bundles.d/<project_id>-<FORMAT>.json`` (only that project's publisher writes it), and then
rebuilds ``bundles.json`` from a listing of ``bundles.d/``; then it lists again, and rebuilds once
more if an entry appeared or changed in between. So whichever rebuild is written last was made
from a listing taken after every entry written before it: no process's entry is lost to another's
read-modify-write. A rebuild that fails is repaired by the next publish of any project.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from syncd.keys import template_prefix
from syncd.stores.base import ObjectInfo, Store

if TYPE_CHECKING:
    from syncd.bundles.build import PublishedBundle

log = logging.getLogger("syncd")

INDEX_NAME = "bundles.json"
ENTRIES_DIR = "bundles.d"
MAX_REBUILDS = 5  # rounds of list-and-rebuild while other processes keep adding entries
ENTRY_FIELDS = ("project_id", "project_title", "format", "build_id", "created_at", "task_count",
                "key", "latest_key", "manifest_key")

# Entries already read, by (store identity, key): a rebuild reads only the entries whose listing
# changed, not every project's entry each time.
_read_cache: dict[tuple[str, str], tuple[tuple, dict[str, Any]]] = {}
_cache_lock = threading.Lock()


def index_root(key_template: str) -> str:
    """The folder of ``bundles.json``: '' (the target's root) or a prefix ending with '/'."""
    return template_prefix(key_template)


def index_key(key_template: str) -> str:
    return index_root(key_template) + INDEX_NAME


def entry_key(key_template: str, project_id: int, fmt: str) -> str:
    return f"{index_root(key_template)}{ENTRIES_DIR}/{project_id}-{fmt}.json"


def index_entry(bundle: PublishedBundle, project_title: str) -> dict[str, Any]:
    """What ``bundles.json`` says of one published bundle (keys are relative to the target)."""
    return {"project_id": bundle.project_id, "project_title": project_title, "format": bundle.format,
            "build_id": bundle.build_id, "created_at": bundle.created_at, "task_count": bundle.task_count,
            "key": f"{bundle.prefix}/{bundle.build_id}/", "latest_key": bundle.latest_key,
            "manifest_key": bundle.manifest_key}


def _json(doc: Any) -> tuple[bytes, str]:
    data = (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode()
    return data, hashlib.sha256(data).hexdigest()


def publish_entry(store: Store, key_template: str, entry: dict[str, Any]) -> None:
    """Write one bundle's entry, then rebuild ``bundles.json``. Raises ``StoreError``."""
    data, digest = _json(entry)
    store.put(entry_key(key_template, entry["project_id"], entry["format"]), data, digest)
    rebuild_index(store, key_template)


def rebuild_index(store: Store, key_template: str) -> bool:
    """Write ``bundles.json`` from the entries in ``bundles.d/``, again while they change under it.

    Returns False when other writers kept changing the entries for ``MAX_REBUILDS`` rounds (the
    last of them then rebuilds it after us). Raises ``StoreError``."""
    root = index_root(key_template)
    listed = _list_entries(store, root)
    for _ in range(MAX_REBUILDS):
        entries = sorted(_read_entries(store, listed.values()), key=lambda e: (e["project_id"], e["format"]))
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        data, digest = _json({"updated_at": stamp, "bundles": entries})
        store.put(root + INDEX_NAME, data, digest)
        again = _list_entries(store, root)
        if _fingerprints(again) == _fingerprints(listed):
            return True
        listed = again
    log.warning("%s%s: entries kept changing while it was rebuilt; the next publish rebuilds it", root, INDEX_NAME)
    return False


def _list_entries(store: Store, root: str) -> dict[str, ObjectInfo]:
    base = f"{root}{ENTRIES_DIR}/"
    return {info.key: info for info in store.list(base)
            if info.key.endswith(".json") and "/" not in info.key[len(base):]}


def _fingerprint(info: ObjectInfo) -> tuple:
    # A rewrite changes the sha256 (GCS, Azure listings) or the etag (S3's MD5, a local file's inode).
    return info.size, info.sha256, info.etag


def _fingerprints(listed: dict[str, ObjectInfo]) -> dict[str, tuple]:
    return {key: _fingerprint(info) for key, info in listed.items()}


def _read_entries(store: Store, infos: Any) -> list[dict[str, Any]]:
    entries = []
    for info in infos:
        cache_key = (store.identity, info.key)
        with _cache_lock:
            cached = _read_cache.get(cache_key)
        if cached is not None and cached[0] == _fingerprint(info):
            entries.append(cached[1])
            continue
        data = store.get(info.key)
        if data is None:
            continue  # removed since listed
        try:
            entry = json.loads(data)
            if not isinstance(entry, dict) or not all(name in entry for name in ENTRY_FIELDS):
                raise ValueError("not a bundle entry")
        except (ValueError, UnicodeDecodeError):
            log.warning("%s is not a bundle entry written by syncd; left out of %s", info.key, INDEX_NAME)
            continue
        entry = {name: entry[name] for name in ENTRY_FIELDS}
        with _cache_lock:
            _read_cache[cache_key] = (_fingerprint(info), entry)
        entries.append(entry)
    return entries


def indexed(store: Store, key_template: str) -> set[str]:
    """The keys of the entries in ``bundles.d/`` (one listing). Raises ``StoreError``."""
    return set(_list_entries(store, index_root(key_template)))
