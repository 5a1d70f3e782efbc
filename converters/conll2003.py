"""CONLL2003: "<token> -X- _ <tag>" lines with BIO tags, one block per annotation."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .base import Converter, ConvertOptions, register
from .items import iter_items
from .label_config import LabelConfig
from .treebank import span_tokenize


def applies_to(config: LabelConfig) -> str | None:
    if len(config.data_keys) > 1:
        return f"CONLL2003 needs a config that reads one data field; this one reads {', '.join(config.data_keys)}"
    if "Text" in config.object_types and "Labels" in config.control_types:
        return None
    return f"CONLL2003 needs Labels on a Text object; this config has {config.describe()}"


def tokens_and_tags(text: str, spans: list[dict] | None) -> tuple[list[str], list[str]]:
    """Label Studio's ``create_tokens_and_tags``, including its span-matching quirks."""
    tokens_and_idx = [(text[s:e], s) for s, e in span_tokenize(text)]
    if not (spans and all(s.get("start") is not None and s.get("end") is not None for s in spans)):
        tokens = [t for t, _ in tokens_and_idx]
        return tokens, ["O"] * len(tokens)
    pending = sorted(spans, key=lambda s: s["start"])
    span = pending.pop(0)
    span_start, span_end = span["start"], span["end"] - 1
    prefix = "B-"
    tokens, tags = [], []
    for token, token_start in tokens_and_idx:
        tokens.append(token)
        token_end = token_start + len(token) - 1
        if token_start > span_end:
            while pending:
                span = pending.pop(0)
                span_start, span_end = span["start"], span["end"] - 1
                prefix = "B-"
                if token_start <= span_end:
                    break
        if not span or token_end < span_start or not span.get("labels"):
            tags.append("O")
        elif span_start <= token_end and span_end >= token_start:
            tags.append(prefix + span["labels"][0])
            prefix = "I-"
        else:
            tags.append("O")
    return tokens, tags


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    data_key = config.data_keys[0]
    path = out_dir / "result.conll"
    with open(path, "w", encoding="utf-8") as out:
        out.write("-DOCSTART- -X- O\n")
        for item in iter_items(tasks, config, options):
            try:
                spans = next(
                    (v for v in item.output.values() if v and str(v[0].get("type", "")).lower() == "labels"),
                    None,
                )
                text = item.input[data_key]
                if not isinstance(text, str):
                    raise TypeError(f"data[{data_key!r}] is not a string")
                tokens, tags = tokens_and_tags(text, spans)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                options.warn(item.id, f"annotation {item.annotation_id}: {exc!r}")
                continue
            out.write("".join(f"{token} -X- _ {tag}\n" for token, tag in zip(tokens, tags, strict=True)))
            out.write("\n")
    return [path]


CONVERTER = register(
    Converter(
        name="CONLL2003",
        description="CoNLL 2003 NER: Treebank tokens with BIO tags, one block per annotation.",
        applies_to=applies_to,
        convert_fn=convert,
        extension="conll",
    )
)
