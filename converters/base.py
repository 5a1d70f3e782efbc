"""The converter interface, the registry and the shared options."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, overload

from .label_config import LabelConfig

if TYPE_CHECKING:
    from .images import ImageInfo

__all__ = [
    "ConvertOptions",
    "Converter",
    "ConverterError",
    "FormatNotApplicable",
    "SortedFiles",
    "UnknownFormat",
    "get",
    "names",
    "register",
]

logger = logging.getLogger("converters")

MediaResolver = Callable[[str], "Path | None"]


class ConverterError(Exception):
    """Base class of the errors raised by the converters package."""


class UnknownFormat(ConverterError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown format {name!r}; known formats: {', '.join(names())}")
        self.name = name


class FormatNotApplicable(ConverterError):
    """Raised when a format is asked for a labeling config it does not apply to."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name
        self.reason = reason


def _default_warn(task_id: object, message: str) -> None:
    logger.warning("task %s skipped: %s", task_id, message)


@dataclass
class ConvertOptions:
    """Options shared by all converters.

    ``media_resolver`` maps a media URL found in task data (``/data/upload/5/a.wav``) to a local
    file, or returns None. Only ``ASR_MANIFEST`` uses it (to read the audio duration and copy the
    audio into ``audio/``); without it, the duration is ``null``.
    ``warn(task_id, message)`` is called for every task or result that is skipped because it is
    malformed; the default logs a warning on the ``converters`` logger.
    ``workers``: worker processes for the per-task formats (JSON, JSON_MIN, CSV/TSV, CONLL2003,
    COCO, VOC, YOLO) when
    the tasks are a big JSON export file read by ``cli.iter_input_tasks``; None picks one per CPU
    (up to 4) for files of 32 MB and more, 0 or 1 keeps everything in this process. The output
    is the same either way.
    ``task_shape(task)`` (JSON only) is applied to every task before it is written (``syncd
    convert`` gives ``syncd.document.label_studio_export``); it must return the task itself when
    it changes nothing, which lets JSON copy an export's bytes instead of encoding them again.
    Its ``unchanged_type`` attribute, if any, is a type (a TypedDict) that a task fits only when
    the shape leaves it unchanged: JSON then decodes a batch of an export file with it (msgspec)
    to learn, without decoding the rest, that the batch may be copied as it is.
    ``image_info(url)`` (set by ``syncd convert --download-images``) gives the downloaded image of
    a task's image URL (its name under ``images/``, size and channels), or None: COCO then takes
    ``width``/``height`` and ``file_name`` from it, VOC the file name and ``depth``.
    """

    media_resolver: MediaResolver | None = None
    warn: Callable[[object, str], None] = _default_warn
    extra: dict[str, object] = field(default_factory=dict)
    workers: int | None = None
    image_info: Callable[[str], ImageInfo | None] | None = None
    task_shape: Callable[[dict], dict] | None = None


ConvertFn = Callable[[Iterable[dict], LabelConfig, Path, ConvertOptions], Sequence[Path]]
AppliesFn = Callable[[LabelConfig], "str | None"]


@dataclass(frozen=True)
class Converter:
    """One export format.

    ``applies_to(config)`` returns None when the format applies to the config, else the reason.
    ``convert(tasks, config, out_dir, options)`` writes the export into ``out_dir`` and returns
    the written files (sorted).
    """

    name: str
    description: str
    applies_to: AppliesFn
    convert_fn: ConvertFn
    extension: str = ""

    def convert(
        self,
        tasks: Iterable[dict],
        config: LabelConfig,
        out_dir: Path,
        options: ConvertOptions | None = None,
        *,
        check: bool = True,
    ) -> Sequence[Path]:
        if check:
            reason = self.applies_to(config)
            if reason is not None:
                raise FormatNotApplicable(self.name, reason)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = self.convert_fn(tasks, config, out_dir, options or ConvertOptions())
        if isinstance(files, SortedFiles):
            return files
        return sorted(files, key=_path_parts)  # Path order, without Path's slow comparisons


def _path_parts(path: Path) -> tuple[str, ...]:
    return path.parts


class SortedFiles(Sequence[Path]):
    """The files of a conversion that writes one file per image, in Path order: the ``first``
    names, every file of ``folder``, then the ``last`` names (all relative to ``root``). The
    folder is read only when asked, and counting it keeps no names: a million label files cost
    no memory unless the list itself is wanted (files that were in the folder before the
    conversion are in it too)."""

    def __init__(self, root: Path, folder: str, first: Sequence[str] = (), last: Sequence[str] = ()) -> None:
        self.root = root
        self.folder = folder
        self.first = list(first)
        self.last = list(last)
        self._count: int | None = None
        self._names: list[str] | None = None

    def _entries(self) -> Iterator[os.DirEntry]:
        with os.scandir(self.root / self.folder) as entries:
            yield from (entry for entry in entries if entry.is_file(follow_symlinks=False))

    @property
    def names(self) -> list[str]:
        if self._names is None:
            listed = sorted(entry.name for entry in self._entries())
            self._names = [*self.first, *(f"{self.folder}/{name}" for name in listed), *self.last]
        return self._names

    def __len__(self) -> int:
        if self._names is not None:
            return len(self._names)
        if self._count is None:
            self._count = len(self.first) + sum(1 for _ in self._entries()) + len(self.last)
        return self._count

    @overload
    def __getitem__(self, index: int) -> Path: ...

    @overload
    def __getitem__(self, index: slice) -> list[Path]: ...

    def __getitem__(self, index: int | slice) -> Path | list[Path]:
        if isinstance(index, slice):
            return [self.root / name for name in self.names[index]]
        return self.root / self.names[index]


_REGISTRY: dict[str, Converter] = {}

# The built-in formats and the module of this package that registers each. A module is imported
# when one of its formats is first asked for: a conversion compiles and runs only its own
# format's module (Python start-up is part of every ``syncd convert``), and ``names()`` imports
# them all.
_BUILTIN_MODULES = {
    "JSON": "json_export", "JSON_MIN": "json_min", "CSV": "csv_export", "TSV": "csv_export",
    "CONLL2003": "conll2003", "COCO": "coco", "VOC": "voc", "BRUSH_TO_NUMPY": "brush", "BRUSH_TO_PNG": "brush",
    "ASR_MANIFEST": "asr_manifest", "YOLO": "yolo", "YOLO_OBB": "yolo",
}


def register(converter: Converter) -> Converter:
    _REGISTRY[converter.name] = converter
    return converter


def get(name: str) -> Converter:
    """The converter registered under ``name`` (case-insensitive, ``-`` same as ``_``)."""
    key = name.strip().upper().replace("-", "_")
    found = _REGISTRY.get(key)
    if found is None and key in _BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{_BUILTIN_MODULES[key]}")
        found = _REGISTRY.get(key)
    if found is None:
        raise UnknownFormat(name)
    return found


def _load_builtin() -> None:
    """Import every built-in format's module (each registers its formats)."""
    for module in dict.fromkeys(_BUILTIN_MODULES.values()):
        importlib.import_module(f"{__package__}.{module}")


_LS_ORDER = (
    "JSON", "JSON_MIN", "CSV", "TSV", "CONLL2003", "COCO", "VOC",
    "BRUSH_TO_NUMPY", "BRUSH_TO_PNG", "ASR_MANIFEST", "YOLO", "YOLO_OBB",
)


def names() -> list[str]:
    """Registered format names (the built-in ones and any other registered), in Label Studio's order."""
    _load_builtin()
    rank = {name: i for i, name in enumerate(_LS_ORDER)}
    return sorted(_REGISTRY, key=lambda name: (rank.get(name, len(rank)), name))


def always(config: LabelConfig) -> str | None:
    return None
