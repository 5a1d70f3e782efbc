"""Class lists (names -> ids) the way Label Studio's COCO/YOLO exporters build them."""

from __future__ import annotations

import itertools
import logging

from .label_config import LabelConfig

logger = logging.getLogger("converters")


def label_categories(config: LabelConfig) -> tuple[list[dict], dict[str, int]]:
    """Label Studio's ``Converter._get_labels``.

    Labels with a ``category`` attribute keep that id; all other label names of every control are
    sorted alphabetically and take the lowest free ids.
    """
    labels: set[str] = set()
    categories: list[dict] = []
    name_to_id: dict[str, int] = {}
    for control in config.controls.values():
        labels |= set(control.labels)
        for label, attrs in control.label_attrs.items():
            raw = attrs.get("category")
            if raw is None:
                continue
            try:
                category_id = int(raw)
            except (TypeError, ValueError):
                logger.warning("invalid category id %r for label %r in tag %r", raw, label, control.name)
                continue
            categories.append({"id": category_id, "name": label})
            name_to_id[label] = category_id
    used = set(name_to_id.values())
    free_ids = (c for c in itertools.count() if c not in used)
    for label, idx in zip(sorted(labels - set(name_to_id)), free_ids, strict=False):
        categories.append({"id": idx, "name": label})
        name_to_id[label] = idx
    return categories, name_to_id


def keypoint_labels(config: LabelConfig) -> list[str]:
    return config.labels_of_type("KeyPointLabels")


def keypoint_order(config: LabelConfig) -> list[str]:
    """Label Studio's ``build_kp_order``: KeyPointLabels labels sorted by ``model_index``."""
    block: dict[str, dict[str, str]] = {}
    for control in config.controls_of_type("KeyPointLabels"):
        block.update(control.label_attrs)
    pairs, used = [], set()
    for name, attrs in block.items():
        try:
            idx = int(attrs.get("model_index"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if idx in used:
            continue
        pairs.append((idx, name))
        used.add(idx)
    pairs.sort(key=lambda p: p[0])
    return [name for _, name in pairs]
