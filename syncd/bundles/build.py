"""Building bundles: a project's labeled tasks converted to Label Studio export formats, published.

For each format listed under ``bundles:`` and each project it applies to, a build is written under

    {key_template}/{build_id}/<files>        e.g. exports/2/YOLO/20261125T104512Z-3f9a/labels/a.txt
    {key_template}/latest.json               the manifest of the current build, written last

so a reader who follows ``latest.json`` never sees a half-written bundle: the files of a build are
all uploaded before the manifest that names them, a build whose upload failed is never named
(``latest.json`` keeps pointing at the previous one), and builds beyond the newest ``keep`` are
removed only after the new manifest is in place (the build ``latest.json`` names is never
removed). Build ids are UTC timestamps plus a short random part, so they sort by time.

Once ``latest.json`` names the new build, two stable copies follow it, for readers that only copy
a fixed path (``aws s3 cp``, ``rclone``):

    {key_template}/latest/<files>            the current build's files; latest/_SUCCESS last
    {key_template}/latest.zip                instead, with ``zip: true``: one object, one PUT

Object stores have no transactions, so ``latest/`` is updated as Hadoop's committers mark a
finished output: its ``_SUCCESS`` (the build's manifest, as in ``latest.json``) is deleted first,
the new files are uploaded (those whose content is already there are not), files the new build
lacks are deleted, and ``_SUCCESS`` is written last. A reader that sees the same ``_SUCCESS``
before and after copying (or checks its copy against the sha256s in it) has one whole build.
Then the target's ``bundles.json`` is updated (``syncd.bundles.index``).

Converting streams: the task documents are read from the source batch by batch and written by
the converter into a temporary local directory, once per format; nothing holds all tasks.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import converters
from converters import ConverterError, ConvertOptions, LabelConfigError, parse_label_config
from converters.fastio import zip_dir
from syncd.bundles import index
from syncd.bundles.config import MANIFEST_NAME, BundleConfig, render_prefix
from syncd.errors import BadTask, ConfigError, StoreError
from syncd.keys import UnsafeKey, check_key
from syncd.sources.base import Project, Source
from syncd.stores.base import ObjectInfo, Store

log = logging.getLogger("syncd")

BUILD_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{4,32}\Z")
DEFAULT_TRANSFERS = 4
LATEST_DIR = "latest"  # {key_template}/latest/: the current build's files
LATEST_ZIP = "latest.zip"  # {key_template}/latest.zip: the current build's zip (zip: true)
LATEST_MARKER = "_SUCCESS"  # latest/_SUCCESS: written last, names the build latest/ holds


def check_formats(config: BundleConfig | None, where: str = "bundles") -> BundleConfig | None:
    """``ConfigError`` naming ``where`` for a format no converter has; formats in their
    converter's canonical name otherwise."""
    if config is None:
        return None
    names = []
    for name in config.formats:
        try:
            canonical = converters.get(name).name
        except converters.UnknownFormat:
            known = converters.names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where}.formats: unknown format {name!r}; {hint}known: {', '.join(known)}") from None
        if canonical not in names:
            names.append(canonical)
    config.formats = names
    return config


def bundle_prefix(config: BundleConfig, project: Project, fmt: str) -> str:
    """The folder holding one project's builds of one format (and its ``latest.json``)."""
    return render_prefix(config.key_template, project.id, project.slug, converters.get(fmt).name)


def latest_key(prefix: str, zipped: bool) -> str:
    """The stable copy of the current build: ``<prefix>/latest/`` (a folder) or ``<prefix>/latest.zip``."""
    return f"{prefix}/{LATEST_ZIP}" if zipped else f"{prefix}/{LATEST_DIR}/"


@dataclass(frozen=True)
class BundleFile:
    path: str  # relative to the build folder, '/'-separated
    size: int
    sha256: str


@dataclass
class PublishedBundle:
    """What happened to one format of one project: published, skipped (with why) or failed."""

    project_id: int
    format: str
    prefix: str = ""
    build_id: str | None = None
    created_at: str | None = None
    task_count: int = 0
    files: list[BundleFile] = field(default_factory=list)
    skipped: str | None = None  # why the format does not apply to the project
    error: str | None = None  # why the build failed; latest.json still names the previous build
    warnings: int = 0  # tasks or regions the converter left out (each logged)
    removed_builds: list[str] = field(default_factory=list)
    # "<prefix>/latest/" (a folder, complete once latest/_SUCCESS names the build) or "<prefix>/latest.zip"
    latest_key: str = ""
    index_key: str = ""  # the target's bundles.json, which lists this bundle

    @property
    def status(self) -> str:
        return "failed" if self.error else "skipped" if self.skipped else "published"

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def manifest_key(self) -> str:
        return f"{self.prefix}/{MANIFEST_NAME}"

    def key(self, path: str) -> str:
        return f"{self.prefix}/{self.build_id}/{path}"


def _new_result(config: BundleConfig, project: Project, fmt: str, **fields: Any) -> PublishedBundle:
    prefix = bundle_prefix(config, project, fmt)
    return PublishedBundle(project.id, fmt, prefix, latest_key=latest_key(prefix, config.zip),
                           index_key=index.index_key(config.key_template), **fields)


# ---------------------------------------------------------------------------------- building


TaskSource = Callable[[], Iterable[dict]] | Iterable[dict]


def build_and_publish(store: Store, project: Project, tasks: TaskSource, config: BundleConfig, *,
                      now: Callable[[], float] = time.time, transfers: int = DEFAULT_TRANSFERS,
                      stop: threading.Event | None = None, work_dir: str | os.PathLike[str] | None = None,
                      formats: Iterable[str] | None = None) -> list[PublishedBundle]:
    """Convert the project's tasks to every configured format that applies, and publish each.

    ``tasks`` is a callable returning a fresh iterable of task documents (called once per
    format), or a re-iterable collection. Returns one ``PublishedBundle`` per configured format
    (or per ``formats``, a subset), in config order. A failed format is reported in its
    result (and logged) and does not stop the others. Errors of the task source itself
    (database gone) propagate; so does a ``StoreError`` marked fatal.
    """
    wanted = list(config.formats if formats is None else [converters.get(f).name for f in formats])
    try:
        if project.label_config_error:
            raise LabelConfigError(project.label_config_error)
        label_config = parse_label_config(project.label_config or "")
    except LabelConfigError as exc:
        message = f"the project's labeling config cannot be read ({exc})"
        log.error("bundles of project %d: %s", project.id, message)
        return [_new_result(config, project, fmt, error=message) for fmt in wanted]
    plan: list[tuple[str, str | None]] = []
    for fmt in wanted:
        plan.append((fmt, converters.get(fmt).applies_to(label_config)))
    if not callable(tasks) and iter(tasks) is tasks and sum(r is None for _, r in plan) > 1:
        raise TypeError("tasks is a one-shot iterator; pass a callable returning a fresh iterable per format")
    results = []
    for fmt, reason in plan:
        if reason is not None:
            log.info("bundle %s of project %d skipped: %s", fmt, project.id, reason)
            results.append(_new_result(config, project, fmt, skipped=reason))
            continue
        if stop is not None and stop.is_set():
            results.append(_new_result(config, project, fmt, error="interrupted"))
            continue
        fresh = tasks() if callable(tasks) else tasks
        results.append(_publish_one(store, project, fmt, label_config, fresh, config, now=now,
                                    transfers=transfers, stop=stop, work_dir=work_dir))
    return results


class _SourceFailed(Exception):
    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc


def _counted(tasks: Iterable[dict], counter: list[int]) -> Iterator[dict]:
    iterator = iter(tasks)
    while True:
        try:
            task = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # the database, not the converter: let the caller handle it
            raise _SourceFailed(exc) from exc
        counter[0] += 1
        yield task


def _publish_one(store: Store, project: Project, fmt: str, label_config: converters.LabelConfig,
                 tasks: Iterable[dict], config: BundleConfig, *, now: Callable[[], float], transfers: int,
                 stop: threading.Event | None, work_dir: str | os.PathLike[str] | None) -> PublishedBundle:
    started = now()
    result = _new_result(config, project, fmt, build_id=_build_id(started), created_at=_timestamp(started))
    converter = converters.get(fmt)

    def warn(task_id: object, message: str) -> None:
        result.warnings += 1
        log.warning("bundle %s of project %d: task %s left out: %s", fmt, project.id, task_id, message)

    with tempfile.TemporaryDirectory(prefix="syncd-bundle-", dir=work_dir) as tmp:
        out = Path(tmp) / "out"
        counter = [0]
        try:
            converter.convert(_counted(tasks, counter), label_config, out, ConvertOptions(warn=warn), check=False)
            result.task_count = counter[0]
            if config.zip:
                archive = Path(tmp) / f"{fmt}.zip"
                zip_dir(out, archive)
                root, paths = Path(tmp), [archive]
            else:
                root, paths = out, sorted(p for p in out.rglob("*") if p.is_file())
        except _SourceFailed as failed:
            raise failed.exc from None
        except ConverterError as exc:
            return _failed(result, f"conversion failed: {exc}")
        except Exception as exc:  # a converter bug or a full disk must not stop the daemon
            log.debug("bundle %s of project %d: conversion failed", fmt, project.id, exc_info=True)
            return _failed(result, f"conversion failed: {type(exc).__name__}: {exc}")
        try:
            uploads = [(p, p.relative_to(root).as_posix()) for p in paths]
            for _, rel in uploads:
                check_key(result.key(rel))
                if rel == LATEST_MARKER:
                    raise UnsafeKey(f"{rel!r} is the name of {LATEST_DIR}/'s completion marker")
        except UnsafeKey as exc:
            return _failed(result, f"a produced file has an unsafe key ({exc})")
        uploaded = _upload(store, uploads, result.key, transfers, stop)
        if uploaded.error is not None:
            _delete_keys(store, [result.key(f.path) for f in uploaded.files], transfers, "clean up the failed build")
            if uploaded.fatal is not None:
                raise uploaded.fatal
            return _failed(result, uploaded.error)
        result.files = uploaded.files
        manifest = _manifest(result)
        error = _write_manifest(store, result, manifest, transfers)
        if error is not None:
            return _failed(result, error)
        # The build is current from here on; the stable copies and the index follow it.
        problems = [_publish_latest(store, result, uploads, uploaded.etags, manifest, transfers, stop)]
    problems.append(_publish_index_entry(store, config, project, result))
    result.removed_builds = _prune(store, result, config.keep, transfers)
    problems = [p for p in problems if p]
    if problems:
        result.error = "; ".join(problems)
        log.error("bundle %s of project %d: build %s is published (%s names it) but %s; the next build "
                  "repairs it", fmt, project.id, result.build_id, result.manifest_key, result.error)
        return result
    removed = f", {len(result.removed_builds)} old build(s) removed" if result.removed_builds else ""
    log.info("bundle %s of project %d: %d tasks, %d files -> %s/%s and %s%s", fmt, project.id, result.task_count,
             len(result.files), result.prefix, result.build_id, result.latest_key, removed)
    return result


def _write_manifest(store: Store, result: PublishedBundle, manifest: bytes, transfers: int) -> str | None:
    """Write ``latest.json``, making the build current; what went wrong (the build's files then
    cleaned up where the old manifest is still in place), or None."""
    digest = hashlib.sha256(manifest).hexdigest()
    try:
        store.put(result.manifest_key, manifest, digest)
    except StoreError as put_error:
        # A write that failed may still have landed (a timeout after the upload): ask the store.
        try:
            landed = store.head(result.manifest_key)
            state = "ours" if landed and landed.sha256 == digest else \
                "unknown" if landed and landed.sha256 is None else "previous"
        except StoreError:
            state = "unknown"
        if state == "previous":
            _delete_keys(store, [result.key(f.path) for f in result.files], transfers, "clean up the failed build")
        elif state == "unknown":
            log.warning("cannot tell whether %s was written; the new build's files are left in place",
                        result.manifest_key)
        if state != "ours":
            if put_error.fatal:
                raise
            return f"writing {result.manifest_key} failed: {put_error}"
    return None


def _publish_latest(store: Store, result: PublishedBundle, uploads: list[tuple[Path, str]],
                    etags: dict[str, str | None], manifest: bytes, transfers: int,
                    stop: threading.Event | None) -> str | None:
    """Make ``latest/`` (or ``latest.zip``) hold the new build; what went wrong, or None.

    ``latest/_SUCCESS`` is deleted before anything in ``latest/`` changes and written (with the
    build's manifest) only once ``latest/`` holds exactly the build's files, so a reader never
    takes a half-updated ``latest/`` for a complete one. ``latest.zip`` is one PUT. Whichever
    of the two the config does not ask for is removed (``zip:`` changed)."""
    folder = f"{result.prefix}/{LATEST_DIR}/"
    zip_key = f"{result.prefix}/{LATEST_ZIP}"
    zipped = result.latest_key == zip_key
    try:
        # One listing for latest/... and latest.zip (and latest.json).
        listed = {info.key: info for info in store.list(f"{result.prefix}/{LATEST_DIR}")}
        present = {key[len(folder):]: info for key, info in listed.items() if key.startswith(folder)}
        if LATEST_MARKER in present:
            store.delete(folder + LATEST_MARKER)  # latest/ is incomplete from now until it is written again
        if zipped:
            [(archive, _)] = uploads
            data = archive.read_bytes()
            store.put(zip_key, data, hashlib.sha256(data).hexdigest())
            wanted: dict[str, BundleFile] = {}
        else:
            if zip_key in listed:
                store.delete(zip_key)
            wanted = {f.path: f for f in result.files}
            changed = [(path, rel) for path, rel in uploads
                       if not _already_there(present.get(rel), wanted[rel], etags.get(rel), store.listing_hashes)]
            copied = _upload(store, changed, lambda rel: folder + rel, transfers, stop)
            if copied.error is not None:
                if copied.fatal is not None:
                    raise copied.fatal
                return f"updating {folder} failed: {copied.error}"
        stale = [folder + rel for rel in present if rel not in wanted and rel != LATEST_MARKER]
        if _delete_keys(store, stale, transfers, f"remove old files from {folder}"):
            return f"old files could not be removed from {folder}"
        if not zipped:
            store.put(folder + LATEST_MARKER, manifest, hashlib.sha256(manifest).hexdigest())
    except StoreError as exc:
        if exc.fatal:
            raise
        return f"updating {result.latest_key} failed: {exc}"
    except OSError as exc:
        return f"cannot read the converted file for {result.latest_key}: {exc.strerror or exc}"
    return None


def _already_there(info: ObjectInfo | None, file: BundleFile, build_etag: str | None, listing_hashes: bool) -> bool:
    """Whether a listed object of ``latest/`` already holds ``file`` (no need to upload it again)."""
    if info is None or info.size != file.size:
        return False
    if listing_hashes:
        return info.sha256 == file.sha256
    # S3 lists ETags: the MD5 of the bytes, the same for the build's copy of the same bytes (an
    # encrypted or a local object's never matches: it is uploaded again, which is only slower).
    return build_etag is not None and info.etag == build_etag


def _publish_index_entry(store: Store, config: BundleConfig, project: Project, result: PublishedBundle) -> str | None:
    try:
        index.publish_entry(store, config.key_template, index.index_entry(result, project.title))
    except StoreError as exc:
        if exc.fatal:
            raise
        return f"updating {result.index_key} failed: {exc}"
    return None


def _failed(result: PublishedBundle, message: str) -> PublishedBundle:
    result.error = message
    result.files = []
    log.error("bundle %s of project %d failed: %s; %s still names the previous build, if any", result.format,
              result.project_id, message, result.manifest_key)
    return result


def _build_id(t: float) -> str:
    stamp = datetime.fromtimestamp(t, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(2)}"


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _manifest(result: PublishedBundle) -> bytes:
    doc = {
        "build_id": result.build_id,
        "format": result.format,
        "project_id": result.project_id,
        "created_at": result.created_at,
        "task_count": result.task_count,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in result.files],
    }
    return (json.dumps(doc, ensure_ascii=False, indent=1) + "\n").encode()


@dataclass
class _Uploaded:
    files: list[BundleFile]  # written, in the order given
    etags: dict[str, str | None]  # by path, as each put returned it
    error: str | None = None  # the first error (None: all written)
    fatal: StoreError | None = None  # when the error concerns the whole target


def _upload(store: Store, uploads: list[tuple[Path, str]], key_of: Callable[[str], str], transfers: int,
            stop: threading.Event | None) -> _Uploaded:
    """Put each local file at ``key_of(its path)``, a few at once, stopping at the first error."""
    abort = threading.Event()
    errors: list[str] = []
    fatal: list[StoreError] = []

    def put(path: Path, rel: str) -> tuple[BundleFile, str | None] | None:
        if abort.is_set():
            return None
        if stop is not None and stop.is_set():
            abort.set()
            errors.append("interrupted")
            return None
        key = key_of(rel)
        try:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            etag = store.put(key, data, digest)
        except StoreError as exc:
            abort.set()
            errors.append(f"upload of {key} failed: {exc}")
            if exc.fatal:
                fatal.append(exc)
            return None
        except OSError as exc:
            abort.set()
            errors.append(f"cannot read the converted file {rel}: {exc.strerror or exc}")
            return None
        return BundleFile(rel, len(data), digest), etag

    with ThreadPoolExecutor(max_workers=max(1, transfers), thread_name_prefix="syncd-bundle") as pool:
        done = [item for item in pool.map(lambda item: put(*item), uploads) if item is not None]
    uploaded = _Uploaded([f for f, _ in done], {f.path: etag for f, etag in done})
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        uploaded.error, uploaded.fatal = errors[0] + more, fatal[0] if fatal else None
    return uploaded


def _delete_keys(store: Store, keys: list[str], transfers: int, why: str) -> int:
    """Delete keys, best effort; returns how many deletions failed (each is logged once)."""
    failed: list[str] = []

    def delete(key: str) -> None:
        try:
            store.delete(key)
        except StoreError as exc:
            failed.append(f"{key}: {exc}")

    if keys:
        with ThreadPoolExecutor(max_workers=max(1, transfers), thread_name_prefix="syncd-bundle") as pool:
            list(pool.map(delete, keys))
    if failed:
        log.warning("could not %s: %d deletion(s) failed, first: %s", why, len(failed), failed[0])
    return len(failed)


def _prune(store: Store, result: PublishedBundle, keep: int, transfers: int) -> list[str]:
    """Remove builds beyond the newest ``keep`` (counting the new one, which is never removed)."""
    builds: dict[str, list[str]] = {}
    base = f"{result.prefix}/"
    try:
        for info in store.list(base):
            rest = info.key[len(base):]
            build, sep, _ = rest.partition("/")
            if sep and BUILD_ID.match(build):
                builds.setdefault(build, []).append(info.key)
    except StoreError as exc:
        log.warning("cannot list %s to remove old builds: %s", base, exc)
        return []
    older = sorted((b for b in builds if b != result.build_id), reverse=True)
    removed = older[max(0, keep - 1):]
    for build in removed:
        _delete_keys(store, builds[build], transfers, f"remove the old build {base}{build}")
    return removed


# ---------------------------------------------------------------------------------- the source side


def iter_project_tasks(source: Source, project_id: int,
                       on_bad: Callable[[BadTask], None] | None = None) -> Iterator[dict]:
    """The project's labeled task documents as dicts, in id order, streamed from ``source``.

    Each is exactly the document syncd stores for the task with the source's options (bundles
    use a source with ``predictions: ids``, Label Studio's export shape). A task that cannot be
    built (``BadTask``) is left out with a warning (and passed to ``on_bad``)."""
    for doc in source.documents(project_ids=[project_id]):
        if isinstance(doc, BadTask):
            log.warning("bundles of project %d: %s; left out of the bundles", project_id, doc)
            if on_bad is not None:
                on_bad(doc)
            continue
        yield json.loads(doc.body)


def publish_project(source: Source, store: Store, project: Project, config: BundleConfig,
                    **kwargs: Any) -> list[PublishedBundle]:
    """``build_and_publish`` of one project, its tasks streamed from ``source``."""
    return build_and_publish(store, project, lambda: iter_project_tasks(source, project.id), config, **kwargs)


def publish_changed(source: Source, store: Store, config: BundleConfig, changed: Iterable[int],
                    only: Iterable[int] = (), **kwargs: Any) -> list[PublishedBundle]:
    """Rebuild the bundles of projects whose tasks changed, and of projects that have none yet
    (``only``: restrict to these project ids). Returns every format's result."""
    changed = set(changed)
    wanted = set(only)
    results: list[PublishedBundle] = []
    for project in source.projects().values():
        if wanted and project.id not in wanted:
            continue
        if project.id in changed:
            results += publish_project(source, store, project, config, **kwargs)
        else:
            missing = missing_bundles(store, project, config)
            if missing:
                results += publish_project(source, store, project, config, formats=missing, **kwargs)
    return results


def missing_bundles(store: Store, project: Project, config: BundleConfig) -> list[str]:
    """The configured formats that apply to the project but have no ``latest.json`` yet, or no
    complete stable copy (``latest/_SUCCESS`` or ``latest.zip``: bundles published by an older
    syncd, or a copy that failed half-way)."""
    try:
        label_config = parse_label_config(project.label_config or "")
    except LabelConfigError:
        return list(config.formats)
    missing = []
    for fmt in config.formats:
        if converters.get(fmt).applies_to(label_config) is None:
            prefix = bundle_prefix(config, project, fmt)
            stable = latest_key(prefix, config.zip) + ("" if config.zip else LATEST_MARKER)
            if store.head(f"{prefix}/{MANIFEST_NAME}") is None or store.head(stable) is None:
                missing.append(fmt)
    return missing


