"""The target is the truth: its marker, and the audit of the checkpoint against its listing.

The checkpoint is a cache of what the target holds (litestream's and rclone's rule). Two things
keep it honest:

- **The marker** ``.syncd/target.json`` (a random target id, nothing else) is written to the
  target the first time syncd writes there, and its id recorded in the checkpoint. When a run
  starts and the target's marker is missing or another (the bucket was emptied, replaced by a
  restored copy, or this is another server), the checkpoint is not trusted: it is rebuilt from
  the target's listing (``adopt``, as ``--verify-remote`` does), so what the target lacks is
  written again and nothing else.
- **The audit** compares the checkpoint with the listing, both in key order, at no more than a
  request per page of 1,000 objects: an object that is missing or differs (size, sha256 where
  the listing has it, else the etag recorded when it was written) is forgotten, so the pass that
  follows writes it again; objects in syncd's key space that it did not write are reported and
  left alone. Nothing the checkpoint does not own is ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from syncd import __version__
from syncd.checkpoint import Checkpoint, Entry
from syncd.keys import template_pattern, template_prefix
from syncd.stores.base import ObjectInfo, Store

log = logging.getLogger("syncd")

MARKER_KEY = ".syncd/target.json"
_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass
class AuditResult:
    checked: int = 0  # objects of the checkpoint compared with the listing
    missing: int = 0  # in the checkpoint, not in the target: written again
    differs: int = 0  # in both, but not what syncd wrote: written again
    foreign: int = 0  # in syncd's key space, not written by syncd: left alone
    first_foreign: str | None = None
    adopted: int = 0  # entries rebuilt from the listing (the checkpoint was not trusted)

    @property
    def mismatched(self) -> bool:
        return bool(self.missing or self.differs)

    def line(self, url: str) -> str:
        if self.adopted or not (self.mismatched or self.foreign):
            head = f"{self.adopted} objects found" if self.adopted else f"{self.checked} objects in place"
            return f"audit of {url}: {head}"
        parts = [f"{self.checked} objects checked", f"{self.missing} missing", f"{self.differs} differ"]
        if self.foreign:
            parts.append(f"{self.foreign} not written by syncd (left alone; first: {self.first_foreign})")
        return f"audit of {url}: " + ", ".join(parts) + ("; writing them again" if self.mismatched else "")


def md5_matches(etag: str | None, body: bytes) -> bool:
    """Whether an S3-style ETag is the MD5 of ``body`` (single-part uploads without SSE-KMS)."""
    return bool(etag) and _MD5.fullmatch(etag) is not None and hashlib.md5(body).hexdigest() == etag


# ------------------------------------------------------------------ the marker


def read_marker(store: Store) -> str | None:
    """The target id the target's marker holds, or None (no marker, or not one of syncd's)."""
    data = store.get(MARKER_KEY)
    try:
        value = json.loads(data) if data is not None else None
    except ValueError:
        return None
    target_id = value.get("target_id") if isinstance(value, dict) else None
    return target_id if isinstance(target_id, str) and target_id else None


def write_marker(store: Store, target_id: str) -> None:
    body = json.dumps({"target_id": target_id, "written_by": f"syncd {__version__}",
                       "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}).encode()
    store.put(MARKER_KEY, body, hashlib.sha256(body).hexdigest())


def trusted(store: Store, checkpoint: Checkpoint) -> tuple[bool, str | None]:
    """Whether the checkpoint may be trusted for this target, and the marker's id. When it may
    not, one line says why."""
    found = read_marker(store)
    recorded = checkpoint.target_id()
    if found is not None and found == recorded:
        return True, found
    if recorded is None:
        if checkpoint.count():
            log.info("target %s: the checkpoint has no record of this target's marker; reading what the "
                     "target holds", store.url)
    elif found is None:
        log.warning("target %s has lost its marker %s (it was emptied, replaced or is another server): "
                    "checking it against its listing and writing what it lacks", store.url, MARKER_KEY)
    else:
        log.warning("target %s holds another checkpoint's marker (a restored copy, or another server): "
                    "checking it against its listing and writing what it lacks", store.url)
    return False, found


def keep_marker(store: Store, checkpoint: Checkpoint, found: str | None) -> None:
    """Write the marker when the target has none, and record its id in the checkpoint."""
    target_id = found or uuid.uuid4().hex
    if found is None:
        write_marker(store, target_id)
    checkpoint.set_target_id(target_id)


# ------------------------------------------------------------------ listing vs checkpoint


def adopt(store: Store, checkpoint: Checkpoint, key_template: str, workers: int = 8) -> AuditResult:
    """Replace the checkpoint with what the target holds (``--verify-remote``, and a target
    whose marker does not match). Objects whose key the template could not have produced are
    not syncd's and are left alone. Where the listing has neither the sha256 nor an MD5 etag
    (a local directory), the sha256 is read with one HEAD per object, ``workers`` at a time."""
    pattern = template_pattern(key_template)
    checkpoint.forget_all()
    result = AuditResult()
    listed = (info for info in store.list(template_prefix(key_template)) if pattern.match(info.key))
    # What the target holds is recorded whoever holds the projects (no write is claimed here).
    fence = getattr(checkpoint, "fence", None)
    if fence is not None:
        checkpoint.fence = None
    try:
        _adopt(store, checkpoint, pattern, _with_hashes(store, listed, workers), result)
        checkpoint.flush()
    finally:
        if fence is not None:
            checkpoint.fence = fence
    return result


def _adopt(store: Store, checkpoint: Checkpoint, pattern: re.Pattern[str], infos: Iterable[ObjectInfo],
           result: AuditResult) -> None:
    for info in infos:
        match = pattern.match(info.key)
        project = match.groupdict().get("project_id")
        checkpoint.record_put(info.key, int(match["task_id"]), int(project) if project and project.isdigit() else None,
                              info.sha256 or "", info.size, etag=info.etag)
        result.adopted += 1


def _with_hashes(store: Store, infos: Iterable[ObjectInfo], workers: int) -> Iterator[ObjectInfo]:
    """``infos`` in order, each with its sha256 (from a HEAD when the listing has neither it nor
    an MD5 etag to compare documents with). A window of HEADs in flight: one slow answer delays
    only the objects after it, never a whole group."""
    window: deque[ObjectInfo | Future] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="syncd-head") as pool:
        for info in infos:
            needs = info.sha256 is None and not (info.etag and _MD5.fullmatch(info.etag))
            window.append(pool.submit(store.head, info.key) if needs else info)
            while len(window) > 4 * workers:
                yield from _ready(window.popleft())
        while window:
            yield from _ready(window.popleft())


def _ready(item: ObjectInfo | Future) -> Iterator[ObjectInfo]:
    info = item.result() if isinstance(item, Future) else item
    if info is not None:  # None: deleted since it was listed
        yield info


def audit(store: Store, checkpoint: Checkpoint, key_template: str) -> AuditResult:
    """Compare the checkpoint with the target's listing; forget what is missing or differs."""
    pattern = template_pattern(key_template)
    result = AuditResult()
    listed = (info for info in store.list(template_prefix(key_template)) if pattern.match(info.key))
    entries = checkpoint.entries_by_key()
    try:
        _merge(store, checkpoint, entries, _in_order(listed), result)
    except _Unordered:
        # A store that does not list in key order (none known): compare against a sorted copy.
        result = AuditResult()
        listed = sorted((info for info in store.list(template_prefix(key_template)) if pattern.match(info.key)),
                        key=lambda info: info.key)
        _merge(store, checkpoint, checkpoint.entries_by_key(), iter(listed), result)
    checkpoint.flush()
    return result


class _Unordered(Exception):
    pass


def _in_order(infos: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
    last = ""
    for info in infos:
        if info.key < last:
            raise _Unordered
        last = info.key
        yield info


def _merge(store: Store, checkpoint: Checkpoint, entries: Iterator[Entry], listed: Iterator[ObjectInfo],
           result: AuditResult) -> None:
    entry, info = next(entries, None), next(listed, None)
    while entry is not None or info is not None:
        if info is None or (entry is not None and entry.key < info.key):
            result.checked += 1
            result.missing += 1
            checkpoint.record_delete(entry.key)  # forgotten: the pass that follows writes it again
            entry = next(entries, None)
        elif entry is None or info.key < entry.key:
            result.foreign += 1
            result.first_foreign = result.first_foreign or info.key
            info = next(listed, None)
        else:
            result.checked += 1
            if _differs(store, checkpoint, entry, info):
                result.differs += 1
                checkpoint.record_delete(entry.key)
            entry, info = next(entries, None), next(listed, None)


def _differs(store: Store, checkpoint: Checkpoint, entry: Entry, info: ObjectInfo) -> bool:
    if info.size != entry.size:
        return True
    if info.sha256 and entry.sha256:
        return info.sha256 != entry.sha256
    if info.etag and entry.etag:
        return info.etag != entry.etag
    if info.etag and entry.sha256:
        # Written before etags were recorded: one HEAD tells, and its etag is kept for next time.
        head = store.head(entry.key)
        if head is None or head.sha256 != entry.sha256:
            return True
        checkpoint.record_put(entry.key, entry.task_id, entry.project_id, entry.sha256, entry.size,
                              entry.fingerprint, head.etag)
    return False
