"""``syncd install-triggers`` / ``remove-triggers``: PostgreSQL's optional change feed (the only
commands that write to Label Studio's database)."""

from __future__ import annotations

import argparse

from syncd import config as config_mod
from syncd.sources.labelstudio import notify
from syncd.sources.labelstudio.database import default_db_url, mask_url


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    for name, verb in (("install-triggers", "install"), ("remove-triggers", "remove")):
        p = sub.add_parser(name, help=f"{verb} PostgreSQL LISTEN/NOTIFY triggers for instant wake-up (writes to DB)",
                           description=f"{verb.capitalize()} the optional triggers that make PostgreSQL notify "
                           "syncd run of every change at once. This is the only syncd command that writes to "
                           "Label Studio's database; without the triggers syncd polls.")
        p.add_argument("--config", metavar="PATH", help="YAML config file (for db:)")
        p.add_argument("--db", metavar="URL", help="postgresql://user:pw@host:port/db (a role that owns the tables)")
        p.add_argument("-v", "--verbose", action="count", default=0, help="-vv: debug logging")
        p.set_defaults(func=run, verb=verb)


def run(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    url = args.db or cfg.db or default_db_url()
    if args.verb == "install":
        tables = notify.install(url)
        print(f"installed LISTEN/NOTIFY triggers on {', '.join(tables)} at {mask_url(url)}")
    else:
        notify.remove(url)
        print(f"removed syncd's triggers at {mask_url(url)}")
    return 0
