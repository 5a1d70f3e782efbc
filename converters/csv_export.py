"""CSV and TSV: one row per annotation, columns = data fields + controls, sorted by name.

The header needs every column of the whole export, so rows are spooled to a temporary file
(one marshal record per chunk of tasks) while the column set is collected, and the lines are
written ahead for the columns seen so far (again, from the spool, when a column is added);
memory stays independent of the number of tasks.
"""

from __future__ import annotations

import csv
import io
import marshal
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from . import parallel
from .base import Converter, ConvertOptions, always, register
from .fastio import compact_json
from .items import ItemTask, annotator, prettify_result, task_items_or_warn
from .label_config import LabelConfig

_CHAT_TYPES = ("Chat", "chatmessage")
_FIXED = ("annotator", "annotation_id", "created_at", "updated_at", "lead_time")  # annotation fields, always
_EMPTY = '""'  # the cell of a missing column: DictWriter's restval "", quoted


def _json_cell(value: object) -> str:
    # Label Studio serialises with ujson: compact, non-ASCII kept, "/" escaped as "\/".
    return compact_json(value).replace("/", "\\/")


def _read_spool(spool: BinaryIO) -> Iterator[tuple[tuple, list]]:
    """The spooled records: (the sets of columns, the rows: (number of their set, cells))."""
    spool.seek(0)
    while True:
        head = spool.read(8)
        if not head:
            return
        yield marshal.loads(spool.read(int.from_bytes(head, "little")))


class CsvJob:
    """One task -> its rows (marshal bytes) and the columns they use. A row is its column names
    (outputs and id, data fields, annotation fields) and its cells in that order; the file's
    line is made from them with one template per distinct set of column names, once the header
    is known (see ``_line_template``)."""

    fields = ItemTask  # what task_items reads (workers decode only that)

    def __init__(self, config: LabelConfig) -> None:
        self.config = config

    def process(self, task: object, warn: Callable[[object, str], None],
                main: bool) -> tuple[list, set, set, set, bool] | None:
        items = task_items_or_warn(task, self.config, warn)
        if not items:
            return None
        rows = []
        input_keys: set[str] = set()
        output_keys: set[str] = set()
        extra_keys: set[str] = set()
        has_id = False
        for item in items:
            outputs: dict[str, str] = {}
            try:
                for name, value in item.output.items():
                    pretty = prettify_result(value)
                    outputs[name] = pretty if isinstance(pretty, str) else _json_cell(pretty)
                    for r in value:
                        if isinstance(r, dict) and r.get("type") in _CHAT_TYPES:
                            outputs[f"{name}_transcript"] = _transcript(pretty)
                            break
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                warn(item.id, f"annotation {item.annotation_id}: unexpected result shape ({exc})")
                continue
            inputs = {
                k: _json_cell(v) if isinstance(v, (dict, list)) else v for k, v in item.input.items()
            }
            meta_keys = _FIXED
            meta = (annotator(item), item.annotation_id, item.created_at, item.updated_at, item.lead_time)
            if "agreement" in item.extra or item.history:
                meta_keys, meta = list(meta_keys), list(meta)
                if "agreement" in item.extra:
                    meta_keys.append("agreement")
                    meta.append(item.extra["agreement"])
                    extra_keys.add("agreement")
                if item.history:
                    meta_keys.append("history")
                    meta.append(_json_cell(item.history))
                    extra_keys.add("history")
                meta_keys = tuple(meta_keys)
            input_keys.update(inputs)
            output_keys.update(item.output)
            if len(outputs) != len(item.output):
                extra_keys.update(k for k in outputs if k not in item.output)
            if item.id is not None:
                has_id = True
            if item.id is not None and "id" not in outputs:  # a control named "id" wins, as in DictWriter rows
                outputs["id"] = item.id
            cells = _cells((*outputs.values(), *inputs.values(), *meta))
            rows.append(((tuple(outputs), tuple(inputs), meta_keys), cells))
        if not rows:
            return None
        return rows, input_keys, output_keys, extra_keys, has_id

    def combine(self, payloads: list[tuple[list, set, set, set, bool]]) -> tuple[bytes, tuple, tuple, tuple, bool]:
        """All the rows (marshal bytes: exact for every JSON value, NaN and big integers included,
        and fast) and the columns they use."""
        rows: list = []
        input_keys: set[str] = set()
        output_keys: set[str] = set()
        extra_keys: set[str] = set()
        has_id = False
        column_sets: dict[tuple, int] = {}  # each row names its set of columns by number
        for task_rows, inputs, outputs, extra, task_has_id in payloads:
            for columns, cells in task_rows:
                number = column_sets.get(columns)
                if number is None:
                    number = column_sets[columns] = len(column_sets)
                rows.append((number, cells))
            input_keys |= inputs
            output_keys |= outputs
            extra_keys |= extra
            has_id = has_id or task_has_id
        record = marshal.dumps((tuple(column_sets), rows))
        return record, tuple(input_keys), tuple(output_keys), tuple(extra_keys), has_id


_MAX_RESTARTS = 4  # header changes after which rows are no longer written ahead


class _Body:
    """The file's lines, written while the tasks are still being converted, for the header the
    columns seen so far give; a new column (rare after the first tasks) changes the header, and
    the lines are then written again from the spool. The main process would otherwise wait for
    the workers and then write every line after them."""

    def __init__(self, out_dir: Path, sep: str) -> None:
        self.file = tempfile.TemporaryFile("w+b", dir=out_dir)  # noqa: SIM115 - _convert closes it (with)
        self.sep = sep
        self.header: tuple[tuple[str, ...], frozenset[str]] | None = None
        self.templates: dict[tuple, Callable[..., str]] = {}
        self.restarts = 0

    def add(self, record: tuple[tuple, list], header: tuple[tuple[str, ...], frozenset[str]],
            spool: BinaryIO) -> None:
        """Write ``record``'s rows (the newest in the spool); with a new header, every row in it."""
        if header == self.header:
            self.write((record,))
        elif self.restarts < _MAX_RESTARTS:
            self.restarts += 1
            self.rewrite(header, spool)
        # else: the lines are written at the end (``rewrite``)

    def rewrite(self, header: tuple[tuple[str, ...], frozenset[str]], spool: BinaryIO) -> None:
        """Every row in the spool, for ``header``."""
        self.header, self.templates = header, {}
        self.file.seek(0)
        self.file.truncate()
        end = spool.tell()
        self.write(_read_spool(spool))
        spool.seek(end)

    def write(self, records: Iterable[tuple[tuple, list]]) -> None:
        assert self.header is not None
        fieldnames, colliding = self.header
        templates = self.templates
        for column_sets, rows in records:
            fills = []
            for columns in column_sets:
                fill = templates.get(columns)
                if fill is None:
                    fill = templates[columns] = _line_template(columns, fieldnames, colliding, self.sep, _EMPTY)
                fills.append(fill)
            lines = [fills[number](*cells) for number, cells in rows]
            self._flush(lines)

    def _flush(self, lines: list[str]) -> None:
        if lines:
            lines.append("")
            self.file.write("\r\n".join(lines).encode("utf-8"))


def _header(input_keys: set[str], output_keys: set[str], extra_keys: set[str],
            has_id: bool) -> tuple[tuple[str, ...], frozenset[str]]:
    """The file's columns (sorted, as Label Studio's DictWriter has them) and the data fields
    renamed ``_data_<name>`` because a control has their name."""
    colliding = input_keys & output_keys
    keys = set(_FIXED) | output_keys | extra_keys
    keys |= {f"_data_{k}" if k in colliding else k for k in input_keys}
    if has_id:
        keys.add("id")
    return tuple(sorted(keys)), frozenset(colliding)


def _convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions,
             sep: str, filename: str, fmt: str) -> list[Path]:
    input_keys: set[str] = set()
    output_keys: set[str] = set()
    extra_keys: set[str] = set()
    has_id = False
    job = CsvJob(config)
    body = _Body(out_dir, sep)
    with tempfile.TemporaryFile("w+b", dir=out_dir) as spool, body.file:
        for data, inputs, outputs, extra, task_has_id in parallel.results(tasks, fmt, job, options):
            spool.write(len(data).to_bytes(8, "little") + data)
            input_keys.update(inputs)
            output_keys.update(outputs)
            if extra:
                extra_keys.update(extra)
            has_id = has_id or task_has_id
            body.add(marshal.loads(data), _header(input_keys, output_keys, extra_keys, has_id), spool)

        header = _header(input_keys, output_keys, extra_keys, has_id)
        if header != body.header:  # too many header changes (or no rows): all lines now
            body.rewrite(header, spool)
        path = out_dir / filename
        with open(path, "wb") as out:
            out.write((sep.join(map(_cell, header[0])) + "\r\n").encode("utf-8"))  # DictWriter.writeheader
            body.file.seek(0)
            shutil.copyfileobj(body.file, out, 1 << 20)
    return [path]


def _line_template(columns: tuple[tuple, tuple, tuple], fieldnames: list[str], colliding: set[str],
                   sep: str, empty: str) -> Callable[..., str]:
    """``template(*cells)`` is the line of a row with these columns (outputs and id, data fields,
    annotation fields), as a ``DictWriter`` writes the dict made of them in that order: a data
    field named like an output is ``_data_<name>``, a later name wins, a missing one is empty."""
    head, inputs, meta = columns
    where = {}
    for i, name in enumerate((*head, *(f"_data_{k}" if k in colliding else k for k in inputs), *meta)):
        where[name] = i
    return sep.join(f"{{{where[k]}}}" if k in where else empty for k in fieldnames).format


def _cells(values: tuple) -> tuple[str, ...]:
    """``_cell`` of each value (strings, numbers and None, the common cells, without a call each)."""
    return tuple([
        ('"' + v.replace('"', '""') + '"' if '"' in v else '"' + v + '"') if (kind := v.__class__) is str
        else '""' if v is None
        else str(v) if kind is int or kind is float
        else _cell(v)
        for v in values
    ])


def _cell(value: object) -> str:
    """One cell as ``csv.writer(quoting=QUOTE_NONNUMERIC)`` writes it (for either delimiter: every
    string is quoted). Values other than str, None, int and float go through the csv module."""
    if isinstance(value, str):
        return '"' + value.replace('"', '""') + '"' if '"' in value else '"' + value + '"'
    if value is None:
        return '""'
    if isinstance(value, (int, float)):  # bool too: True
        return str(value)
    probe = io.StringIO()
    csv.writer(probe, quoting=csv.QUOTE_NONNUMERIC, lineterminator="").writerow([value])
    return probe.getvalue()


def _transcript(pretty: object) -> str:
    lines = []
    if isinstance(pretty, list):
        for message in pretty:
            if not isinstance(message, dict):
                continue
            role = str(message.get("role", ""))
            content = str(message.get("content", ""))
            if role:
                lines.append(f"{role}: {content}" if content else f"{role}:")
            else:
                lines.append(content)
    return "\n".join(lines)


def convert_csv(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    return _convert(tasks, config, out_dir, options, ",", "result.csv", "CSV")


def convert_tsv(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions) -> list[Path]:
    return _convert(tasks, config, out_dir, options, "\t", "result.tsv", "TSV")


CSV = register(
    Converter(
        name="CSV",
        description="Comma-separated table, one row per annotation; columns are data fields and controls.",
        applies_to=always,
        convert_fn=convert_csv,
        extension="csv",
    )
)
TSV = register(
    Converter(
        name="TSV",
        description="Tab-separated table, one row per annotation; columns are data fields and controls.",
        applies_to=always,
        convert_fn=convert_tsv,
        extension="tsv",
    )
)

parallel.register_job("CSV")
parallel.register_job("TSV")
