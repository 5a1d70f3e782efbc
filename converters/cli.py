"""Command line: ``convert`` and ``formats`` subcommands, to be added to syncd's CLI.

``register(subparsers)`` adds both subcommands to an existing ``argparse`` subparsers object; each
sets ``func`` to a handler ``handler(args) -> int`` returning the exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from . import base
from .base import ConverterError, ConvertOptions
from .label_config import LabelConfig, LabelConfigError, parse_label_config

__all__ = ["InputError", "iter_input_tasks", "main", "register"]

_CHUNK = 1 << 20
_WS = " \t\r\n"


class InputError(ConverterError):
    """The input cannot be read (missing, not JSON, not a task list)."""


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
) -> Iterator[dict]:
    """Task documents from a Label Studio JSON export file or a directory of ``<task_id>.json``.

    A file may hold a JSON array of tasks (streamed, not loaded whole), one task object, or JSON
    lines. Raises :class:`InputError` when the input itself cannot be read. In a directory, a file
    that is not valid JSON is reported through ``warn(task_id, message)`` and skipped.
    """
    p = Path(path)
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


def _load_config(args: argparse.Namespace) -> LabelConfig:
    config_path = args.label_config
    if config_path is None:
        candidate = (Path(args.input) if Path(args.input).is_dir() else Path(args.input).parent) / "label_config.xml"
        if candidate.is_file():
            config_path = str(candidate)
    if config_path is None:
        return parse_label_config("")
    try:
        return parse_label_config(Path(config_path))
    except OSError as exc:
        raise InputError(f"{config_path}: {exc.strerror or exc}") from None


def _zip_dir(src: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel_root = Path(root).relative_to(src)
            if rel_root != Path("."):
                zf.write(root, f"{rel_root.as_posix()}/")
            for name in sorted(files):
                zf.write(Path(root) / name, (rel_root / name).as_posix())


def _warn(task_id: object, message: str) -> None:
    print(f"warning: task {task_id} skipped: {message}", file=sys.stderr)


def cmd_convert(args: argparse.Namespace) -> int:
    try:
        converter = base.get(args.format)
        config = _load_config(args)
        reason = converter.applies_to(config)
        if reason is not None:
            raise base.FormatNotApplicable(converter.name, reason)
        if not Path(args.input).exists():
            raise InputError(f"{args.input}: no such file or directory")
        tasks = iter_input_tasks(args.input, _warn)
        options = ConvertOptions(warn=_warn)
        out = Path(args.out)
        if args.zip:
            target = out if out.suffix == ".zip" else out.with_name(out.name + ".zip")
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                files = converter.convert(tasks, config, Path(tmp), options, check=False)
                _zip_dir(Path(tmp), target)
            print(f"{converter.name}: {len(files)} files -> {target}")
        else:
            files = converter.convert(tasks, config, out, options, check=False)
            print(f"{converter.name}: {len(files)} files -> {out}")
        return 0
    except (ConverterError, LabelConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2


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
        description="Convert a Label Studio JSON export (or a directory of <task_id>.json documents) "
        "to one of Label Studio's export formats.",
    )
    p.add_argument("input", help="Label Studio JSON export file, or a directory of <task_id>.json files")
    p.add_argument("--format", "-f", required=True, help=f"one of: {', '.join(base.names())}")
    p.add_argument("--label-config", help="the project's labeling config XML (default: label_config.xml "
                   "next to INPUT, if any)")
    p.add_argument("--out", "-o", required=True, help="output directory (with --zip: the zip file)")
    p.add_argument("--zip", action="store_true", help="write one zip file instead of a directory")
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
