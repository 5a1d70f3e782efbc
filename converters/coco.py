"""COCO: ``result.json`` with images, categories and annotations (boxes, polygons, key points).

Images and annotations are streamed to temporary files while tasks are read and concatenated at
the end, so memory does not grow with the number of tasks; categories are known from the config
up front (plus any label found in results but missing from the config).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from datetime import datetime
from math import atan, cos, pi, sin, sqrt
from pathlib import Path
from typing import TYPE_CHECKING

from . import parallel
from .base import Converter, ConvertOptions, register
from .categories import keypoint_labels, keypoint_order, label_categories
from .fastio import compact_json, float_texts, json_number, json_string, replacing
from .items import RegionTask, task_items_or_warn
from .label_config import LabelConfig
from .media import UPLOAD_PREFIXES, is_cloud_uri, label_basename
from .yolo import _image_reason

if TYPE_CHECKING:
    from .images import ImageInfo

_dumps = compact_json  # json.dumps(ensure_ascii=False, separators=(",", ":")), with orjson when installed


def applies_to(config: LabelConfig) -> str | None:
    reason = _image_reason(config, "COCO")
    if reason:
        return reason
    controls = config.control_types
    if "KeyPointLabels" in controls and "RectangleLabels" not in controls:
        return "COCO needs RectangleLabels next to KeyPointLabels (key points are attached to boxes)"
    return None


def coco_categories(config: LabelConfig) -> tuple[list[dict], dict[str, int]]:
    """``_get_labels`` followed by ``update_categories_for_keypoints``."""
    categories, name_to_id = label_categories(config)
    kp_names = keypoint_labels(config)
    if not kp_names:
        return categories, name_to_id
    new_categories = [dict(c) for c in categories if c["name"] not in kp_names]
    mapping = {c["name"]: c["id"] for c in new_categories}
    numeric = [c["id"] for c in new_categories if isinstance(c["id"], int)]
    merged_id = max(numeric) + 1 if numeric else 0
    new_categories.append(
        {"id": merged_id, "name": "default", "supercategory": "default", "keypoints": kp_names, "skeleton": []}
    )
    for name in kp_names:
        mapping[name] = merged_id
    return new_categories, mapping


def image_file_name(url: str) -> str:
    """``images[].file_name``: cloud URIs stay as they are, everything else is ``images/<name>``."""
    if url.startswith(UPLOAD_PREFIXES):  # the common case, first
        return "images/" + url[url.rfind("/") + 1:]  # (posixpath.basename)
    if is_cloud_uri(url):
        return url
    return "images/" + label_basename(url)


def rotated_rectangle(label: dict) -> tuple[float, float, float, float] | None:
    """Axis-aligned bounding box (percent) of a possibly rotated Label Studio rectangle."""
    if not ("x" in label and "y" in label and "width" in label and "height" in label):
        return None
    x, y, w, h = label["x"], label["y"], label["width"], label["height"]
    r = label["rotation"] if "rotation" in label else 0.0
    if abs(r) > 0:
        alpha = atan(h / w)
        beta = pi * (r / 180)
        radius = sqrt((w / 2) ** 2 + (h / 2) ** 2)
        x0 = x - radius * (cos(pi - alpha - beta) - cos(pi - alpha)) + w / 2
        y0 = y + radius * (sin(pi - alpha - beta) - sin(pi - alpha)) + h / 2
        # the four corners at these angles (written out: a loop per box costs more than its math)
        t0, t1, t2, t3 = alpha + beta, pi - alpha + beta, pi + alpha + beta, 2 * pi - alpha + beta
        x1, x2, x3, x4 = x0 + radius * cos(t0), x0 + radius * cos(t1), x0 + radius * cos(t2), x0 + radius * cos(t3)
        y1, y2, y3, y4 = y0 + radius * sin(t0), y0 + radius * sin(t1), y0 + radius * sin(t2), y0 + radius * sin(t3)
        x, y = min(x1, x2, x3, x4), min(y1, y2, y3, y4)
        w, h = max(x1, x2, x3, x4) - x, max(y1, y2, y3, y4) - y
    return x, y, w, h


def polygon_area(xs: list[float], ys: list[float]) -> float:
    """Shoelace formula, as ``0.5 * |dot(x, roll(y, 1)) - dot(y, roll(x, 1))|``."""
    n = len(xs)
    a = sum(xs[i] * ys[i - 1] for i in range(n))
    b = sum(ys[i] * xs[i - 1] for i in range(n))
    return float(0.5 * abs(a - b))


def _keypoint_annotation(kps: list[dict], order: list[str], annotation_id: int, image_id: int,
                         name_to_id: dict[str, int]) -> dict:
    if not order:
        raise ValueError("KeyPointLabels labels need model_index attributes to export key points to COCO")
    values = [0] * (len(order) * 3)
    for kp in kps:
        width, height = kp["original_width"], kp["original_height"]
        x, y = kp["x"] / 100 * width, kp["y"] / 100 * height
        names = kp.get("keypointlabels", [])
        visible = 2 if names else 0
        for name in names:
            if name in order:
                idx = order.index(name)
                values[3 * idx] = int(round(x))
                values[3 * idx + 1] = int(round(y))
                values[3 * idx + 2] = visible
    seen = [i for i in range(len(order)) if values[3 * i + 2] > 0]
    if seen:
        xs = [values[3 * i] for i in seen]
        ys = [values[3 * i + 1] for i in seen]
        bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    else:
        bbox = [0, 0, 0, 0]
    return {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": name_to_id.get(order[0], 0),
        "keypoints": values,
        "num_keypoints": len(seen),
        "bbox": bbox,
        "iscrowd": 0,
    }


class CocoJob:
    """One task -> per exported image: its ``images`` line around the id, and its annotations
    without ``id``/``image_id`` (numbered when written, in task order): JSON text, or a box's
    numbers, which ``combine`` writes."""

    fields = RegionTask  # what task_items reads for it (workers decode only that)

    def __init__(self, config: LabelConfig, image_info: Callable[[str], ImageInfo | None] | None = None) -> None:
        self.config = config
        self.image_info = image_info
        self.categories, self.name_to_id = coco_categories(config)
        self.order = keypoint_order(config)
        self.data_key = config.data_keys[0]

    def process(self, task: object, warn: Callable[[object, str], None],
                main: bool) -> list[tuple[str, str, list]] | None:
        items = task_items_or_warn(task, self.config, warn, owned=not main)
        if not items:
            return None
        data_key = self.data_key
        categories, name_to_id = self.categories, self.name_to_id
        images = []
        for item in items:
            url = item.input.get(data_key)
            if not isinstance(url, str):
                warn(item.id, f"data[{data_key!r}] is not an image URL")
                continue
            width = height = None
            info = self.image_info(url) if self.image_info is not None else None
            if info is not None:  # a downloaded image: its size, as Label Studio reads it from the file
                width, height = info.width, info.height
            annotations: list[str] = []  # JSON objects without their opening "{" (ids go first)
            keypoints: list[dict] = []
            output = item.output
            labels = next(iter(output.values())) if len(output) == 1 else [v for vs in output.values() for v in vs]
            for label in labels:
                category = None
                for key in ("rectanglelabels", "polygonlabels", "keypointlabels", "labels"):
                    if key in label and len(label[key]) > 0:
                        category = label[key][0]
                        break
                if category is None:
                    continue
                if not height or not width:
                    if "original_width" not in label or "original_height" not in label:
                        continue
                    width, height = label["original_width"], label["original_height"]
                category_id = name_to_id.get(category)
                if category_id is None:
                    if not main:
                        raise parallel.Redo  # a new class id: the main process numbers it
                    category_id = name_to_id[category] = len(categories)
                    categories.append({"id": category_id, "name": category})
                try:
                    if "rectanglelabels" in label or "labels" in label:
                        xywh = rotated_rectangle(label)
                        if xywh is None:
                            continue
                        x, y, w, h = xywh
                        ow, oh = label["original_width"], label["original_height"]
                        x, y, w, h = x * ow / 100, y * oh / 100, w * ow / 100, h * oh / 100  # floats
                        area = w * h
                        total = x + y + w + h + area
                        if total - total == 0.0:  # all finite: written by combine with the chunk's others
                            annotations.append((json_number(category_id), x, y, w, h, area))
                        else:
                            annotations.append(_box_annotation(json_number(category_id), json_number(x),
                                                               json_number(y), json_number(w), json_number(h),
                                                               json_number(area)))
                    elif "polygonlabels" in label:
                        pts = [(px / 100 * width, py / 100 * height) for px, py in label["points"]]
                        xs = [p[0] for p in pts]
                        ys = [p[1] for p in pts]
                        x1, y1 = min(xs), min(ys)
                        annotations.append(
                            f'"category_id":{json_number(category_id)},"segmentation":[['
                            + ",".join([json_number(c) for p in pts for c in p])
                            + f']],"bbox":[{json_number(x1)},{json_number(y1)},{json_number(max(xs) - x1)},'
                            f'{json_number(max(ys) - y1)}],"ignore":0,"iscrowd":0,'
                            f'"area":{json_number(polygon_area(xs, ys))}}}'
                        )
                    elif "keypointlabels" in label:
                        keypoints.append(label)
                except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError) as exc:
                    warn(item.id, f"annotation {item.annotation_id}: region skipped ({exc!r})")
            if keypoints:
                try:
                    annotation = _keypoint_annotation(keypoints, self.order, 0, 0, name_to_id)
                    del annotation["id"], annotation["image_id"]
                    annotations.append(_dumps(annotation)[1:])
                except (KeyError, TypeError, ValueError) as exc:
                    warn(item.id, f"annotation {item.annotation_id}: key points skipped ({exc})")
            # {"width":..,"height":..,"id":<id>,"file_name":..}: the parts around the id
            head = f'{{"width":{json_number(width)},"height":{json_number(height)},"id":'
            file_name = "images/" + info.name if info is not None else image_file_name(url)
            tail = ',"file_name":' + json_string(file_name) + "}\n"
            images.append((head, tail, annotations))
        return images or None

    def combine(self, payloads: list[list[tuple[str, str, list]]]) -> tuple[str, int, str, list[int]]:
        """The images' and the annotations' lines, each with a "," before it, as %-templates
        for their ids (``%d``); how many images; the image (0, 1... in this chunk) of each
        annotation. The JSON text holds no NUL (it would be escaped), so NUL marks an id.
        A box given as its numbers (category id's JSON, x, y, width, height, area) is written
        here, with all the chunk's numbers in one ``float_texts`` call."""
        numbers = [n for images in payloads for _, _, anns in images for a in anns if a.__class__ is tuple
                   for n in a[1:]]
        texts = iter(float_texts(numbers))
        image_lines = []
        ann_lines = []
        ann_images = []
        n_images = 0
        for images in payloads:
            for head, tail, image_annotations in images:
                image_lines.append(f",{head}\0{tail}")
                for rest in image_annotations:
                    if rest.__class__ is tuple:
                        rest = _box_annotation(rest[0], next(texts), next(texts), next(texts), next(texts), next(texts))
                    # {"id":..,"image_id":..,"category_id":..}: the id fields come first
                    ann_lines.append(f',{{"id":\0,"image_id":\0,{rest}\n')
                    ann_images.append(n_images)
                n_images += 1
        return (_template("".join(image_lines)), n_images, _template("".join(ann_lines)), ann_images)


def _box_annotation(category_id: str, x: str, y: str, w: str, h: str, area: str) -> str:
    """A box's annotation without its opening "{" and its ids, from the JSON of its values."""
    return (f'"category_id":{category_id},"segmentation":[],"bbox":[{x},{y},{w},{h}],"ignore":0,"iscrowd":0,'
            f'"area":{area}}}')


def _template(text: str) -> str:
    return text.replace("%", "%%").replace("\0", "%d")


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    job = CocoJob(config, options.image_info)
    n_images = 0
    n_annotations = 0
    path = out_dir / "result.json"
    # The images go straight into the file (written under a temporary name, renamed when
    # complete); the annotations, which follow the categories (known at the end), wait in a
    # temporary file.
    with replacing(path) as out, tempfile.TemporaryFile("w+b", dir=out_dir) as anns_tmp:
        out.write(b'{"images":[\n')
        for image_text, images, ann_text, ann_images in parallel.results(tasks, "COCO", job, options):
            first = n_images
            text = image_text % tuple(range(first, first + images))
            out.write((text if n_images else text[1:]).encode("utf-8"))  # no "," before the first one
            n_images += images
            if ann_images:
                text = ann_text % tuple(
                    [n for i, image in enumerate(ann_images, n_annotations) for n in (i, first + image)]
                )
                anns_tmp.write((text if n_annotations else text[1:]).encode("utf-8"))
                n_annotations += len(ann_images)
        now = datetime.now()
        info = {"year": now.year, "version": "1.0", "description": "", "contributor": "Label Studio",
                "url": "", "date_created": str(now)}
        out.write(('],\n"categories":' + _dumps(job.categories) + ',\n"annotations":[\n').encode("utf-8"))
        anns_tmp.seek(0)
        shutil.copyfileobj(anns_tmp, out, 1 << 20)
        out.write(('],\n"info":' + _dumps(info) + "}\n").encode("utf-8"))
    return [path]


CONVERTER = register(
    Converter(
        name="COCO",
        description="COCO detection/segmentation JSON: boxes, polygons and key points of images.",
        applies_to=applies_to,
        convert_fn=convert,
    )
)

parallel.register_job("COCO")
