"""``syncd check``: the config, the source, the target and the state, one line each."""

from __future__ import annotations

import argparse

from syncd.checkpoint import open_checkpoint
from syncd.cli.args import add_common, config_from
from syncd.config import Config
from syncd.errors import ConfigError, SyncdError
from syncd.session import open_cfg_source, open_store
from syncd.sources import is_directory


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("check", help="check the config, the database and the target, then exit",
                       description="Validate the configuration and connectivity: the database is readable "
                       "and is Label Studio's, the target is reachable and writable (a probe object is "
                       "written and removed), the state file is usable. One line per check; exit 0 only "
                       "if all pass.")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results: list[tuple[bool, str]] = []
    try:
        cfg = config_from(args)
    except ConfigError as exc:
        print(f"FAIL config: {exc}")
        return 2
    results.append((True, f"config: {cfg.source_file or 'command line'} is valid"))
    try:
        results.append(_check_source(cfg))
    except SyncdError as exc:
        results.append((False, f"database: {exc}"))
    store = None
    try:
        store = open_store(cfg)
        store.check_writable()
        results.append((True, f"target {store.url}: reachable and writable"))
    except SyncdError as exc:
        results.append((False, f"target {cfg.target}: {exc}"))
    finally:
        if store is not None:
            store.close()
    if store is not None:
        try:
            checkpoint = open_checkpoint(cfg.state, store.identity)
            checkpoint.close()
            results.append((True, f"state {checkpoint.path}: usable"))
        except SyncdError as exc:
            results.append((False, f"state: {exc}"))
    for ok, line in results:
        print(f"{'ok  ' if ok else 'FAIL'} {line}")
    return 0 if all(ok for ok, _ in results) else 1


def _check_source(cfg: Config) -> tuple[bool, str]:
    source = open_cfg_source(cfg, one_shot=True)
    try:
        source.refresh()
        projects = source.projects()
        labeled = source.count_labeled(cfg.projects)
        problems = source.problems
    finally:
        source.close()
    if problems:
        return False, f"directory {cfg.db}: {labeled} labeled tasks, {len(problems)} unreadable files"
    if is_directory(cfg.db):
        return True, f"directory {cfg.db}: {labeled} labeled tasks"
    missing = [p for p in cfg.projects if p not in projects]
    if missing:
        return False, f"database {source.url}: no project {', '.join(map(str, missing))}"
    return True, f"database {source.url}: Label Studio, {len(projects)} projects, {labeled} labeled tasks"
