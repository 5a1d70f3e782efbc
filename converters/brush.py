"""BRUSH_TO_NUMPY and BRUSH_TO_PNG: one mask per brush region (decoded alpha channel, H x W)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .base import Converter, ConvertOptions, register
from .items import Item, iter_items
from .label_config import LabelConfig
from .media import file_name
from .rle import decode_rle, png_gray8


def applies_to(config: LabelConfig) -> str | None:
    controls = config.control_types
    if len(config.data_keys) > 1:
        return f"brush formats need a config that reads one data field; this one reads {', '.join(config.data_keys)}"
    if "Image" in config.object_types and (
        "BrushLabels" in controls or "brushlabels" in controls or "Brush" in controls and "Labels" in controls
    ):
        return None
    return f"brush formats need BrushLabels on an Image; this config has {config.describe()}"


def _layers(from_name: str, results: list[dict]) -> list[tuple[str, object]]:
    import numpy as np

    layers = []
    counters: dict[str, int] = {}
    for result in results:
        kind = str(result.get("type", "")).lower()
        key = "brushlabels" if kind == "brushlabels" else ("labels" if kind == "labels" else None)
        if key is None or "rle" not in result:
            continue
        width, height = result["original_width"], result["original_height"]
        labels = result[key] if key in result else ["no_label"]
        name = from_name + "-" + "-".join(labels)
        n = counters.get(name, 0)
        counters[name] = n + 1
        flat = decode_rle(result["rle"])
        layers.append((f"{name}-{n}", np.reshape(flat, [height, width, 4])[:, :, 3]))
    return layers


def _file_stem(item: Item, layer: str) -> str:
    who = item.completed_by
    email = who.get("email", "") if isinstance(who, dict) else ("" if who is None else str(who))
    email = "".join(c for c in email if c.isalnum() or c in "@.")
    layer = layer.replace("/", "-").replace("\\", "-")
    return f"task-{item.id}-annotation-{item.annotation_id}-by-{email}-{layer}"


def _convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions,
             fmt: str) -> list[Path]:
    import numpy as np

    written: list[Path] = []
    for item in iter_items(tasks, config, options):
        try:
            layers = [layer for name, rs in item.output.items() for layer in _layers(name, rs)]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            options.warn(item.id, f"annotation {item.annotation_id}: cannot decode brush mask ({exc})")
            continue
        try:
            stems = [file_name(_file_stem(item, name) + ".npy")[:-4] for name, _ in layers]
        except ValueError as exc:
            options.warn(item.id, f"annotation {item.annotation_id}: {exc}")
            continue
        for stem, (_, image) in zip(stems, layers, strict=True):
            if fmt == "numpy":
                path = out_dir / f"{stem}.npy"
                np.save(path, image)
            else:
                path = out_dir / f"{stem}.png"
                path.write_bytes(png_gray8(image))  # type: ignore[arg-type]
            written.append(path)
    return written


def convert_numpy(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    return _convert(tasks, config, out_dir, options, "numpy")


def convert_png(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    return _convert(tasks, config, out_dir, options, "png")


BRUSH_TO_NUMPY = register(
    Converter(
        name="BRUSH_TO_NUMPY",
        description="Brush masks as NumPy .npy arrays (height x width, uint8), one per region.",
        applies_to=applies_to,
        convert_fn=convert_numpy,
    )
)
BRUSH_TO_PNG = register(
    Converter(
        name="BRUSH_TO_PNG",
        description="Brush masks as 8-bit grayscale PNG images, one per region.",
        applies_to=applies_to,
        convert_fn=convert_png,
    )
)
