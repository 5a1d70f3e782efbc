"""``syncd formats``: which export formats apply to a labeling config, and why the others do not."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import converters
from converters import LabelConfigError, parse_label_config


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("formats", help="list the export formats that apply to a labeling config")
    p.add_argument("--label-config", required=True, help="the project's labeling config XML")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = parse_label_config(Path(args.label_config))
    except OSError as exc:
        print(f"error: {args.label_config}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except LabelConfigError as exc:
        print(f"error: {args.label_config}: {exc}", file=sys.stderr)
        return 2
    names = converters.names()
    width = max(len(n) for n in names)
    for name in names:
        converter = converters.get(name)
        reason = converter.applies_to(config)
        if reason is None:
            print(f"{name:<{width}}  yes  {converter.description}")
        else:
            print(f"{name:<{width}}  no   {reason}")
    return 0
