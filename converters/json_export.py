"""JSON: Label Studio's own task format, one JSON array of task documents (streamed), each
written as it is given (callers give Label Studio's export shape: ``syncd.document``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .base import Converter, ConvertOptions, always, register
from .fastio import replacing
from .items import task_id_of
from .label_config import LabelConfig

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    path = out_dir / "result.json"
    with replacing(path, "utf-8") as out:
        out.write("[")
        first = True
        for task in tasks:
            if not isinstance(task, dict):
                options.warn(task_id_of(task), getattr(task, "reason", "task is not a JSON object"))
                continue
            try:
                text = _dumps(task)
            except (TypeError, ValueError) as exc:
                options.warn(task_id_of(task), f"cannot serialise task: {exc}")
                continue
            if not first:
                out.write(",")
            out.write(text)
            first = False
        out.write("]")
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
