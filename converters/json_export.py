"""JSON: Label Studio's own task format, one JSON array of task documents (streamed).

``ConvertOptions.task_shape`` (``syncd convert`` gives ``syncd.document.label_studio_export``:
bare prediction and user ids) is applied to every task first.

Tasks given one by one (syncd's documents, a database) are written as the json module writes
them compactly (``ensure_ascii=False``, ``(",", ":")``). An export file is read in batches of
about 1 MB of tasks (``JsonJob.whole_batch``; by worker processes when it is big). A batch whose
tasks the shape leaves unchanged is copied from the input file as it is, by the kernel
(``os.copy_file_range``): escapes, numbers, key order and white space as the input has them. So
Label Studio's export comes out byte for byte as it went in, as label-studio-sdk's JSON
"conversion" (a copy of the file) gives it, its "\\/" escapes included. With msgspec, a batch is
first decoded with a type that only unchanged tasks fit (``task_shape.unchanged_type``),
skipping the rest of each task; one that does not fit is decoded whole. A batch whose tasks the
shape changes (syncd's documents in a file) is encoded again as the json module writes it: by
orjson where its bytes are the same, task by task where they are not (a float written with an
exponent). A worker writes such a batch to a hidden part file beside the result, which the main
process copies in the same way and removes. Batches are cut the same way with and without
workers, so the output is the same.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple, TypedDict

from . import parallel
from .base import Converter, ConvertOptions, always, register
from .fastio import exact_orjson, replacing, write_all
from .items import task_id_of
from .jsonstream import strict_loads
from .label_config import LabelConfig

try:  # optional accelerators, never required
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]
try:
    import msgspec as _msgspec
except ImportError:  # pragma: no cover - depends on the environment
    _msgspec = None  # type: ignore[assignment]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


# what decodes a batch: msgspec's decoder is the fastest (it keeps long integers exact and refuses
# NaN and lone surrogates, as orjson does); the json module's refuses NaN too
if _msgspec is not None:
    _decode: Callable[[bytes], Any] = _msgspec.json.Decoder().decode
    _DECODE_ERRORS: tuple[type[Exception], ...] = (_msgspec.DecodeError,)
elif _orjson is not None:  # pragma: no cover - depends on the environment
    _decode = _orjson.loads
    _DECODE_ERRORS = (_orjson.JSONDecodeError,)
else:  # pragma: no cover - depends on the environment
    _decode = strict_loads
    _DECODE_ERRORS = (ValueError,)  # (also NonFinite and UnicodeDecodeError)

TaskShape = Callable[[dict], dict]


class Span(NamedTuple):
    """A chunk that is bytes of a file, to be copied into the output by the kernel: of the input
    (``part`` None), or all of a part file that a worker wrote (``part``: the batch's offset in
    the input, which names the file)."""

    part: int | None
    offset: int
    length: int


class JsonJob:
    """One task -> its JSON text (bytes); a chunk is the texts of consecutive tasks joined by
    ",", as bytes or, for a whole batch of an export file (``whole_batch``), as a ``Span``."""

    def __init__(self, task_shape: TaskShape | None, part_prefix: str | None = None) -> None:
        self.task_shape = task_shape
        self.part_prefix = part_prefix  # path prefix of the workers' part files (None: none)
        # a decoder of a batch that fits only tasks the shape leaves unchanged (None: decode them
        # whole and see)
        fits = _Task if task_shape is None else getattr(task_shape, "unchanged_type", None)
        self.unchanged = _msgspec.json.Decoder(list[fits]) if _msgspec is not None and fits is not None else None

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

    def whole_batch(self, array: memoryview, offset: int, length: int, main: bool) -> Span | bytes | None:
        """The chunk of a whole batch of tasks, ``array`` (``[`` + its bytes + ``]``), when it is
        UTF-8 JSON and every element is a task; None to process the tasks one by one (the usual
        way warns of what is wrong, or expands a list of tasks).

        When the shape changes no task, the batch as it is: its own span of the input. With
        msgspec, the batch is first decoded with ``task_shape.unchanged_type`` (which skips all
        the rest of each task); only a batch that does not fit it is decoded whole, to see.
        Otherwise the shaped tasks encoded again (``_encode``; None when they cannot be), which
        a worker writes to a part file for the main process to copy (instead of sending the
        bytes through a pipe in pieces, each a hand-over between processes, slow on a busy
        machine)."""
        raw = array.tobytes()  # (bytes.isascii; memoryviews have none)
        try:
            if not raw.isascii():
                raw.decode("utf-8")  # (msgspec does not check the strings it skips)
            tasks = None
            if self.unchanged is not None:
                try:
                    self.unchanged.decode(raw)
                except _msgspec.ValidationError:
                    tasks = _decode(raw)
            else:
                tasks = _decode(raw)
        except (ValueError, *_DECODE_ERRORS):  # (NaN, invalid JSON or UTF-8: ValueError, DecodeError)
            return None
        if tasks is None:
            return Span(None, offset, length)
        shape = self.task_shape
        shaped = False
        for i, task in enumerate(tasks):
            if type(task) is not dict:
                return None
            if shape is not None:
                tasks[i] = shape(task)
                shaped = shaped or tasks[i] is not task
        if not shaped:
            return Span(None, offset, length)
        out = _encode(tasks)
        if out is None:
            return None
        if main or self.part_prefix is None:
            return out[1:-1]
        fd = os.open(f"{self.part_prefix}{offset}", _PART_FLAGS, 0o600)
        try:
            write_all(fd, memoryview(out)[1:-1])
        finally:
            os.close(fd)
        return Span(offset, 0, len(out) - 2)


class _Task(TypedDict, total=False):
    """A task, of which nothing is read (it is decoded to know that it is a JSON object)."""


def _encode(tasks: list[dict]) -> bytes | None:
    """The json module's compact JSON of ``tasks`` (which hold no NaN or Infinity), by orjson when
    its bytes are those; None when they are not (a float the json module writes with an
    exponent), or when orjson cannot encode them (an integer beyond 64 bits, deep nesting, a
    shape's own type) or the json module cannot (a lone surrogate): task by task, then."""
    if _orjson is not None:
        return exact_orjson(tasks, finite=True)
    try:
        return _dumps(tasks).encode("utf-8")
    except (TypeError, ValueError):
        return None


_PART_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


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
                raise OSError(f"a file ended {length} bytes early (was the input changed while converting?)")
            write_all(dst_fd, data)
            done = len(data)
        offset += done
        length -= done


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    path = out_dir / "result.json"
    # the workers' part files: hidden, beside the result, removed at the end
    part_prefix = os.path.join(out_dir, f".result.json.{os.urandom(6).hex()}.part.")
    job = JsonJob(options.task_shape, part_prefix)
    src_fd = -1
    try:
        if isinstance(tasks, parallel.ArrayFile):
            src_fd = os.open(tasks.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
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
                if isinstance(chunk, Span):
                    write_all(fd, b"".join(pending))
                    pending, size = [], 0
                    if chunk.part is None:
                        _copy_range(src_fd, fd, chunk.offset, chunk.length)
                        continue
                    part = f"{part_prefix}{chunk.part}"
                    part_fd = os.open(part, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                    try:
                        _copy_range(part_fd, fd, chunk.offset, chunk.length)
                    finally:
                        os.close(part_fd)
                    os.unlink(part)  # (the part files take no more room than the batches in flight)
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
        for name in glob.glob(glob.escape(part_prefix) + "*"):
            with contextlib.suppress(OSError):
                os.unlink(name)
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
