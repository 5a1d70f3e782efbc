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
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from . import parallel
from .base import Converter, ConvertOptions, always, register
from .fastio import compact_json, replacing
from .items import Item, ItemTask, annotator, prettify_result, task_items_or_warn
from .label_config import LabelConfig

_CHAT_TYPES = ("Chat", "chatmessage")
_FIXED = ("annotator", "annotation_id", "created_at", "updated_at", "lead_time")  # annotation fields, always
_EMPTY = '""'  # the cell of a missing column: DictWriter's restval "", quoted


def _json_cell(value: object, finite: bool = False) -> str:
    # Label Studio serialises with ujson: compact, non-ASCII kept, "/" escaped as "\/".
    # (finite: see compact_json)
    return compact_json(value, finite).replace("/", "\\/")


def _json_text_cell(value: object, finite: bool = False) -> str:
    """``_text_cell(_json_cell(value))``, the cell of a value written as JSON (one call, not three)."""
    return '"' + compact_json(value, finite).replace('"', '""').replace("/", "\\/") + '"'


def _read_spool(spool: BinaryIO) -> Iterator[tuple[tuple, list]]:
    """The spooled records: (the sets of columns, the rows: (number of their set, cells))."""
    spool.seek(0)
    while True:
        head = spool.read(8)
        if not head:
            return
        yield marshal.loads(spool.read(int.from_bytes(head, "little")))


class CsvJob:
    """One task -> its rows. A row is its columns, ``(outputs and id, data fields, annotation
    fields, the controls among the outputs)`` (names), and its cells in that order; the file's
    line is made from them with one template per distinct set of columns, once the header is
    known (see ``_line_template``)."""

    fields = ItemTask  # what task_items reads (workers decode only that)

    def __init__(self, config: LabelConfig) -> None:
        self.config = config

    def process(self, task: object, warn: Callable[[object, str], None], main: bool) -> list | None:
        items = task_items_or_warn(task, self.config, warn, owned=not main)
        if not items:
            return None
        data = items[0].input  # the task's data, the same for all its items
        finite = not main  # a worker's tasks were decoded from JSON: they hold no NaN
        input_keys = tuple(data)
        input_cells = tuple([
            _text_cell(v) if v.__class__ is str else _cell(_json_cell(v, finite) if isinstance(v, (dict, list)) else v)
            for v in data.values()
        ])
        rows = []
        for item in items:
            try:
                outputs = _output_cells(item.output, finite)
            except (KeyError, TypeError, AttributeError, ValueError) as exc:
                warn(item.id, f"annotation {item.annotation_id}: unexpected result shape ({exc})")
                continue
            meta_keys = _FIXED
            meta_cells = _annotation_cells(item)
            if "agreement" in item.extra or item.history:
                meta_keys, more = list(meta_keys), []
                if "agreement" in item.extra:
                    meta_keys.append("agreement")
                    more.append(item.extra["agreement"])
                if item.history:
                    meta_keys.append("history")
                    more.append(_json_cell(item.history, finite))
                meta_keys = tuple(meta_keys)
                meta_cells += _cells(tuple(more))
            if item.id is not None and "id" not in outputs:  # a control named "id" wins, as in DictWriter rows
                outputs["id"] = str(item.id) if item.id.__class__ is int else _cell(item.id)
            rows.append((
                (tuple(outputs), input_keys, meta_keys, tuple(item.output)),
                (*outputs.values(), *input_cells, *meta_cells),
            ))
        return rows or None

    def combine(self, payloads: list[list]) -> bytes:
        """The rows of consecutive tasks as one marshal record, ``(the sets of columns, the rows:
        (number of their set, cells))``: exact for every JSON value, NaN and big integers
        included, and fast."""
        rows: list = []
        column_sets: dict[tuple, int] = {}
        for task_rows in payloads:
            for columns, cells in task_rows:
                number = column_sets.get(columns)
                if number is None:
                    number = column_sets[columns] = len(column_sets)
                rows.append((number, cells))
        return marshal.dumps((tuple(column_sets), rows))


def _output_cells(output: dict[str, list[dict]], finite: bool = False) -> dict[str, str]:
    """The cell of each control's results (and of a chat control's transcript)."""
    cells: dict[str, str] = {}
    for name, values in output.items():
        chat = False
        for v in values:
            if v.get("type") in _CHAT_TYPES:
                chat = True
                break
        pretty = prettify_result(values, in_place=True)  # the item is not used after this
        cells[name] = _text_cell(pretty) if isinstance(pretty, str) else _json_text_cell(pretty, finite)
        if chat:
            cells[f"{name}_transcript"] = _text_cell(_transcript(pretty))
    return cells


_MAX_RESTARTS = 4  # header changes after which rows are no longer written ahead


class _Body:
    """The file, written while the tasks are still being converted: the header the columns seen
    so far give, then the lines. A new column (rare after the first tasks) changes the header,
    and the file is then written again from the spool. The main process would otherwise wait
    for the workers and then write every line after them."""

    def __init__(self, file: BinaryIO, sep: str) -> None:
        self.file = file
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
        # else: the file is written at the end (``rewrite``)

    def rewrite(self, header: tuple[tuple[str, ...], frozenset[str]], spool: BinaryIO) -> None:
        """The header line and every row in the spool, for ``header``."""
        self.header, self.templates = header, {}
        self.file.seek(0)
        self.file.truncate()
        self.file.write((self.sep.join(map(_cell, header[0])) + "\r\n").encode("utf-8"))  # DictWriter.writeheader
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
            # each line encoded on its own: one with a character beyond Latin-1 (a dash in a
            # caption) would make the joined text UCS-2, whose encoding is twice as slow
            lines = [fills[number](*cells).encode("utf-8") for number, cells in rows]
            if lines:
                lines.append(b"")
                self.file.write(b"\r\n".join(lines))


class _Columns:
    """The columns of every row so far: the file's header."""

    def __init__(self) -> None:
        self.seen: set[tuple] = set()
        self.names = set(_FIXED)  # outputs, id and annotation fields
        self.outputs: set[str] = set()  # controls (a data field with a control's name is renamed)
        self.inputs: set[str] = set()  # data fields
        self.header: tuple[tuple[str, ...], frozenset[str]] = self._make()

    def add(self, column_sets: tuple) -> tuple[tuple[str, ...], frozenset[str]]:
        """The header once these column sets are in."""
        changed = False
        for columns in column_sets:
            if columns not in self.seen:
                self.seen.add(columns)
                head, inputs, meta, outputs = columns
                changed = True
                self.names.update(head, meta)
                self.inputs.update(inputs)
                self.outputs.update(outputs)
        if changed:
            self.header = self._make()
        return self.header

    def _make(self) -> tuple[tuple[str, ...], frozenset[str]]:
        """The file's columns (sorted, as Label Studio's DictWriter has them) and the data fields
        renamed ``_data_<name>`` because a control has their name."""
        colliding = self.inputs & self.outputs
        keys = self.names | {f"_data_{k}" if k in colliding else k for k in self.inputs}
        return tuple(sorted(keys)), frozenset(colliding)


def _convert(tasks: Iterable[dict], config: LabelConfig, out_dir: Path, options: ConvertOptions,
             sep: str, filename: str, fmt: str) -> list[Path]:
    columns = _Columns()
    path = out_dir / filename
    with replacing(path) as file, tempfile.TemporaryFile("w+b", dir=out_dir) as spool:
        body = _Body(file, sep)
        for data in parallel.results(tasks, fmt, CsvJob(config), options):
            spool.write(len(data).to_bytes(8, "little") + data)
            record = marshal.loads(data)
            body.add(record, columns.add(record[0]), spool)
        if columns.header != body.header:  # too many header changes (or no rows): all of it now
            body.rewrite(columns.header, spool)
    return [path]


def _line_template(columns: tuple[tuple, tuple, tuple, tuple], fieldnames: list[str], colliding: set[str],
                   sep: str, empty: str) -> Callable[..., str]:
    """``template(*cells)`` is the line of a row with these columns (outputs and id, data fields,
    annotation fields; the controls among the outputs), as a ``DictWriter`` writes the dict made
    of them in that order: a data field named like an output is ``_data_<name>``, a later name
    wins, a missing one is empty."""
    head, inputs, meta, _ = columns
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


def _annotation_cells(item: Item) -> tuple[str, ...]:
    """``_cells`` of the annotation fields (``_FIXED``), the usual types without a check per cell."""
    who, created, updated = item.completed_by, item.created_at, item.updated_at
    annotation_id, lead_time = item.annotation_id, item.lead_time
    if (who.__class__ is int and annotation_id.__class__ is int and created.__class__ is str
            and updated.__class__ is str and lead_time.__class__ is float and '"' not in created
            and '"' not in updated):
        return f'"{who}"', str(annotation_id), f'"{created}"', f'"{updated}"', str(lead_time)
    return _cells((annotator(item), annotation_id, created, updated, lead_time))


def _text_cell(text: str) -> str:
    """``_cell`` of a string."""
    return '"' + text.replace('"', '""') + '"' if '"' in text else f'"{text}"'


def _cell(value: object) -> str:
    """One cell as ``csv.writer(quoting=QUOTE_NONNUMERIC)`` writes it (for either delimiter: every
    string is quoted). Values other than str, None, int and float go through the csv module."""
    if isinstance(value, str):
        return _text_cell(value)
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
