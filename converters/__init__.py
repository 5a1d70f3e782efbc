"""Streaming converters from Label Studio task documents to Label Studio's export formats.

>>> import converters
>>> config = converters.parse_label_config(xml)
>>> converters.get("YOLO").convert(tasks, config, Path("out"))

Every format lives in its own module and registers itself; ``converters.names()`` lists them in
Label Studio's order and ``converters.get(name)`` returns one.
"""

from __future__ import annotations

from . import (  # noqa: F401  (imported for registration)
    asr_manifest,
    brush,
    coco,
    conll2003,
    csv_export,
    json_export,
    json_min,
    voc,
    yolo,
)
from .base import (
    Converter,
    ConverterError,
    ConvertOptions,
    FormatNotApplicable,
    UnknownFormat,
    get,
    names,
    register,
)
from .label_config import ControlTag, LabelConfig, LabelConfigError, ObjectTag, parse_label_config

__all__ = [
    "ControlTag",
    "ConvertOptions",
    "Converter",
    "ConverterError",
    "FormatNotApplicable",
    "LabelConfig",
    "LabelConfigError",
    "ObjectTag",
    "UnknownFormat",
    "applicable",
    "get",
    "names",
    "parse_label_config",
    "register",
]


def applicable(config: LabelConfig) -> dict[str, str | None]:
    """For every format: None if it applies to ``config``, else the reason it does not."""
    return {name: get(name).applies_to(config) for name in names()}
