"""Arguments several subcommands share, and reading the configuration they name."""

from __future__ import annotations

import argparse

from syncd import logs
from syncd.config import Config
from syncd.session import OVERRIDABLE, load_config


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="YAML config file (see config.example.yaml)")
    parser.add_argument("--db", metavar="URL", help="Label Studio database: sqlite:///path/label_studio.sqlite3 "
                        "or postgresql://user:pw@host:port/db, or dir:///path (default: from Label Studio's "
                        "env vars)")
    parser.add_argument("--target", metavar="URL", help="where documents go: a directory, file:///dir, "
                        "s3://bucket/prefix, gs://bucket/prefix or azure://container/prefix")
    parser.add_argument("--state", metavar="PATH", help="checkpoint file (default: "
                        "$XDG_STATE_HOME/syncd/<target>.sqlite3)")
    parser.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def config_from(args: argparse.Namespace, *, need_target: bool = True) -> Config:
    """The configuration named by ``--config``, with the command line's overrides; logging set up
    as it says."""
    overrides = {name: getattr(args, name, None) for name in OVERRIDABLE}
    cfg = load_config(args.config, overrides, need_target=need_target)
    logs.setup(cfg.log_format, getattr(args, "verbose", False))
    return cfg
