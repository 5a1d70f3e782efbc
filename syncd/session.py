"""The composition root: the one place a ``Config`` becomes running parts.

    config -> source (syncd.sources) -> syncer (syncd.syncer) -> store (syncd.stores)
                                                              -> checkpoint (syncd.checkpoint)

``resync``, ``run``, ``check`` and ``convert`` all open what they need here, so every command
reads the same configuration the same way.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from syncd import config as config_mod
from syncd import logs
from syncd.checkpoint import Checkpoint, is_postgres, open_checkpoint, scratch_copy, state_location
from syncd.config import Config
from syncd.document import DocumentOptions
from syncd.errors import ConfigError
from syncd.leases import ProjectLeases
from syncd.ops.events import Events
from syncd.sources import Source, open_source
from syncd.stores import Store, scheme_of
from syncd.stores import open_store as open_store_url
from syncd.syncer import ResyncOptions, Syncer

log = logging.getLogger("syncd")

OVERRIDABLE = ("db", "target", "state", "log_format", "listen", "projects")


def load_config(path: str | None, overrides: dict[str, Any] | None = None, *, need_target: bool = True) -> Config:
    """The configuration file at ``path`` (None: the defaults) with command-line ``overrides``
    (None values are not overrides), checked; ``ConfigError`` names what is wrong."""
    from syncd.bundles.build import check_formats  # converters: only once a command runs

    cfg = config_mod.load(path)
    for name, value in (overrides or {}).items():
        if name not in OVERRIDABLE:
            raise AssertionError(name)
        if value:
            setattr(cfg, name, list(value) if name == "projects" else value)
    if need_target and not cfg.target:
        raise ConfigError("no target: pass --target DIR_OR_URL or set target: in the config")
    check_formats(cfg.bundles, f"{cfg.source_file or 'config'}: bundles")
    return config_mod.validate(cfg)


def sync_options(cfg: Config, **extra: Any) -> ResyncOptions:
    return ResyncOptions(key_template=cfg.key_template, projects=cfg.projects, delete=cfg.delete,
                         max_delete=cfg.max_delete, transfers=cfg.transfers, **extra)


def open_store(cfg: Config, stop: threading.Event | None = None) -> Store:
    return open_store_url(cfg.target, cfg.backend_options(scheme_of(cfg.target)), transfers=cfg.transfers,
                          stop=stop)


def open_cfg_source(cfg: Config, *, one_shot: bool = False, predictions: str | None = None,
                    syncing: bool = False) -> Source:
    """The source of ``cfg.db``; ``predictions`` overrides the config's (bundles and ``convert``
    want Label Studio's bare ids). ``syncing``: the source of a sync, whose big passes build
    documents in ``cfg.build_workers`` processes."""
    return open_source(cfg.db, batch_size=cfg.batch_size, one_shot=one_shot,
                       options=DocumentOptions(predictions=predictions or cfg.predictions),
                       build_workers=(None if cfg.build_workers == "auto" else cfg.build_workers) if syncing else 0)


def open_bundle_source(cfg: Config) -> Source:
    """A source of its own for building bundles (off the sync loop's connection), its documents
    in Label Studio's export shape (prediction ids)."""
    return open_cfg_source(cfg, predictions="ids")


def open_bundle_parts(cfg: Config, stop: threading.Event | None = None) -> tuple[Source, Store]:
    """``open_bundle_source`` and a store of its own: what the daemon's bundle worker uses."""
    source = open_bundle_source(cfg)
    try:
        return source, open_store(cfg, stop)
    except BaseException:
        source.close()
        raise


@dataclass
class Session:
    """Everything a sync needs, opened from one ``Config``; ``close`` in reverse order."""

    cfg: Config
    source: Source
    store: Store
    checkpoint: Checkpoint
    syncer: Syncer
    leases: ProjectLeases | None = None  # with a PostgreSQL state: this process's share of the projects
    _scratch: Any = field(default=None, repr=False)

    def close(self) -> None:
        # The syncer first: it records acknowledged writes in the checkpoint; the leases last.
        close_all(self.syncer, self.checkpoint, self.source, self.store, self._scratch, self.leases)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_session(cfg: Config, *, one_shot: bool, stop: threading.Event | None = None,
                 events: Events | None = None, **options: Any) -> Session:
    """Source, store, checkpoint and syncer for ``cfg``. ``options`` are ``ResyncOptions``
    (``dry_run``, ``verify_remote``, ``checksum``, ``audit``). A dry run plans against a
    throwaway copy of the checkpoint, so the real one is not touched. ``events``: where the
    syncer reports what it found (``syncd.ops.events``)."""
    stop = stop or threading.Event()
    opened: list[Any] = []
    try:
        store = open_store(cfg, stop)
        opened.append(store)
        source = open_cfg_source(cfg, one_shot=one_shot, syncing=True)
        opened.append(source)
        scratch = leases = None
        state = state_location(cfg.state)
        if is_postgres(state):
            check_state_database(cfg, str(state))
            # Processes that share the state share the target's projects (one-shot runs take
            # what nobody holds).
            leases = ProjectLeases(str(state), cfg.state_schema, store.identity, lease_seconds=cfg.lease_seconds,
                                   member=not one_shot)
            opened.append(leases)
            logs.name_process(leases.holder)
        checkpoint = open_checkpoint(state, store.identity, schema=cfg.state_schema,
                                     fence=leases.holder if leases else None)
        if options.get("dry_run"):
            scratch = tempfile.TemporaryDirectory(prefix="syncd-dry-run-")
            opened.insert(0, scratch)  # removed last
            real = checkpoint
            try:
                checkpoint = scratch_copy(real, scratch.name)
            finally:
                real.close()
        opened.append(checkpoint)
        syncer = Syncer(source, store, checkpoint, sync_options(cfg, **options), stop=stop, leases=leases,
                        events=events)
    except BaseException:
        close_all(*reversed(opened))
        raise
    return Session(cfg, source, store, checkpoint, syncer, leases, scratch)


def check_state_database(cfg: Config, state: str) -> None:
    """A PostgreSQL state in Label Studio's own database only when the configuration says so."""
    db = cfg.db or ""
    if not db.lower().startswith(("postgresql://", "postgres://")) or cfg.state_in_label_studio_db:
        return

    def where(url: str) -> tuple[str, int, str]:
        parts = urlsplit(url)
        return parts.hostname or "localhost", parts.port or 5432, parts.path.lstrip("/")

    if where(db) == where(state):
        raise ConfigError("state: is Label Studio's own database; syncd would keep its checkpoint there in schema "
                          f"{cfg.state_schema!r} (and never touch Label Studio's tables): set "
                          "state_in_label_studio_db: true to allow it, or name another database")


def close_all(*parts: Any) -> None:
    """Close each part; a failure while closing one does not keep the others open. Closing is
    what a session does after its database or state connection was lost, so any error is
    expected here (a driver's own, too): a part left open would be worse (leases kept alive by
    their keeper thread would hold projects that nobody syncs)."""
    for part in parts:
        if part is None:
            continue
        try:
            closer = getattr(part, "close", None) or part.cleanup
            closer()
        except Exception as exc:  # noqa: BLE001 - see above; the next session reconnects
            log.debug("closing %s: %s", type(part).__name__, exc)
