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


def _el(tag: str, text: object) -> str:
    return f"<{tag}>{_escape(str(text))}</{tag}>\n"


def voc_xml(image_name: str, who: str, width: object, height: object, depth: int, boxes: list[dict]) -> str:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<annotation>\n',
        _el("folder", "images"),
        _el("filename", image_name),
        "<source>\n",
        _el("database", "MyDatabase"),
        _el("annotation", "COCO2017"),
        _el("image", "flickr"),
        _el("flickrid", "NULL"),
        _el("annotator", who),
        "</source>\n<owner>\n",
        _el("flickrid", "NULL"),
        _el("name", "Label Studio"),
        "</owner>\n<size>\n",
        _el("width", width),
        _el("height", height),
        _el("depth", depth),
        "</size>\n",
        _el("segmented", "0"),
    ]
    for box in boxes:
        key = "rectanglelabels" if "rectanglelabels" in box else ("labels" if "labels" in box else None)
        if key is None or len(box[key]) == 0:
            continue
        x = int(box["x"] / 100 * width)  # type: ignore[operator]
        y = int(box["y"] / 100 * height)  # type: ignore[operator]
        w = int(box["width"] / 100 * width)  # type: ignore[operator]
        h = int(box["height"] / 100 * height)  # type: ignore[operator]
        parts += [
            "<object>\n",
            _el("name", box[key][0]),
            _el("pose", "Unspecified"),
            _el("truncated", "0"),
            _el("difficult", "0"),
            "<bndbox>\n",
            _el("xmin", x),
            _el("ymin", y),
            _el("xmax", x + w),
            _el("ymax", y + h),
            "</bndbox>\n</object>\n",
        ]
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
        for item in task_items_or_warn(task, self.config, warn):
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
    written = write_chunks(ann_dir, parallel.results(tasks, "VOC", job, options))
    return SortedFiles(out_dir, ["Annotations/" + name for name in sorted(written)])


CONVERTER = register(
    Converter(
        name="VOC",
        description="Pascal VOC XML: one annotation file per image with its bounding boxes.",
        applies_to=applies_to,
        convert_fn=convert,
    )
)

parallel.register_job("VOC")
