"""``syncd config --print-defaults``: every configuration key with its default."""

from __future__ import annotations

import argparse

import yaml

from syncd import config as config_mod


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="print the default configuration",
                       description="Print the configuration syncd uses when a key is not set "
                       "(config.example.yaml documents each key).")
    p.add_argument("--print-defaults", action="store_true", required=True, help="print every key with its default")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    defaults = {key: getattr(config_mod.Config(), key) for key in config_mod.KEYS}
    print("# syncd's defaults; config.example.yaml explains every key.")
    print(yaml.safe_dump(defaults, sort_keys=False, allow_unicode=True), end="")
    return 0
