"""``syncd status``: the syncd processes sharing targets through a PostgreSQL state, and the
projects each holds."""

from __future__ import annotations

import argparse

from syncd.checkpoint import is_postgres, state_location
from syncd.cli.args import add_common, config_from
from syncd.leases import TARGET_LEASE, holders
from syncd.sources.labelstudio.database import mask_url


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("status", help="list the syncd processes sharing targets, and who holds which project",
                       description="With a PostgreSQL state: every live syncd process of every target (or of "
                       "--target), and the projects it holds. With a state file there is one process per target.")
    add_common(p)
    p.set_defaults(func=run, projects=None)


def run(args: argparse.Namespace) -> int:
    cfg = config_from(args, need_target=False)
    state = state_location(cfg.state)
    if not is_postgres(state):
        print(f"state {state or 'the default file of each target'} is a file: one syncd process per target "
              "(a PostgreSQL state lets several share it)")
        return 0
    rows = holders(str(state), cfg.state_schema)
    print(f"state {mask_url(str(state))} (schema {cfg.state_schema}): {len(rows)} process(es)")
    for target, holder, started, projects, left in rows:
        if cfg.target and not target.startswith(cfg.target.rstrip("/")) and cfg.target not in target:
            continue
        shared = [p for p in projects if p != TARGET_LEASE]
        audits = " (checks the target)" if TARGET_LEASE in projects else ""
        print(f"{target}\n  {holder} since {started[:19]}: holds projects "
              f"{', '.join(map(str, shared)) or 'none'}{audits}; alive for {left:.0f}s more")
    return 0
