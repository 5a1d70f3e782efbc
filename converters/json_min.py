"""JSON_MIN: one flat record per annotation (data fields + control values), as a JSON array."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from .base import Converter, ConvertOptions, always, register
from .fastio import replacing
from .items import annotator, iter_items, prettify_result
from .label_config import LabelConfig


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    path = out_dir / "result.json"
    with replacing(path, "utf-8") as out:
        out.write("[\n")
        first = True
        for item in iter_items(tasks, config, options):
            record = dict(item.input)
            if item.id is not None:
                record["id"] = item.id
            try:
                for name, value in item.output.items():
                    record[name] = prettify_result(value)
            except (KeyError, TypeError, AttributeError) as exc:
                options.warn(item.id, f"annotation {item.annotation_id}: unexpected result shape ({exc})")
                continue
            record["annotator"] = annotator(item, int_id=True)
            record["annotation_id"] = item.annotation_id
            record["created_at"] = item.created_at
            record["updated_at"] = item.updated_at
            record["lead_time"] = item.lead_time
            if "agreement" in item.extra:
                record["agreement"] = item.extra["agreement"]
            if not first:
                out.write(",\n")
            out.write(json.dumps(record, indent=2, ensure_ascii=False))
            first = False
        out.write("\n]")
    return [path]


CONVERTER = register(
    Converter(
        name="JSON_MIN",
        description="One flat JSON record per annotation: task data plus each control's value.",
        applies_to=always,
        convert_fn=convert,
        extension="json",
    )
)
