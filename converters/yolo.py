"""YOLO and YOLO_OBB: ``labels/<image>.txt`` per image, ``classes.txt`` and ``notes.json``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from .base import Converter, ConvertOptions, register
from .categories import keypoint_labels, keypoint_order, label_categories
from .items import Item, iter_items
from .label_config import LabelConfig
from .media import label_basename


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
    corners = [
        (x, y),
        (x + w * cos, y + w * sin),
        (x + w * cos - h * sin, y + w * sin + h * cos),
        (x - h * sin, y + h * cos),
    ]
    return [v for cx, cy in corners for v in (cx / ow, cy / oh)]


def _lines(labels: list[dict], name_to_id: dict[str, int], categories: list[dict], obb: bool) -> list[str]:
    lines = []
    for label in labels:
        names: list[str] = []
        for key in ("rectanglelabels", "polygonlabels", "labels"):
            if key in label and len(label[key]) > 0:
                names.extend(label[key])
        for name in names:
            if name not in name_to_id:
                name_to_id[name] = len(categories)
                categories.append({"id": len(categories), "name": name})
            category_id = name_to_id[name]
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
            lines.append(" ".join(str(v) for v in [category_id, *values]) + "\n")
    return lines


def _keypoint_text(labels: list[dict], categories: list[dict], order: list[str]) -> str:
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
    out = []
    for cls, xc, yc, w, h, kps in rects.values():
        values: list = [cls, xc, yc, w, h]
        for name in order:
            values.extend(kps.get(name, (0.0, 0.0, 0)))
        out.append(" ".join(map(str, values)))
    return "\n".join(out)


def _convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions,
             obb: bool) -> list[Path]:
    label_dir = out_dir / "labels"
    image_dir = out_dir / "images"
    label_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    is_keypoints = bool(config.controls_of_type("KeyPointLabels"))
    if is_keypoints:
        kp_names = keypoint_labels(config)
        rect_names = config.labels_of_type("RectangleLabels")
        categories = [{"id": i, "name": n, "keypoints": kp_names} for i, n in enumerate(rect_names)]
        name_to_id = {n: i for i, n in enumerate(rect_names)}
        order = keypoint_order(config)
    else:
        categories, name_to_id = label_categories(config)
        order = []
    data_key = config.data_keys[0]
    written: set[str] = set()  # label file names (small strings; returned at the end)
    item: Item
    for item in iter_items(tasks, config, options, with_region_ids=is_keypoints):
        try:
            paths = item.input[data_key]
            paths = [paths] if isinstance(paths, str) else list(paths)
            if not paths or not isinstance(paths[-1], str) or not paths[-1]:
                raise ValueError(f"no image path in data[{data_key!r}]")
            stem = os.path.splitext(label_basename(paths[-1]))[0][: 255 - 4]
            label_path = label_dir / f"{stem}.txt"
            labels = [v for values in item.output.values() for v in values]
            if not labels:
                if not label_path.exists():
                    label_path.touch()
                    written.add(label_path.name)
                continue
            if is_keypoints:
                text = _keypoint_text(labels, categories, order)
            else:
                # work on copies so a failing region leaves the class list untouched
                cats, ids = list(categories), dict(name_to_id)
                text = "".join(_lines(labels, ids, cats, obb))
                categories[:], name_to_id = cats, ids
        except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError, IndexError) as exc:
            options.warn(item.id, f"annotation {item.annotation_id}: {exc!r}")
            continue
        with open(label_path, "w", encoding="utf-8") as f:
            f.write(text)
        written.add(label_path.name)
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
    return [classes, notes, *(label_dir / name for name in written)]


def convert_yolo(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    return _convert(tasks, config, out_dir, options, obb=False)


def convert_obb(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
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
