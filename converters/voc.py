"""VOC: Pascal VOC XML, ``Annotations/<image>.xml`` per image (boxes only)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from . import parallel
from .base import Converter, ConvertOptions, SortedFiles, register
from .fastio import FilesJob, write_chunks
from .items import ItemTask, annotator, task_items_or_warn
from .label_config import LabelConfig
from .media import file_name, raw_basename


def _escape(text: str) -> str:
    """``xml.sax.saxutils.escape(text, {'"': "&quot;"})`` (that module imports urllib.request)."""
    return text.replace("&", "&amp;").replace(">", "&gt;").replace("<", "&lt;").replace('"', "&quot;")


def applies_to(config: LabelConfig) -> str | None:
    controls = config.control_types
    if len(config.data_keys) > 1:
        return f"VOC needs a config that reads one data field; this one reads {', '.join(config.data_keys)}"
    if config.is_multi_image:
        return "VOC does not support multi-image (valueList) objects"
    if "Image" in config.object_types and (
        "RectangleLabels" in controls or "Rectangle" in controls and "Labels" in controls
    ):
        return None
    return f"VOC needs RectangleLabels on an Image; this config has {config.describe()}"


_HEAD = (
    '<?xml version="1.0" encoding="utf-8"?>\n<annotation>\n<folder>images</folder>\n<filename>{}</filename>\n'
    "<source>\n<database>MyDatabase</database>\n<annotation>COCO2017</annotation>\n<image>flickr</image>\n"
    "<flickrid>NULL</flickrid>\n<annotator>{}</annotator>\n</source>\n<owner>\n<flickrid>NULL</flickrid>\n"
    "<name>Label Studio</name>\n</owner>\n<size>\n<width>{}</width>\n<height>{}</height>\n<depth>{}</depth>\n"
    "</size>\n<segmented>0</segmented>\n"
).format
# (the box corners are ints: their text needs no escaping)
_OBJECT = (
    "<object>\n<name>{}</name>\n<pose>Unspecified</pose>\n<truncated>0</truncated>\n<difficult>0</difficult>\n"
    "<bndbox>\n<xmin>{}</xmin>\n<ymin>{}</ymin>\n<xmax>{}</xmax>\n<ymax>{}</ymax>\n</bndbox>\n</object>\n"
).format


def voc_xml(image_name: str, who: str, width: object, height: object, depth: int, boxes: list[dict]) -> str:
    """The annotation file Label Studio writes (its DOM, one element a line), from templates."""
    parts = [_HEAD(_escape(str(image_name)), _escape(str(who)), _escape(str(width)), _escape(str(height)),
                   _escape(str(depth)))]
    for box in boxes:
        key = "rectanglelabels" if "rectanglelabels" in box else ("labels" if "labels" in box else None)
        if key is None or len(box[key]) == 0:
            continue
        x = int(box["x"] / 100 * width)  # type: ignore[operator]
        y = int(box["y"] / 100 * height)  # type: ignore[operator]
        w = int(box["width"] / 100 * width)  # type: ignore[operator]
        h = int(box["height"] / 100 * height)  # type: ignore[operator]
        parts.append(_OBJECT(_escape(str(box[key][0])), x, y, x + w, y + h))
    parts.append("</annotation>\n")
    return "".join(parts)


class VocJob(FilesJob):
    """One task -> [(annotation file name, XML)]; workers create the files that do not exist yet
    (see ``FilesJob``)."""

    fields = ItemTask  # what task_items reads (workers decode only that)

    def __init__(self, config: LabelConfig, options: ConvertOptions, ann_dir: Path | None = None) -> None:
        super().__init__(ann_dir)
        self.config = config
        self.data_key = config.data_keys[0]
        self.image_info = options.image_info  # (no workers with it)

    def process(self, task: object, warn: Callable[[object, str], None],
                main: bool) -> list[tuple[str, bytes | None]] | None:
        data_key = self.data_key
        out: list[tuple[str, bytes | None]] = []
        for item in task_items_or_warn(task, self.config, warn, owned=not main):
            if not item.output:
                continue
            try:
                url = item.input[data_key]
                if not isinstance(url, str):
                    raise TypeError(f"data[{data_key!r}] is not an image URL")
                # a downloaded image: its file name and channel count, as Label Studio reads them
                info = self.image_info(url) if self.image_info is not None else None
                image_name = info.name if info is not None else raw_basename(url)
                depth = info.channels if info is not None and info.channels else 3
                boxes = [v for values in item.output.values() for v in values]
                if not boxes or "original_width" not in boxes[0] or "original_height" not in boxes[0]:
                    continue
                xml = voc_xml(image_name, annotator(item, ""), boxes[0]["original_width"],
                              boxes[0]["original_height"], depth, boxes)
                name = file_name(os.path.splitext(image_name)[0] + ".xml")
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                warn(item.id, f"annotation {item.annotation_id}: {exc!r}")
                continue
            out.append((name, xml.encode("utf-8")))
        return out or None


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> SortedFiles:
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    ann_dir = out_dir / "Annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    job = VocJob(config, options, ann_dir if os.open in os.supports_dir_fd else None)
    write_chunks(ann_dir, parallel.results(tasks, "VOC", job, options))
    return SortedFiles(out_dir, "Annotations")


CONVERTER = register(
    Converter(
        name="VOC",
        description="Pascal VOC XML: one annotation file per image with its bounding boxes.",
        applies_to=applies_to,
        convert_fn=convert,
    )
)

parallel.register_job("VOC")
