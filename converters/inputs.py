"""Reading Label Studio task documents: a JSON export file (streamed) or a directory of
``<task_id>.json`` documents."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import jsonstream, parallel
from .base import ConverterError, _default_warn

__all__ = ["InputError", "iter_input_tasks"]

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
    decoder = jsonstream.STRICT
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

    A JSON array file is returned as a ``parallel.ArrayFile``, which the per-task formats may
    convert with several worker processes (with orjson installed). A task in it that cannot be
    decoded (nested too deep, holding NaN), and bytes after the array, come as
    ``jsonstream.Unreadable``: converters warn of them and go on.
    """
    p = Path(path)
    if p.is_file():
        try:
            first = _first_byte(p)
        except OSError as exc:
            raise InputError(f"{p}: {exc.strerror or exc}") from None
        if first == 0x5B:  # "[": a JSON array (Label Studio's export), streamed by jsonstream
            return parallel.ArrayFile(p, _CHUNK, on_error=lambda exc: InputError(f"{p}: {exc}"))
    return _iter_tasks(p, warn)


def _iter_tasks(p: Path, warn: Callable[[object, str], None] | None) -> Iterator[dict]:
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.suffix == ".json" and f.is_file()), key=_dir_sort_key)
        for f in files:
            try:
                doc = jsonstream.strict_loads(f.read_text(encoding="utf-8"))
            except jsonstream.NonFinite as exc:
                (warn or _default_warn)(int(f.stem) if f.stem.isdigit() else f.stem,
                                        f"{f.name}: holds what JSON cannot: {exc}")
                continue
            except RecursionError:
                (warn or _default_warn)(int(f.stem) if f.stem.isdigit() else f.stem,
                                        f"{f.name}: nests deeper than {sys.getrecursionlimit()} levels")
                continue
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                (warn or _default_warn)(int(f.stem) if f.stem.isdigit() else f.stem, f"{f.name}: {exc}")
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
    except RecursionError:
        raise InputError(f"{p}: a value nests deeper than {sys.getrecursionlimit()} levels") from None
    except jsonstream.NonFinite as exc:
        raise InputError(f"{p}: holds what JSON cannot: {exc}") from None
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror or exc}") from None
