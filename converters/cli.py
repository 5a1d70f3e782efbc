"""Command line: ``convert`` and ``formats`` subcommands, to be added to syncd's CLI.

``register(subparsers)`` adds both subcommands to an existing ``argparse`` subparsers object; each
sets ``func`` to a handler ``handler(args) -> int`` returning the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import base, jsonstream, parallel
from .base import ConverterError, ConvertOptions
from .fastio import zip_dir
from .label_config import LabelConfig, LabelConfigError, parse_label_config

__all__ = ["InputError", "is_database_url", "iter_input_tasks", "main", "register"]

_CHUNK = 1 << 20
_WS = " \t\r\n"


class InputError(ConverterError):
    """The input cannot be read (missing, not JSON, not a task list)."""


def _first_byte(path: Path) -> int | None:
    with open(path, "rb") as f:
        while True:
            block = f.read(4096)
            if not block:
                return None
            stripped = block.lstrip(b" \t\r\n")
            if stripped:
                return stripped[0]


def _iter_json_values(path: Path) -> Iterator[object]:
    """Stream the elements of a top-level JSON array, or consecutive top-level JSON values."""
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8") as f:
        buf = f.read(_CHUNK)
        pos = 0
        eof = not buf

        def fill() -> bool:
            nonlocal buf, pos, eof
            more = f.read(max(_CHUNK, len(buf) - pos))
            if not more:
                eof = True
                return False
            buf = buf[pos:] + more
            pos = 0
            return True

        def skip_ws() -> None:
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in _WS:
                    pos += 1
                if pos < len(buf) or not fill():
                    return

        skip_ws()
        if pos >= len(buf):
            raise InputError(f"{path}: file is empty")
        in_array = buf[pos] == "["
        if in_array:
            pos += 1
            skip_ws()
            if pos < len(buf) and buf[pos] == "]":
                return
        while True:
            skip_ws()
            if pos >= len(buf):
                if in_array:
                    raise InputError(f"{path}: unexpected end of file inside the task array")
                return
            while True:
                try:
                    value, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if eof or not fill():
                        raise InputError(f"{path}: invalid JSON ({exc.msg} near character {exc.pos})") from None
                    continue
                if end == len(buf) and not eof and fill():
                    continue  # a number may continue in the next chunk: decode again
                break
            pos = end
            yield value
            skip_ws()
            if not in_array:
                continue
            if pos < len(buf) and buf[pos] == ",":
                pos += 1
                continue
            if pos < len(buf) and buf[pos] == "]":
                return
            raise InputError(f"{path}: expected ',' or ']' after a task")


def _dir_sort_key(p: Path) -> tuple[int, int, str]:
    stem = p.stem
    return (0, int(stem), "") if stem.isdigit() else (1, 0, p.name)


def iter_input_tasks(
    path: str | os.PathLike[str], warn: Callable[[object, str], None] | None = None
) -> Iterable[dict]:
    """Task documents from a Label Studio JSON export file or a directory of ``<task_id>.json``.

    A file may hold a JSON array of tasks (streamed, not loaded whole), one task object, or JSON
    lines. Raises :class:`InputError` when the input itself cannot be read. In a directory, a file
    that is not valid JSON is reported through ``warn(task_id, message)`` and skipped.

    A JSON array file (with orjson installed) is returned as a ``parallel.ArrayFile``, which the
    per-task formats may convert with several worker processes.
    """
    p = Path(path)
    if p.is_file() and jsonstream.have_orjson():
        try:
            first = _first_byte(p)
        except OSError as exc:
            raise InputError(f"{p}: {exc.strerror or exc}") from None
        if first == 0x5B:  # "[": a JSON array
            return parallel.ArrayFile(p, _CHUNK, on_error=lambda exc: InputError(f"{p}: {exc}"))
    return _iter_tasks(p, warn)


def _iter_tasks(p: Path, warn: Callable[[object, str], None] | None) -> Iterator[dict]:
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix == ".json" and f.is_file()), key=_dir_sort_key)
        for f in files:
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                (warn or _warn)(int(f.stem) if f.stem.isdigit() else f.stem, f"{f.name}: {exc}")
                continue
            if isinstance(doc, list):
                yield from doc
            else:
                yield doc
        return
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    try:
        for value in _iter_json_values(p):
            if isinstance(value, list):
                yield from value
            else:
                yield value  # type: ignore[misc]
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror or exc}") from None


_DB_SCHEMES = ("sqlite://", "postgresql://", "postgres://", "pgsql://")
_DB_SUFFIXES = (".sqlite3", ".sqlite", ".db")


def is_database_url(value: str) -> bool:
    """True for ``sqlite:///...``, ``postgresql://...`` and a plain ``*.sqlite3`` file path."""
    if value.lower().startswith(_DB_SCHEMES):
        return True
    return "://" not in value and value.lower().endswith(_DB_SUFFIXES) and not Path(value).is_dir()


class _DropBundleWarnings(logging.Filter):
    """Hides ``iter_project_tasks``'s "left out of the bundles" warning (we print our own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("bundles of project")


@contextlib.contextmanager
def _database_tasks(url: str, project_id: int | None, label_config: str | None,
                    warn: Callable[[object, str], None]) -> Iterator[tuple[LabelConfig, Iterator[dict]]]:
    """(label config, task documents) of one project of a Label Studio database.

    Uses syncd's own reader, so documents are exactly what syncd stores (predictions as ids, as
    in Label Studio's export); only labeled tasks (with at least one annotation row) are read.
    """
    if project_id is None:
        raise InputError(f"{_mask(url)}: --project ID is required when INPUT is a database")
    from syncd.bundles import iter_project_tasks
    from syncd.database import connect
    from syncd.document import DocumentOptions
    from syncd.source import LabelStudioSource

    db = connect(url)
    filt = _DropBundleWarnings()
    syncd_log = logging.getLogger("syncd")
    syncd_log.addFilter(filt)
    try:
        source = LabelStudioSource(db)
        projects = source.projects()
        project = projects.get(project_id)
        if project is None:
            known = ", ".join(f"{p.id} ({p.title})" for p in projects.values()) or "none"
            raise InputError(f"{db.url}: no project {project_id}; projects: {known}")
        if label_config is not None:
            config = _read_config_file(label_config)
        else:
            config = parse_label_config(project.label_config or "")
        tasks = iter_project_tasks(source, project.id, DocumentOptions(predictions="ids"), project=project,
                                   on_bad=lambda exc: warn(exc.task_id, str(exc)))
        yield config, tasks
    finally:
        syncd_log.removeFilter(filt)
        db.close()


def _mask(url: str) -> str:
    try:
        from syncd.database import mask_url
    except ImportError:  # pragma: no cover - converters used without syncd
        return url
    return mask_url(url)


def _read_config_file(path: str) -> LabelConfig:
    try:
        return parse_label_config(Path(path))
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def _load_config(args: argparse.Namespace) -> LabelConfig:
    config_path = args.label_config
    if config_path is None:
        candidate = (Path(args.input) if Path(args.input).is_dir() else Path(args.input).parent) / "label_config.xml"
        if candidate.is_file():
            config_path = str(candidate)
    if config_path is None:
        return parse_label_config("")
    return _read_config_file(config_path)


def _warn(task_id: object, message: str) -> None:
    print(f"warning: task {task_id} skipped: {message}", file=sys.stderr)


def _syncd_errors() -> tuple[type[BaseException], ...]:
    """syncd's user-facing errors and the database drivers' errors (when syncd is importable)."""
    try:
        from syncd.database import driver_errors
        from syncd.errors import SyncdError
    except ImportError:  # pragma: no cover - converters used without syncd
        return ()
    return (SyncdError, *driver_errors())


IMAGE_FORMATS = ("COCO", "VOC", "YOLO", "YOLO_OBB")


def _image_warn(task_id: object, url: str, reason: str) -> None:
    print(f"warning: task {task_id}: image {url} not downloaded: {reason}", file=sys.stderr)


def _convert_tasks(args: argparse.Namespace, converter: base.Converter, config: LabelConfig,
                   tasks: Iterable[dict]) -> None:
    reason = converter.applies_to(config)
    if reason is not None:
        raise base.FormatNotApplicable(converter.name, reason)
    download = getattr(args, "download_images", False)
    if download and converter.name not in IMAGE_FORMATS:
        raise InputError(f"--download-images applies to {', '.join(IMAGE_FORMATS)}, not {converter.name}")
    options = ConvertOptions(warn=_warn, workers=getattr(args, "workers", None))
    out = Path(args.out)

    def run(target: Path) -> list[Path]:
        if not download:
            return converter.convert(tasks, config, target, options, check=False)
        from .images import ImageFetcher, prefetch

        target.mkdir(parents=True, exist_ok=True)
        with ImageFetcher(target / "images", workers=max(1, args.download_workers)) as fetcher:
            fetched, options.image_info = prefetch(tasks, fetcher, config.data_keys[0], _image_warn)
            return converter.convert(fetched, config, target, options, check=False)

    if args.zip:
        target = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            files = run(Path(tmp))
            zip_dir(Path(tmp), target)
        print(f"{converter.name}: {len(files)} files -> {target}")
    else:
        files = run(out)
        print(f"{converter.name}: {len(files)} files -> {out}")


def cmd_convert(args: argparse.Namespace) -> int:
    project = getattr(args, "project", None)
    try:
        converter = base.get(args.format)
        if is_database_url(args.input):
            with _database_tasks(args.input, project, args.label_config, _warn) as (config, tasks):
                _convert_tasks(args, converter, config, tasks)
            return 0
        if project is not None:
            raise InputError(f"{args.input}: --project only applies when INPUT is a database "
                             "(sqlite:///path/label_studio.sqlite3, postgresql://...)")
        config = _load_config(args)
        reason = converter.applies_to(config)
        if reason is not None:
            raise base.FormatNotApplicable(converter.name, reason)
        if not Path(args.input).exists():
            raise InputError(f"{args.input}: no such file or directory")
        _convert_tasks(args, converter, config, iter_input_tasks(args.input, _warn))
        return 0
    except (ConverterError, LabelConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except _syncd_errors() as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def cmd_formats(args: argparse.Namespace) -> int:
    try:
        config = parse_label_config(Path(args.label_config))
    except OSError as exc:
        print(f"error: {args.label_config}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except LabelConfigError as exc:
        print(f"error: {args.label_config}: {exc}", file=sys.stderr)
        return 2
    width = max(len(n) for n in base.names())
    for name in base.names():
        converter = base.get(name)
        reason = converter.applies_to(config)
        if reason is None:
            print(f"{name:<{width}}  yes  {converter.description}")
        else:
            print(f"{name:<{width}}  no   {reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``convert`` and ``formats`` subcommands to ``subparsers``."""
    p = subparsers.add_parser(
        "convert",
        help="convert Label Studio tasks to an export format (COCO, YOLO, CSV, ...)",
        description="Convert a Label Studio JSON export, a directory of <task_id>.json documents, or one "
        "project of Label Studio's database (with --project) to one of Label Studio's export formats.",
    )
    p.add_argument("input", help="Label Studio JSON export file, a directory of <task_id>.json files, or "
                   "Label Studio's database (sqlite:///path/label_studio.sqlite3, a *.sqlite3 file, "
                   "postgresql://user:pw@host:port/db)")
    p.add_argument("--project", type=int, metavar="ID", help="project id (required when INPUT is a database; "
                   "its labeled tasks and its labeling config are read)")
    p.add_argument("--format", "-f", required=True, help=f"one of: {', '.join(base.names())}")
    p.add_argument("--label-config", help="the project's labeling config XML (default: the project's config "
                   "for a database, else label_config.xml next to INPUT, if any)")
    p.add_argument("--out", "-o", required=True, help="output directory (with --zip: the zip file)")
    p.add_argument("--zip", action="store_true", help="write one zip file instead of a directory")
    p.add_argument("--download-images", action="store_true",
                   help="COCO, VOC, YOLO, YOLO_OBB: fetch the tasks' http(s), s3://, gs:// and azure-blob:// "
                   "images into images/ (as Label Studio's *_WITH_IMAGES exports do) and read image sizes "
                   "(COCO) and channels (VOC) from them; "
                   "an image that fails gives a warning")
    p.add_argument("--download-workers", type=int, default=8, metavar="N",
                   help="images fetched at once with --download-images (default 8)")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes for CONLL2003, CSV, TSV, COCO and "
                   "YOLO on a big JSON export (default: one per CPU, up to 4, from 32 MB on; 0: none)")
    p.set_defaults(func=cmd_convert)

    q = subparsers.add_parser("formats", help="list the export formats that apply to a labeling config")
    q.add_argument("--label-config", required=True, help="the project's labeling config XML")
    q.set_defaults(func=cmd_formats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m converters")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
