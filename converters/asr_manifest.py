"""ASR_MANIFEST: NVIDIA NeMo JSON-lines manifest (audio path, duration, transcript, annotator)."""

from __future__ import annotations

import json
import posixpath
import shutil
import wave
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from .base import Converter, ConvertOptions, register
from .items import annotator, iter_items
from .label_config import LabelConfig
from .media import file_name, local_files_name


def applies_to(config: LabelConfig) -> str | None:
    if len(config.data_keys) > 1:
        return f"ASR_MANIFEST needs a config that reads one data field; this one reads {', '.join(config.data_keys)}"
    objects = config.object_types
    if ("Audio" in objects or "AudioPlus" in objects) and "TextArea" in config.control_types:
        return None
    return f"ASR_MANIFEST needs a TextArea on an Audio object; this config has {config.describe()}"


def audio_name(url: str) -> str:
    """File name Label Studio gives the audio inside ``audio/``."""
    if url.startswith("/data/upload"):
        return posixpath.basename(unquote(url.replace("/data/upload/", "")))
    local = local_files_name(url)
    if local is not None:
        return local
    return posixpath.basename(urlparse(url).path)


def audio_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as f:
        return f.getnframes() / float(f.getframerate())


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    audio_dir = out_dir / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    data_key = config.data_keys[0]
    manifest = out_dir / "manifest.json"
    written = [manifest]
    resolver = options.media_resolver
    with open(manifest, "w", encoding="utf-8") as out:
        for item in iter_items(tasks, config, options):
            if not item.output and item.annotation_id is None and item.completed_by is None:
                continue  # task without annotations: no transcript (Label Studio reuses the previous one)
            try:
                texts = next((v for v in item.output.values() if len(v) > 0 and "text" in v[0]), None)
                if texts is None:
                    raise ValueError("no transcription in this annotation")
                transcript = texts[0]["text"][0]
                url = item.input[data_key]
                if not isinstance(url, str):
                    raise TypeError(f"data[{data_key!r}] is not an audio URL")
                name = file_name(audio_name(url)) if resolver is not None else audio_name(url)
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                options.warn(item.id, f"annotation {item.annotation_id}: {exc}")
                continue
            duration = None
            if resolver is not None:
                local = resolver(url)
                try:
                    if local is None:
                        raise FileNotFoundError(url)
                    duration = audio_duration(Path(local))
                except (OSError, EOFError, wave.Error) as exc:
                    options.warn(item.id, f"audio {url} not available or not a WAV file ({exc})")
                    continue
                target = audio_dir / name
                if not target.exists():
                    shutil.copyfile(local, target)
                    written.append(target)
            record = {
                "audio_filepath": f"audio/{name}",
                "duration": duration,
                "text": transcript,
                "annotator": annotator(item, default=""),
            }
            out.write(json.dumps(record) + "\n")
    return written


CONVERTER = register(
    Converter(
        name="ASR_MANIFEST",
        description="NeMo ASR manifest: one JSON line per transcription with audio path and duration.",
        applies_to=applies_to,
        convert_fn=convert,
    )
)
