"""Arguments several subcommands share, and reading the configuration they name."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator

from converters import LabelConfig, LabelConfigError, parse_label_config
from syncd import logs
from syncd.config import Config, find_config
from syncd.errors import SourceError
from syncd.session import OVERRIDABLE, load_config, open_cfg_source
from syncd.sources import Project, Source, is_directory
from syncd.sources.labelstudio.database import default_db_url

log = logging.getLogger("syncd")


def add_common(parser: argparse.ArgumentParser) -> None:
    add_config_and_db(parser)
    parser.add_argument("--target", metavar="URL", help="where documents go: a directory, file:///dir, "
                        "s3://bucket/prefix, gs://bucket/prefix or azure://container/prefix")
    parser.add_argument("--state", metavar="PATH", help="checkpoint file (default: "
                        "$XDG_STATE_HOME/syncd/<target>.sqlite3)")
    parser.add_argument("--log-format", choices=("text", "json"), help="log lines as text or JSON")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: a line per object written, deleted or orphaned; -vv: debug lines too")


DB_HELP = ("Label Studio database: sqlite:///path/label_studio.sqlite3 or postgresql://user:pw@host:port/db, "
           "or dir:///path (default: the config's db:, else from Label Studio's env vars)")


def add_config_and_db(parser: argparse.ArgumentParser, db_help: str = DB_HELP) -> None:
    """``--config`` and ``--db`` (what a command that only reads Label Studio's database takes)."""
    parser.add_argument("--config", metavar="PATH", help="YAML config file (see config.example.yaml; default: "
                        "$SYNCD_CONFIG, ./syncd.yaml, $XDG_CONFIG_HOME/syncd/config.yaml or /etc/syncd/config.yaml, "
                        "the first that exists)")
    parser.add_argument("--db", metavar="URL", help=db_help)


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


def database_url(args: argparse.Namespace) -> str | None:
    """The database named for a command that only reads it: ``--db``, else ``db:`` of the config
    file (``--config`` or the one found); None: neither names one."""
    if args.db:
        return args.db
    path = args.config or find_config()
    return load_config(path, need_target=False).db if path else None


def database_url_or_default(args: argparse.Namespace) -> str:
    """``database_url``, else the database Label Studio's env vars name (as ``resync`` finds it)."""
    return database_url(args) or default_db_url()


@contextlib.contextmanager
def open_project(url: str, project_id: int) -> Iterator[tuple[Source, Project]]:
    """One project of Label Studio's database, and its source, open until the block ends (documents
    in the shape of Label Studio's export: prediction ids). An unknown id is a ``SourceError``
    listing the projects there are."""
    if is_directory(url):
        raise SourceError(f"{url}: a directory of task files has no projects or labeling configs; give Label "
                          "Studio's database (sqlite:///path/label_studio.sqlite3 or postgresql://...)")
    source = open_cfg_source(Config(db=url), predictions="ids")
    try:
        projects = source.projects()
        project = projects.get(project_id)
        if project is None:
            known = ", ".join(f"{p.id} ({p.title})" for p in projects.values()) or "none"
            raise SourceError(f"{source.url}: no project {project_id}; projects: {known}")
        yield source, project
    finally:
        source.close()


def project_label_config(project: Project, *, required: bool = False) -> LabelConfig:
    """The project's labeling config, parsed; ``required``: an empty one is an error (a project
    created without choosing a template has none)."""
    if project.label_config_error:
        raise LabelConfigError(f"project {project.id} ({project.title}): {project.label_config_error}")
    if required and not (project.label_config or "").strip():
        raise LabelConfigError(f"project {project.id} ({project.title}) has no labeling config; set one in "
                               "Label Studio (Settings > Labeling Interface) or pass --label-config FILE")
    return parse_label_config(project.label_config or "")
