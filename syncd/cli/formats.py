"""``syncd formats``: which export formats apply to a labeling config (a file's, or a project's in
Label Studio's database), and why the others do not."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import converters
from converters import ConverterError, LabelConfig, LabelConfigError, parse_label_config
from syncd.cli.args import add_config_and_db, database_url_or_default, open_project, project_label_config
from syncd.errors import SyncdError
from syncd.sources.labelstudio.database import driver_errors


class _Usage(Exception):
    """Options that do not go together: one line, exit 2."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("formats", help="list the export formats that apply to a labeling config",
                       description="List the export formats that apply to a labeling config, given as a file "
                       "(--label-config) or read from a project of Label Studio's database (--project).")
    p.add_argument("--label-config", metavar="FILE", help="a labeling config XML file")
    p.add_argument("--project", type=int, metavar="ID", help="read this project's labeling config from Label "
                   "Studio's database (--db)")
    add_config_and_db(p, db_help="with --project: Label Studio's database, sqlite:///path/label_studio.sqlite3 "
                      "or postgresql://user:pw@host:port/db (default: the config's db:, else from Label Studio's "
                      "env vars)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = _label_config(args)
    except _Usage as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.label_config}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except LabelConfigError as exc:
        where = f"{args.label_config}: " if args.label_config else ""
        print(f"error: {where}{exc}", file=sys.stderr)
        return 2
    except (ConverterError, SyncdError, *driver_errors()) as exc:
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
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


def _label_config(args: argparse.Namespace) -> LabelConfig:
    """The config the options name; with --project, prints the line naming the project first."""
    if args.label_config is not None:
        if args.project is not None or args.db:
            raise _Usage("pass either --label-config FILE or --project ID (with --db URL), not both")
        return parse_label_config(Path(args.label_config))
    if args.project is None:
        raise _Usage("pass --label-config FILE, or --project ID to read a project's labeling config from "
                     "Label Studio's database (--db URL)")
    url = database_url_or_default(args)
    with open_project(url, args.project) as (_, project):
        config = project_label_config(project, required=True)
    print(f"project {project.id}: {project.title}")
    return config
