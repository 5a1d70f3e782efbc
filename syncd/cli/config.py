"""``syncd config``: the configuration in effect (secrets masked), or every key's default."""

from __future__ import annotations

import argparse

import yaml

from syncd import config as config_mod
from syncd.cli.args import add_common, config_from


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config", help="print the configuration in effect (secrets masked), or the defaults",
                       description="Print the configuration syncd would use: the config file (--config, or the "
                       "first found of $SYNCD_CONFIG, ./syncd.yaml, $XDG_CONFIG_HOME/syncd/config.yaml, "
                       "/etc/syncd/config.yaml) with the command line's flags applied, secrets masked. "
                       "config.example.yaml documents each key.")
    add_common(p)
    p.add_argument("--print-defaults", action="store_true", help="print every key with its default instead")
    p.set_defaults(func=run, projects=None)


def run(args: argparse.Namespace) -> int:
    if args.print_defaults:
        values = {key: getattr(config_mod.Config(), key) for key in config_mod.KEYS}
        print("# syncd's defaults; config.example.yaml explains every key.")
    else:
        cfg = config_from(args, need_target=False)
        values = config_mod.masked(cfg)
        where = cfg.source_file if cfg.source_file and cfg.source_file != "config" else "no config file"
        print(f"# the configuration in effect: {where}, with the command line's flags; secrets masked")
    print(yaml.safe_dump(values, sort_keys=False, allow_unicode=True), end="")
    return 0
