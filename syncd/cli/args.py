"""Arguments several subcommands share, and reading the configuration they name."""

from __future__ import annotations

import argparse
import logging

from syncd import logs
from syncd.config import Config, find_config
from syncd.session import OVERRIDABLE, load_config

log = logging.getLogger("syncd")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="YAML config file (see config.example.yaml; default: "
                        "$SYNCD_CONFIG, ./syncd.yaml, $XDG_CONFIG_HOME/syncd/config.yaml or /etc/syncd/config.yaml, "
                        "the first that exists)")
    parser.add_argument("--db", metavar="URL", help="Label Studio database: sqlite:///path/label_studio.sqlite3 "
                        "or postgresql://user:pw@host:port/db, or dir:///path (default: from Label Studio's "
                        "env vars)")
    parser.add_argument("--target", metavar="URL", help="where documents go: a directory, file:///dir, "
                        "s3://bucket/prefix, gs://bucket/prefix or azure://container/prefix")
    parser.add_argument("--state", metavar="PATH", help="checkpoint file (default: "
                        "$XDG_STATE_HOME/syncd/<target>.sqlite3)")
    parser.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: a line per object written, deleted or orphaned; -vv: debug lines too")


def config_from(args: argparse.Namespace, *, need_target: bool = True) -> Config:
    """The configuration named by ``--config``, with the command line's overrides; logging set up
    as it says."""
    overrides = {name: getattr(args, name, None) for name in OVERRIDABLE}
    path = args.config or find_config()
    cfg = load_config(path, overrides, need_target=need_target)
    logs.setup(cfg.log_format, getattr(args, "verbose", 0))
    if path and not args.config:
        log.info("config: %s (found; --config names another)", path)
    return cfg
