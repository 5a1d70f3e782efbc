"""CONLL2003: "<token> -X- _ <tag>" lines with BIO tags, one block per annotation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from pathlib import Path

from . import parallel
from .base import Converter, ConvertOptions, register
from .fastio import replacing, write_joined
from .items import RegionTask, task_items_or_warn
from .label_config import LabelConfig
from .treebank import found_tokens, not_found, tokens_in_text

_START = itemgetter("start")


class _LineEnds(dict):
    """tag -> what follows a token on its line ("O" -> " -X- _ O\n")."""

    def __missing__(self, tag: str) -> str:
        self[tag] = end = f" -X- _ {tag}\n"
        return end


class _Tags(dict):
    """tag -> the tag itself: ``tokens_and_tags`` gives plain tags unless told otherwise."""

    def __missing__(self, tag: str) -> str:
        self[tag] = tag
        return tag


_LINE_ENDS = _LineEnds()
_TAGS = _Tags()


def applies_to(config: LabelConfig) -> str | None:
    if len(config.data_keys) > 1:
        return f"CONLL2003 needs a config that reads one data field; this one reads {', '.join(config.data_keys)}"
    if "Text" in config.object_types and "Labels" in config.control_types:
        return None
    return f"CONLL2003 needs Labels on a Text object; this config has {config.describe()}"


def tokens_and_tags(text: str, spans: list[dict] | None, tokens: list[str] | None = None,
                    spelled: Mapping[str, str] = _TAGS) -> tuple[list[str], list[str]]:
    """Label Studio's ``create_tokens_and_tags``, including its span-matching quirks.
    ``tokens``: the text's tokens, when an earlier call gave them (not changed here);
    ``spelled``: each tag as it is to be given (CONLL2003's lines: what follows the token)."""
    outside = spelled["O"]
    whole = False  # spans, each with a start and an end
    if spans:
        whole = True
        for span in spans:
            if span.get("start") is None or span.get("end") is None:
                whole = False
                break
    if not whole:
        if tokens is None:
            tokens = found_tokens(text)
        return tokens, [outside] * len(tokens)
    if tokens is None:
        tokens = tokens_in_text(text)
    pending = sorted(spans, key=_START)
    pending.reverse()  # pop() from the end = the next span by start
    span = pending.pop()
    span_start, span_end = span["start"], span["end"] - 1
    labels = span.get("labels")
    prefix = "B-"
    tags = []
    find = text.find
    token_end = -1
    for token in tokens:  # each token's offsets as in treebank.token_starts
        token_start = find(token, token_end + 1)
        if token_start < 0:
            raise not_found(token, text)
        token_end = token_start + len(token) - 1
        if token_start > span_end:
            while pending:
                span = pending.pop()
                span_start, span_end = span["start"], span["end"] - 1
                labels = span.get("labels")
                prefix = "B-"
                if token_start <= span_end:
                    break
        if token_end < span_start or not labels:
            tags.append(outside)
        elif span_start <= token_end and span_end >= token_start:
            tags.append(spelled[prefix + labels[0]])
            prefix = "I-"
        else:
            tags.append(outside)
    return tokens, tags


class ConllJob:
    """One task -> its CoNLL blocks (one per annotation)."""

    fields = RegionTask  # what task_items reads for it (workers decode only that)

    def __init__(self, config: LabelConfig) -> None:
        self.config = config
        self.data_key = config.data_keys[0]

    def process(self, task: object, warn: Callable[[object, str], None], main: bool) -> str | None:
        items = task_items_or_warn(task, self.config, warn, owned=not main)
        if not items:
            return None
        data_key = self.data_key
        parts: list[str] = []  # each token, then the rest of its line; a blank line after each block
        known: dict[str, list[str]] = {}  # text -> its tokens: a task's annotations share its text
        for item in items:
            try:
                spans = None  # the first control's results that are Labels
                for values in item.output.values():
                    if values and str(values[0].get("type", "")).lower() == "labels":
                        spans = values
                        break
                text = item.input[data_key]
                if not isinstance(text, str):
                    raise TypeError(f"data[{data_key!r}] is not a string")
                tokens, ends = tokens_and_tags(text, spans, known.get(text), _LINE_ENDS)
                known[text] = tokens
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                warn(item.id, f"annotation {item.annotation_id}: {exc!r}")
                continue
            # interleaved by slice assignment: no string made per line before the one join
            start = len(parts)
            parts += tokens
            parts += tokens
            parts[start::2] = tokens
            parts[start + 1::2] = ends
            parts.append("\n")
        return "".join(parts) if parts else None

    def combine(self, payloads: list[str]) -> str:
        return "".join(payloads)


def convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    path = out_dir / "result.conll"
    job = ConllJob(config)
    with replacing(path, "utf-8") as out:
        out.write("-DOCSTART- -X- O\n")
        write_joined(out.write, parallel.results(tasks, "CONLL2003", job, options), "")
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

parallel.register_job("CONLL2003")
