"""YOLO and YOLO_OBB: ``labels/<image>.txt`` per image, ``classes.txt`` and ``notes.json``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

from . import parallel
from .base import Converter, ConvertOptions, SortedFiles, register
from .categories import keypoint_labels, keypoint_order, label_categories
from .fastio import FilesJob, number_lines, write_chunks
from .items import ItemTask, RegionTask, task_items_or_warn
from .label_config import LabelConfig
from .media import file_name, label_basename


def _image_reason(config: LabelConfig, fmt: str) -> str | None:
    controls = config.control_types
    objects = config.object_types
    if len(config.data_keys) > 1:
        return f"{fmt} needs a config that reads one data field; this one reads {', '.join(config.data_keys)}"
    if config.is_multi_image:
        return f"{fmt} does not support multi-image (valueList) objects"
    ok = (
        "Image" in objects
        and ("RectangleLabels" in controls or "PolygonLabels" in controls or "KeyPointLabels" in controls)
        or "Labels" in controls
        and ("Rectangle" in controls or "PolygonLabels" in controls or "KeyPointLabels" in controls)
    )
    if not ok:
        return f"{fmt} needs RectangleLabels, PolygonLabels or KeyPointLabels on an Image; this config has " + (
            config.describe()
        )
    return None


def applies_to_yolo(config: LabelConfig) -> str | None:
    reason = _image_reason(config, "YOLO")
    if reason:
        return reason
    controls = config.control_types
    if "KeyPointLabels" in controls and "RectangleLabels" not in controls:
        return "YOLO needs RectangleLabels next to KeyPointLabels (key points are attached to boxes)"
    return None


def applies_to_obb(config: LabelConfig) -> str | None:
    reason = _image_reason(config, "YOLO_OBB")
    if reason:
        return reason
    if "Video" in config.object_types and "TimelineLabels" in config.control_types:
        return "YOLO_OBB does not apply to video TimelineLabels"
    return None


def _yolo_box(label: dict) -> list[float] | None:
    try:
        x, y, w, h = label["x"], label["y"], label["width"], label["height"]
        if x is None or y is None or w is None or h is None:
            return None
        return [(x + w / 2) / 100, (y + h / 2) / 100, w / 100, h / 100]
    except (KeyError, TypeError, ValueError):
        return None


def _obb_box(label: dict) -> list[float] | None:
    for key in ("original_width", "original_height", "x", "y", "width", "height", "rotation"):
        if key not in label:
            return None
    ow, oh = label["original_width"], label["original_height"]
    x = label["x"] / 100 * ow
    y = label["y"] / 100 * oh
    w = label["width"] / 100 * ow
    h = label["height"] / 100 * oh
    rotation = math.radians(label.get("rotation", 0))
    cos, sin = math.cos(rotation), math.sin(rotation)
    # the corners (x, y), (x + w cos, y + w sin), (x + w cos - h sin, y + w sin + h cos),
    # (x - h sin, y + h cos), each divided by the image's size: the converter's arithmetic, in
    # its order (the same floats), without a tuple per corner
    x1, y1 = x + w * cos, y + w * sin
    return [x / ow, y / oh, x1 / ow, y1 / oh, (x1 - h * sin) / ow, (y1 + h * cos) / oh,
            (x - h * sin) / ow, (y + h * cos) / oh]


def _lines(labels: list[dict], name_to_id: dict[str, int], categories: list[dict], obb: bool,
           main: bool = True) -> bytes:
    """Label lines of one item, each ended by a newline. Labels missing from ``name_to_id`` are
    added to it and to ``categories`` only when the whole item succeeds (a failing region leaves
    them untouched); outside the main process such an item raises ``parallel.Redo``."""
    rows = []
    added: dict[str, int] = {}
    for label in labels:
        names: list[str] = []
        for key in ("rectanglelabels", "polygonlabels", "labels"):
            if key in label and len(label[key]) > 0:
                names.extend(label[key])
        for name in names:
            category_id = name_to_id.get(name)
            if category_id is None:
                category_id = added.get(name)
                if category_id is None:
                    category_id = added[name] = len(categories) + len(added)
            if "rectanglelabels" in label or "rectangle" in label or "labels" in label:
                values = _obb_box(label) if obb else _yolo_box(label)
                if values is None:
                    continue
            elif "polygonlabels" in label or "polygon" in label:
                if "points" not in label:
                    continue
                values = [c / 100 for point in label["points"] for c in (point[0], point[1])]
            else:
                raise ValueError(f"unknown label type {label.get('type')}")
            rows.append([category_id, *values])
    if added and not main:
        raise parallel.Redo
    for name, category_id in added.items():
        name_to_id[name] = category_id
        categories.append({"id": category_id, "name": name})
    return number_lines(rows) + b"\n" if rows else b""


def _keypoint_text(labels: list[dict], categories: list[dict], order: list[str]) -> bytes:
    class_map = {c["name"]: c["id"] for c in categories}
    rects: dict = {}
    for item in labels:
        if str(item.get("type", "")).lower() == "rectanglelabels":
            names = item.get("rectanglelabels") or []
            if not names or class_map.get(names[0]) is None:
                continue
            x, y = item["x"] / 100.0, item["y"] / 100.0
            w, h = item["width"] / 100.0, item["height"] / 100.0
            rects[item["id"]] = [class_map[names[0]], x + w / 2.0, y + h / 2.0, w, h, {}]
    for item in labels:
        if str(item.get("type", "")).lower() == "keypointlabels":
            parent = item.get("parentID")
            names = item.get("keypointlabels") or []
            if parent not in rects or not names:
                continue
            rects[parent][5][names[0]] = (item["x"] / 100.0, item["y"] / 100.0, 2)
    rows = []
    for cls, xc, yc, w, h, kps in rects.values():
        values: list = [cls, xc, yc, w, h]
        for name in order:
            values.extend(kps.get(name, (0.0, 0.0, 0)))
        rows.append(values)
    return number_lines(rows)


def _label_file_name(url: str) -> str:
    """``os.path.splitext(label_basename(url))[0]`` (POSIX rules) + ".txt", within 255 bytes' worth
    of characters as a file name."""
    base = label_basename(url)
    dot = base.rfind(".")
    stem = base[:dot] if dot > 0 and base[:dot].lstrip(".") else base  # ".hidden" has no extension
    return file_name(stem[: 255 - 4] + ".txt")


class YoloJob(FilesJob):
    """One task -> [(label file name, text, or None for an empty file that must not replace one)];
    workers create the label files that do not exist yet (see ``FilesJob``)."""

    def __init__(self, config: LabelConfig, obb: bool = False, label_dir: Path | None = None) -> None:
        super().__init__(label_dir)
        self.config = config
        self.obb = obb
        self.is_keypoints = bool(config.controls_of_type("KeyPointLabels"))
        # what task_items reads for it (workers decode only that): region ids for key points
        self.fields = ItemTask if self.is_keypoints else RegionTask
        if self.is_keypoints:
            kp_names = keypoint_labels(config)
            rect_names = config.labels_of_type("RectangleLabels")
            self.categories = [{"id": i, "name": n, "keypoints": kp_names} for i, n in enumerate(rect_names)]
            self.name_to_id = {n: i for i, n in enumerate(rect_names)}
            self.order = keypoint_order(config)
        else:
            self.categories, self.name_to_id = label_categories(config)
            self.order = []
        self.data_key = config.data_keys[0]

    def process(self, task: object, warn: Callable[[object, str], None],
                main: bool) -> list[tuple[str, bytes | None]] | None:
        items = task_items_or_warn(task, self.config, warn, with_region_ids=self.is_keypoints,
                                   owned=not main)
        if not items:
            return None
        data_key = self.data_key
        out: list[tuple[str, bytes | None]] = []
        last_url, name = None, ""  # the items of one task share the image
        for item in items:
            try:
                paths = item.input[data_key]
                if isinstance(paths, str):
                    url = paths
                else:
                    paths = list(paths)
                    url = paths[-1] if paths else None
                if not isinstance(url, str) or not url:
                    raise ValueError(f"no image path in data[{data_key!r}]")
                if url != last_url:
                    name = _label_file_name(url)
                    last_url = url
                output = item.output
                if len(output) == 1:
                    labels = next(iter(output.values()))
                else:
                    labels = [v for values in output.values() for v in values]
                if not labels:
                    out.append((name, None))
                    continue
                if self.is_keypoints:
                    text = _keypoint_text(labels, self.categories, self.order)
                else:
                    text = _lines(labels, self.name_to_id, self.categories, self.obb, main)
            except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError, IndexError) as exc:
                warn(item.id, f"annotation {item.annotation_id}: {exc!r}")
                continue
            out.append((name, text))
        return out or None


def _convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions,
             obb: bool) -> SortedFiles:
    label_dir = out_dir / "labels"
    image_dir = out_dir / "images"
    label_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    can_create = os.open in os.supports_dir_fd
    job = YoloJob(config, obb, label_dir if can_create else None)
    fmt = "YOLO_OBB" if obb else "YOLO"
    write_chunks(label_dir, parallel.results(tasks, fmt, job, options))
    categories = job.categories
    classes = out_dir / "classes.txt"
    with open(classes, "w", encoding="utf-8") as f:
        f.writelines(c["name"] + "\n" for c in categories)
    notes = out_dir / "notes.json"
    with open(notes, "w", encoding="utf-8") as f:
        json.dump(
            {
                "categories": categories,
                "info": {"year": datetime.now().year, "version": "1.0", "contributor": "Label Studio"},
            },
            f,
            indent=2,
        )
    # classes.txt < labels/... < notes.json: Path order
    return SortedFiles(out_dir, "labels", first=["classes.txt"], last=["notes.json"])


def convert_yolo(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> SortedFiles:
    return _convert(tasks, config, out_dir, options, obb=False)


def convert_obb(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> SortedFiles:
    return _convert(tasks, config, out_dir, options, obb=True)


YOLO = register(
    Converter(
        name="YOLO",
        description="YOLO text labels per image (class x_center y_center w h, or polygon points).",
        applies_to=applies_to_yolo,
        convert_fn=convert_yolo,
    )
)
YOLO_OBB = register(
    Converter(
        name="YOLO_OBB",
        description="YOLOv8 oriented boxes per image: class and the four corners, normalised.",
        applies_to=applies_to_obb,
        convert_fn=convert_obb,
    )
)

parallel.register_job("YOLO")
parallel.register_job("YOLO_OBB")
