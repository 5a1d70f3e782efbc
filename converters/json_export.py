"""JSON: Label Studio's own task format, one JSON array of task documents (streamed), each
written as the json module writes it compactly (``ensure_ascii=False``, ``(",", ":")``).

``ConvertOptions.task_shape`` (``syncd convert`` gives ``syncd.document.label_studio_export``:
bare prediction and user ids) is applied to every task first.

A big export file is converted by worker processes, a batch of tasks at a time
(``JsonJob.whole_batch``): decoded by msgspec and encoded again by orjson, which write what the
json module writes for everything but a few floats (such batches, and any that orjson cannot
handle, are encoded task by task). A batch whose output is its own bytes (an export written by
the json module, such as syncd's) is not sent back but copied from the input file by the kernel
(``os.copy_file_range``). Label Studio's own export escapes "/" as "\\/", which the json module
does not, so its batches are encoded again. The output is the same either way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import parallel
from .base import Converter, ConvertOptions, always, register
from .fastio import EXPONENT, replacing, write_all
from .items import task_id_of
from .label_config import LabelConfig

try:  # optional accelerators, never required (without orjson nothing is copied)
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]
try:
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - depends on the environment
    _msgspec = None  # type: ignore[assignment]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# what decodes a batch to check it: msgspec's decoder is the faster (it keeps long integers exact
# and refuses NaN and lone surrogates, as orjson does)
if _msgspec is not None:
    _decode: Callable[[bytes], Any] = _msgspec.json.Decoder().decode
    _DECODE_ERRORS: tuple[type[Exception], ...] = (_msgspec.DecodeError,)
elif _orjson is not None:  # pragma: no cover - depends on the environment
    _decode = _orjson.loads
    _DECODE_ERRORS = (_orjson.JSONDecodeError,)

TaskShape = Callable[[dict], dict]


class JsonJob:
    """One task -> its JSON text (bytes); a chunk is the texts of consecutive tasks joined by
    "," (bytes), or, for a whole batch whose output is its own bytes, its place in the input
    file (offset, length): the bytes to copy."""

    def __init__(self, task_shape: TaskShape | None) -> None:
        self.task_shape = task_shape

    def process(self, task: Any, warn: Callable[[object, str], None], main: bool) -> bytes | None:
        if not isinstance(task, dict):
            warn(task_id_of(task), getattr(task, "reason", "task is not a JSON object"))
            return None
        if self.task_shape is not None:
            task = self.task_shape(task)
        try:
            return _dumps(task).encode("utf-8")
        except (TypeError, ValueError) as exc:  # (UnicodeEncodeError: a lone surrogate)
            warn(task_id_of(task), f"cannot serialise task: {exc}")
            return None

    def combine(self, payloads: list[bytes]) -> bytes:
        return b",".join(payloads)

    def whole_batch(self, array: memoryview, offset: int, length: int) -> tuple[int, int] | bytes | None:
        """The chunk of a whole batch of tasks, ``array`` (``[`` + its bytes + ``]``), encoded by
        orjson where that gives the json module's bytes: (offset, length) when those are the
        batch's own bytes (to be copied), else the bytes; None to process the tasks one by one
        (what orjson cannot decode or encode as the json module does, an element that is not a
        task)."""
        if _orjson is None:
            return None
        try:
            tasks = _decode(array)
        except _DECODE_ERRORS:
            return None  # (NaN, a lone surrogate, invalid JSON: the usual way says what it is)
        shape = self.task_shape
        for i, task in enumerate(tasks):
            if type(task) is not dict:
                return None  # (a list of tasks, a number...: the usual way expands or warns)
            if shape is not None:
                tasks[i] = shape(task)
        try:
            out = _orjson.dumps(tasks)
        except TypeError:  # an integer beyond 64 bits, nesting orjson refuses, a shape's own type
            return None
        if b"0.0000" in out or EXPONENT.search(out) is not None:
            return None  # a float the json module writes with an exponent (or a string like one)
        if out == array:
            return (offset, length)  # compact, the same escapes and numbers, no duplicate keys
        return out[1:-1]


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Append ``length`` bytes of ``src_fd`` from ``offset`` to ``dst_fd`` (in the kernel when it can)."""
    while length > 0:
        try:
            done = os.copy_file_range(src_fd, dst_fd, length, offset)
        except (AttributeError, OSError):  # no copy_file_range (or not across these file systems)
            done = 0
        if done <= 0:
            data = os.pread(src_fd, min(length, 1 << 20), offset)
            if not data:
                raise OSError(f"the input file ended {length} bytes early (was it changed while converting?)")
            write_all(dst_fd, data)
            done = len(data)
        offset += done
        length -= done


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    path = out_dir / "result.json"
    job = JsonJob(options.task_shape)
    src_fd = -1
    if isinstance(tasks, parallel.ArrayFile):
        src_fd = os.open(tasks.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        with replacing(path) as out:
            fd = out.fileno()
            pending: list[bytes] = [b"["]  # written with os.write, in order with the copies
            size = 1
            first = True
            for chunk in parallel.results(tasks, "JSON", job, options):
                if not chunk:
                    continue
                if not first:
                    pending.append(b",")
                first = False
                if isinstance(chunk, tuple):
                    write_all(fd, b"".join(pending))
                    pending, size = [], 0
                    _copy_range(src_fd, fd, chunk[0], chunk[1])
                    continue
                pending.append(chunk)
                size += len(chunk)
                if size >= 1 << 20:
                    write_all(fd, b"".join(pending))
                    pending, size = [], 0
            pending.append(b"]")
            write_all(fd, b"".join(pending))
    finally:
        if src_fd >= 0:
            os.close(src_fd)
    return [path]


CONVERTER = register(
    Converter(
        name="JSON",
        description="Label Studio's common format: the full task documents in one JSON array.",
        applies_to=always,
        convert_fn=convert,
        extension="json",
    )
)

parallel.register_job("JSON")
