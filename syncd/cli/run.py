"""``syncd run``: keep the target in step with Label Studio until stopped."""

from __future__ import annotations

import argparse

from syncd.cli.args import add_common, config_from
from syncd.daemon import Daemon


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("run", help="keep the target in step with Label Studio until stopped",
                       description="Reconcile once, then watch Label Studio and write every change as it "
                       "happens. SIGTERM/SIGINT: finish in-flight writes and exit 0 (a second signal exits "
                       "at once); SIGHUP: reload the configuration.")
    add_common(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="/healthz, /readyz and /metrics (default 127.0.0.1:9187)")
    p.set_defaults(func=run, projects=None)


def run(args: argparse.Namespace) -> int:
    return Daemon(config_from(args), lambda: config_from(args)).run()
