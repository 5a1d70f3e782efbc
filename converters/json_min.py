"""JSON_MIN: one flat record per annotation (data fields + control values), as a JSON array."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from . import parallel
from .base import Converter, ConvertOptions, always, register
from .fastio import indented_json_bytes, replacing, write_joined
from .items import ItemTask, annotator, prettify_result, task_items_or_warn
from .label_config import LabelConfig


class JsonMinJob:
    """One task -> the records of its annotations, as ``json.dumps(record, indent=2)`` writes
    them, joined by ",\\n" (bytes); a chunk is the records of consecutive tasks."""

    fields = ItemTask  # what task_items reads (workers decode only that)

    def __init__(self, config: LabelConfig) -> None:
        self.config = config

    def process(self, task: object, warn: Callable[[object, str], None], main: bool) -> bytes | None:
        texts = []
        for item in task_items_or_warn(task, self.config, warn, owned=not main):
            record = dict(item.input)
            if item.id is not None:
                record["id"] = item.id
            try:
                for name, value in item.output.items():
                    record[name] = prettify_result(value, in_place=True)  # (the item's own values)
            except (KeyError, TypeError, AttributeError) as exc:
                warn(item.id, f"annotation {item.annotation_id}: unexpected result shape ({exc})")
                continue
            record["annotator"] = annotator(item, int_id=True)
            record["annotation_id"] = item.annotation_id
            record["created_at"] = item.created_at
            record["updated_at"] = item.updated_at
            record["lead_time"] = item.lead_time
            if "agreement" in item.extra:
                record["agreement"] = item.extra["agreement"]
            try:
                # (in a worker, tasks were decoded from JSON: they hold no NaN)
                texts.append(indented_json_bytes(record, finite=not main))
            except (TypeError, ValueError) as exc:  # (UnicodeEncodeError: a lone surrogate)
                warn(item.id, f"annotation {item.annotation_id}: cannot serialise the record: {exc}")
        return b",\n".join(texts) if texts else None

    def combine(self, payloads: list[bytes]) -> bytes:
        return b",\n".join(payloads)


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    path = out_dir / "result.json"
    with replacing(path) as out:
        out.write(b"[\n")
        write_joined(out.write, parallel.results(tasks, "JSON_MIN", JsonMinJob(config), options), b",\n")
        out.write(b"\n]")
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

parallel.register_job("JSON_MIN")
