"""CSV and TSV: one row per annotation, columns = data fields + controls, sorted by name.

The header needs every column of the whole export, so rows are first spooled to a temporary
file (one JSON line each) while the column set is collected; memory stays independent of the
number of tasks.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .base import Converter, ConvertOptions, always, register
from .items import annotator, iter_items, prettify_result
from .label_config import LabelConfig

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_FIXED = ("annotator", "annotation_id", "created_at", "updated_at", "lead_time")


def _json_cell(value: object) -> str:
    # Label Studio serialises with ujson: compact, non-ASCII kept, "/" escaped as "\/".
    return _compact(value).replace("/", "\\/")


def _convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions,
             sep: str, filename: str) -> list[Path]:
    input_keys: set[str] = set()
    output_keys: set[str] = set()
    extra_keys: set[str] = set()
    has_id = False
    spool_line = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with tempfile.TemporaryFile("w+", encoding="utf-8", dir=out_dir) as spool:
        for item in iter_items(tasks, config, options):
            outputs: dict[str, str] = {}
            try:
                for name, value in item.output.items():
                    pretty = prettify_result(value)
                    outputs[name] = pretty if isinstance(pretty, str) else _json_cell(pretty)
                    if any(isinstance(r, dict) and r.get("type") in ("Chat", "chatmessage") for r in value):
                        outputs[f"{name}_transcript"] = _transcript(pretty)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                options.warn(item.id, f"annotation {item.annotation_id}: unexpected result shape ({exc})")
                continue
            inputs = {
                k: _json_cell(v) if isinstance(v, (dict, list)) else v for k, v in item.input.items()
            }
            meta = {
                "annotator": annotator(item),
                "annotation_id": item.annotation_id,
                "created_at": item.created_at,
                "updated_at": item.updated_at,
                "lead_time": item.lead_time,
            }
            if "agreement" in item.extra:
                meta["agreement"] = item.extra["agreement"]
                extra_keys.add("agreement")
            if item.history:
                meta["history"] = _json_cell(item.history)
                extra_keys.add("history")
            input_keys.update(inputs)
            output_keys.update(k for k in item.output)
            extra_keys.update(k for k in outputs if k not in item.output)
            if item.id is not None:
                has_id = True
            spool.write(spool_line([item.id, inputs, outputs, meta]))
            spool.write("\n")

        colliding = input_keys & output_keys
        keys = set(_FIXED) | output_keys | extra_keys
        keys |= {f"_data_{k}" if k in colliding else k for k in input_keys}
        if has_id:
            keys.add("id")
        path = out_dir / filename
        spool.seek(0)
        with open(path, "w", encoding="utf-8", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=sorted(keys), quoting=csv.QUOTE_NONNUMERIC, delimiter=sep)
            writer.writeheader()
            for line in spool:
                task_id, inputs, outputs, meta = json.loads(line)
                record = {}
                if task_id is not None:
                    record["id"] = task_id
                record.update(outputs)
                for k, v in inputs.items():
                    record[f"_data_{k}" if k in colliding else k] = v
                record.update(meta)
                writer.writerow(record)
    return [path]


def _transcript(pretty: object) -> str:
    lines = []
    if isinstance(pretty, list):
        for message in pretty:
            if not isinstance(message, dict):
                continue
            role = str(message.get("role", ""))
            content = str(message.get("content", ""))
            if role:
                lines.append(f"{role}: {content}" if content else f"{role}:")
            else:
                lines.append(content)
    return "\n".join(lines)


def convert_csv(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    return _convert(tasks, config, out_dir, options, ",", "result.csv")


def convert_tsv(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    return _convert(tasks, config, out_dir, options, "\t", "result.tsv")


CSV = register(
    Converter(
        name="CSV",
        description="Comma-separated table, one row per annotation; columns are data fields and controls.",
        applies_to=always,
        convert_fn=convert_csv,
        extension="csv",
    )
)
TSV = register(
    Converter(
        name="TSV",
        description="Tab-separated table, one row per annotation; columns are data fields and controls.",
        applies_to=always,
        convert_fn=convert_tsv,
        extension="tsv",
    )
)
