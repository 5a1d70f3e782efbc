"""Streaming converters from Label Studio task documents to Label Studio's export formats.

>>> import converters
>>> config = converters.parse_label_config(xml)
>>> converters.get("YOLO").convert(tasks, config, Path("out"))

Every format lives in its own module, which registers it when imported: ``converters.get(name)``
returns one (importing its module the first time), ``converters.names()`` lists them all in Label
Studio's order.
"""

from __future__ import annotations

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
