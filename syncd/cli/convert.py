"""``syncd convert``: Label Studio tasks (an export file, a directory of documents, or one
project of Label Studio's database) to one of Label Studio's export formats."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import converters
from converters import ConverterError, ConvertOptions, LabelConfig, LabelConfigError, parse_label_config
from converters.fastio import zip_dir
from converters.inputs import InputError, iter_input_tasks
from syncd.cli.args import add_config_and_db, database_url, database_url_or_default, open_project, project_label_config
from syncd.document import label_studio_export
from syncd.errors import BadTask, SyncdError
from syncd.sources.labelstudio.database import driver_errors, mask_url

IMAGE_FORMATS = ("COCO", "VOC", "YOLO", "YOLO_OBB")
_DB_SCHEMES = ("sqlite://", "postgresql://", "postgres://", "pgsql://")
_DB_SUFFIXES = (".sqlite3", ".sqlite", ".db")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "convert",
        help="convert Label Studio tasks to an export format (COCO, YOLO, CSV, ...)",
        description="Convert a Label Studio JSON export, a directory of <task_id>.json documents, or one "
        "project of Label Studio's database (with --project) to one of Label Studio's export formats.",
    )
    p.add_argument("input", nargs="?", help="Label Studio JSON export file, a directory of <task_id>.json files "
                   "(a synced target copied locally; with --project, only that project's tasks), or Label Studio's "
                   "database (sqlite:///path/label_studio.sqlite3, a *.sqlite3 file, "
                   "postgresql://user:pw@host:port/db); default: the database of --db")
    p.add_argument("--project", type=int, metavar="ID", help="project id (required for a database: its labeled tasks "
                   "and its labeling config are read; with a directory: convert only this project's tasks)")
    add_config_and_db(p, db_help="Label Studio's database when INPUT is not given, or, with a directory INPUT and "
                      "--project, the database whose project's labeling config to use; sqlite:///path/label_studio."
                      "sqlite3 or postgresql://user:pw@host:port/db (default: the config's db:; without INPUT, else "
                      "from Label Studio's env vars)")
    p.add_argument("--format", "-f", required=True, help=f"one of: {', '.join(converters.names())}")
    p.add_argument("--label-config", metavar="FILE", help="the project's labeling config XML (default: the "
                   "project's config for a database or with --db, else label_config.xml next to INPUT, if any)")
    p.add_argument("--out", "-o", required=True, help="output directory (with --zip: the zip file)")
    p.add_argument("--zip", action="store_true", help="write one zip file instead of a directory")
    p.add_argument("--download-images", action="store_true",
                   help="COCO, VOC, YOLO, YOLO_OBB: fetch the tasks' http(s), s3://, gs:// and azure-blob:// "
                   "images into images/ (as Label Studio's *_WITH_IMAGES exports do) and read image sizes "
                   "(COCO) and channels (VOC) from them; an image that fails gives a warning")
    p.add_argument("--download-workers", type=int, default=8, metavar="N",
                   help="images fetched at once with --download-images (default 8)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes for a big JSON export (every format "
                   "but the brush ones and ASR_MANIFEST; default: one per CPU, up to 4, from 32 MB on; 0: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """0: every task converted; 1: some were skipped (each named on stderr); 2: nothing could be."""
    warn.count = 0
    try:
        converter = converters.get(args.format)
        database = args.input is not None and is_database_url(args.input)
        if database and args.db:
            raise InputError(f"{mask_url(args.input)}: the database is given twice (INPUT and --db); give one")
        if args.input is None and args.project is None and database_url(args) is None:
            raise InputError("nothing to convert: give INPUT (a JSON export, a directory of <task_id>.json, a "
                             "database) or --db URL --project ID")
        if args.input is None or database:
            url = args.input if database else database_url_or_default(args)
            with _database_tasks(url, args.project, args.label_config) as (config, tasks):
                _convert(args, converter, config, tasks)
            return 1 if warn.count else 0
        if args.project is None:
            if args.db:
                raise InputError(f"{args.input}: --db applies when converting one project (--project ID)")
            config = _config_next_to(args)
        else:
            if not Path(args.input).is_dir():
                raise InputError(f"{args.input}: --project applies to a database or a directory of <task_id>.json "
                                 "documents (an export file holds one project's tasks already)")
            config = _directory_project_config(args)
        reason = converter.applies_to(config)
        if reason is not None:
            raise converters.FormatNotApplicable(converter.name, reason)
        if not Path(args.input).exists():
            raise InputError(f"{args.input}: no such file or directory")
        tasks = iter_input_tasks(args.input, warn)
        if args.project is not None:
            tasks = _tasks_of_project(tasks, args.project, args.input)
        _convert(args, converter, config, tasks)
        return 1 if warn.count else 0
    except (ConverterError, LabelConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"error: {args.input}: a value in it is too large to read into this machine's memory (a JSON "
              "value is read whole); split the export or convert from the database with --project", file=sys.stderr)
        return 2
    except (SyncdError, *driver_errors()) as exc:
        print(f"error: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 2


def is_database_url(value: str) -> bool:
    """True for ``sqlite:///...``, ``postgresql://...`` and a plain ``*.sqlite3`` file path."""
    if value.lower().startswith(_DB_SCHEMES):
        return True
    return "://" not in value and value.lower().endswith(_DB_SUFFIXES) and not Path(value).is_dir()


class _Warn:
    """Prints one line per skipped task and counts them (for the exit code)."""

    count = 0

    def __call__(self, task_id: object, message: str) -> None:
        self.count += 1
        print(f"warning: task {task_id} skipped: {message}" if task_id is not None else f"warning: {message}",
              file=sys.stderr)


warn = _Warn()


def read_label_config(path: str) -> LabelConfig:
    try:
        return parse_label_config(Path(path))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _database_tasks(url: str, project_id: int | None,
                    label_config: str | None) -> Iterator[tuple[LabelConfig, Iterator[dict]]]:
    """(label config, task documents) of one project of a Label Studio database.

    The documents are exactly what syncd stores, in Label Studio's export shape (predictions as
    ids); only labeled tasks (with at least one annotation row) are read."""
    if project_id is None:
        raise InputError(f"{mask_url(url)}: --project ID is required to convert from a database")
    with open_project(url, project_id) as (source, project):
        config = read_label_config(label_config) if label_config else project_label_config(project)
        yield config, _documents(source.documents(project_ids=[project_id]))


def _directory_project_config(args: argparse.Namespace) -> LabelConfig:
    """The labeling config for one project's tasks of a directory: --label-config, else the
    project's in the database of --db (or the config's db:). A synced target holds task documents
    only, not the config, and a directory may hold several projects', so nothing next to it says."""
    if args.label_config:
        return read_label_config(args.label_config)
    url = database_url(args)
    if url is None:
        raise InputError(f"{args.input}: task documents carry no labeling config; pass --label-config FILE, or "
                         f"--db URL to read project {args.project}'s from Label Studio's database")
    with open_project(url, args.project) as (_, project):
        return project_label_config(project)


def _tasks_of_project(tasks: Iterable[object], project_id: int, where: str) -> Iterator[object]:
    """The tasks of ``project_id`` (documents carry ``project``) in a directory that may hold several
    projects' (a synced target). Values that are not task objects pass, for the converter to report;
    documents without a project are left out with one warning, so none goes missing unsaid."""
    kept, unattributed, others = 0, 0, set()
    for task in tasks:
        if not isinstance(task, dict):
            yield task
            continue
        project = task.get("project")
        if project == project_id:
            kept += 1
            yield task
        elif project is None:
            unattributed += 1
        else:
            others.add(str(project))
    if unattributed:
        warn(None, f"{where}: {unattributed} document(s) name no project; left out")
    if not kept:
        found = ", ".join(sorted(others, key=lambda p: (len(p), p))) or "none"
        warn(None, f"{where}: no task of project {project_id} (projects found: {found})")


def _documents(documents: Iterable) -> Iterator[dict]:
    import json

    for doc in documents:
        if isinstance(doc, BadTask):
            warn(doc.task_id, str(doc))
            continue
        yield json.loads(doc.body)


def _config_next_to(args: argparse.Namespace) -> LabelConfig:
    config_path = args.label_config
    if config_path is None:
        candidate = (Path(args.input) if Path(args.input).is_dir() else Path(args.input).parent) / "label_config.xml"
        if candidate.is_file():
            config_path = str(candidate)
    return read_label_config(config_path) if config_path else parse_label_config("")


def _image_warn(task_id: object, url: str, reason: str) -> None:
    print(f"warning: task {task_id}: image {url} not downloaded: {reason}", file=sys.stderr)


def _convert(args: argparse.Namespace, converter: converters.Converter, config: LabelConfig,
             tasks: Iterable[dict]) -> None:
    reason = converter.applies_to(config)
    if reason is not None:
        raise converters.FormatNotApplicable(converter.name, reason)
    download = args.download_images
    if download and converter.name not in IMAGE_FORMATS:
        raise InputError(f"--download-images applies to {', '.join(IMAGE_FORMATS)}, not {converter.name}")
    # JSON: Label Studio's export shape (bare prediction and user ids), applied by the converter,
    # which copies the input's bytes where the shape changes nothing
    shape = label_studio_export if converter.name == "JSON" else None
    options = ConvertOptions(warn=warn, workers=args.workers, task_shape=shape)
    out = Path(args.out)

    def run_into(target: Path) -> list[Path]:
        if not download:
            return converter.convert(tasks, config, target, options, check=False)
        from converters.images import ImageFetcher, prefetch
        from syncd.stores.fetch import CloudReader

        target.mkdir(parents=True, exist_ok=True)
        reader = CloudReader(transfers=max(1, args.download_workers))
        try:
            with ImageFetcher(target / "images", workers=max(1, args.download_workers), read_cloud=reader) as fetcher:
                fetched, options.image_info = prefetch(tasks, fetcher, config.data_keys[0], _image_warn)
                return converter.convert(fetched, config, target, options, check=False)
        finally:
            reader.close()

    _write(converter, out, args.zip, run_into)


def _write(converter: converters.Converter, out: Path, as_zip: bool, run_into: Callable[[Path], list[Path]]) -> None:
    if as_zip:
        target = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            count = len(run_into(Path(tmp)))  # (a folder's files are counted while it is there)
            zip_dir(Path(tmp), target)
        print(f"{converter.name}: {_files(count)} -> {target}")
    else:
        files = run_into(out)
        print(f"{converter.name}: {_files(len(files))} -> {out}")


def _files(count: int) -> str:
    return "1 file" if count == 1 else f"{count:,} files"
