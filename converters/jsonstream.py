"""Streaming reader for big JSON exports: the elements of a top-level array, one at a time.

Label Studio's JSON export is one array of task objects (hundreds of MB for 100k tasks), so it
is never loaded whole. Two ways of finding the elements, with identical results:

* **exact** (always available): ``json.JSONDecoder.raw_decode`` on decoded text windows.
* **fast** (when ``orjson`` is installed; it is optional): the end of an object element is
  guessed at the next occurrence of the separator seen between the previous two elements
  (e.g. ``},{"id":``) where the counts of ``{``/``}`` and ``[``/``]`` balance, and the guess is
  checked by parsing exactly that slice with ``orjson``. Starting from a true element start, a
  slice that parses as one JSON object ends at the true end of that object (objects are
  prefix-free), so every accepted guess is right. Any miss (brackets inside strings, a
  different separator, NaN or huge integers that orjson refuses, the last element) falls back
  to the exact way for that one element.

Memory: the current buffer (a few MB) plus one element.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

try:  # optional accelerator, never required
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]

__all__ = ["JSONStreamError", "have_orjson", "iter_array_batches", "iter_array_file", "loads"]

_WS = b" \t\r\n"
_SEP_PREFIX = 12  # bytes of the next element's start that belong to the learned separator
_MAX_GUESS = 64 << 20  # an element longer than this is read the exact way
# orjson turns integers beyond 64 bits into floats (json keeps them exact): an element with a
# run of 19+ digits is read the exact way. Digits map to "0", everything else to " ".
_DIGITS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_RUN = b"0" * 19


class JSONStreamError(ValueError):
    """The file is not a JSON array (message without the file name)."""


class Unreadable:
    """What a reader yields in place of an array element it skipped (a task nested deeper than
    the parser goes), or after the array for bytes that follow it: ``task_id`` (None when
    unknown) and why, for the caller to warn about."""

    __slots__ = ("task_id", "reason")

    def __init__(self, task_id: int | None, reason: str) -> None:
        self.task_id = task_id
        self.reason = reason


class NonFinite(ValueError):
    """A number JSON cannot hold (NaN, Infinity, or one too large for a float)."""


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf or nan
        raise NonFinite(f"{text} is a number JSON cannot hold")
    return value


def _reject_constant(name: str) -> float:
    raise NonFinite(f"{name} is not a JSON number")


# The json module's decoder, refusing what JSON cannot hold instead of making NaN or inf of it.
STRICT = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)


def strict_loads(text: str | bytes | memoryview) -> Any:
    """``json.loads`` that raises ``NonFinite`` for NaN, Infinity and out-of-range numbers."""
    return STRICT.decode(text if isinstance(text, str) else str(text, "utf-8"))


_TASK_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*(-?\d{1,19})\s*[,}]')


def have_orjson() -> bool:
    return _orjson is not None


def loads(data: bytes | str) -> Any:
    """``json.loads`` with orjson when it is installed and accepts the input."""
    if _orjson is not None:
        try:
            return _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
    return strict_loads(data)


class _Reader:
    """A byte buffer over a binary file, refilled on demand."""

    __slots__ = ("f", "buf", "pos", "eof", "chunk", "base")

    def __init__(self, f: BinaryIO, chunk: int, base: int = 0) -> None:
        self.f = f
        self.chunk = max(chunk, 1)
        self.buf = b""
        self.pos = 0
        self.eof = False
        self.base = base  # file offset of buf[0]

    def fill(self, at_least: int = 0) -> bool:
        """Read more (keeping bytes from ``pos`` on); False at end of file."""
        if self.eof:
            return False
        want = max(self.chunk, at_least, len(self.buf) - self.pos)
        more = self.f.read(want)
        if not more:
            self.eof = True
            return False
        self.base += self.pos
        self.buf = self.buf[self.pos:] + more
        self.pos = 0
        return True

    def skip_ws(self) -> bool:
        """Move past whitespace; False if only whitespace is left."""
        while True:
            buf, pos, n = self.buf, self.pos, len(self.buf)
            while pos < n and buf[pos] in _WS:
                pos += 1
            self.pos = pos
            if pos < n:
                return True
            if not self.fill():
                return False


def _exact(reader: _Reader) -> Any:
    """Decode the JSON value at ``reader.pos`` exactly (json module) and move past it."""
    return _exact_span(reader)[0]


def _exact_span(reader: _Reader) -> tuple[Any, int]:
    """``_exact``, also giving where the value starts in ``reader.buf`` (which refills may move)."""
    decoder = STRICT
    size = 1 << 12  # doubled until the value fits
    while True:
        end = min(len(reader.buf), reader.pos + size)
        window = reader.buf[reader.pos:end]
        cut = len(window)
        if end < len(reader.buf) or not reader.eof:
            # do not split a UTF-8 sequence: back off over continuation bytes
            while cut > 0 and (window[cut - 1] & 0xC0) == 0x80:
                cut -= 1
            if cut > 0 and window[cut - 1] >= 0xC0:
                cut -= 1
        complete = end >= len(reader.buf) and reader.eof
        try:
            text = window[:cut].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONStreamError(f"not UTF-8 text ({exc.reason})") from None
        try:
            value, stop = decoder.raw_decode(text)
        except json.JSONDecodeError as exc:
            if complete:
                raise JSONStreamError(f"invalid JSON ({exc.msg} near byte {reader.base + reader.pos + exc.pos})"
                                      ) from None
            stop = -1
        except RecursionError:
            start = reader.pos
            return _skip_value(reader, f"nests deeper than {sys.getrecursionlimit()} levels"), start
        except NonFinite as exc:  # (a number cut off by the window is never larger than the whole)
            start = reader.pos
            return _skip_value(reader, f"holds what JSON cannot: {exc}"), start
        if not complete and (stop == len(text) or stop > 0 and text[stop] in "0123456789.eE+-"):
            stop = -1  # a number may go on after the window
        if stop >= 0:
            start = reader.pos
            reader.pos += len(text[:stop].encode("utf-8"))
            return value, start
        if end >= len(reader.buf):
            reader.fill(reader.chunk)  # keeps bytes from pos on
        size *= 2


_SEPARATOR = re.compile(rb"[ \t\r\n]*(?:,[ \t\r\n]*|\])")


def _skip_value(reader: _Reader, reason: str) -> Unreadable:
    """Move past the value at ``reader.pos`` without decoding it (it nests too deep to decode,
    or holds what JSON cannot), by counting brackets outside strings."""
    found = _TASK_ID.match(reader.buf, reader.pos)
    task_id = int(found.group(1)) if found else None
    depth, in_string, escaped, pos = 0, False, False, reader.pos
    while True:
        buf = reader.buf
        for pos in range(pos, len(buf)):  # noqa: B020 - resumed where the last buffer ended
            c = buf[pos]
            if in_string:
                if escaped:
                    escaped = False
                elif c == 0x5C:  # \
                    escaped = True
                elif c == 0x22:  # "
                    in_string = False
            elif c == 0x22:
                in_string = True
            elif c == 0x5B or c == 0x7B:  # [ {
                depth += 1
            elif c == 0x5D or c == 0x7D or c == 0x2C:  # ] } ,
                if depth == 0:  # the end of a value that is no array or object (a bare NaN)
                    reader.pos = pos
                    return Unreadable(task_id, reason)
                if c != 0x2C:
                    depth -= 1
                    if depth == 0:
                        reader.pos = pos + 1
                        return Unreadable(task_id, reason)
        resume = len(buf) - reader.pos
        if not reader.fill():
            raise JSONStreamError("unexpected end of file inside the task array")
        pos = resume


def _after_array(reader: _Reader) -> Unreadable | None:
    """At the array's closing bracket (or white space before it): what follows the bracket,
    other than white space, is reported."""
    reader.skip_ws()
    reader.pos += 1  # the "]"
    if reader.skip_ws():
        return Unreadable(None, f"bytes after the task array (from byte {reader.base + reader.pos}) were ignored")
    return None


def _open_array(reader: _Reader, inside: bool) -> bool:
    """Move to the first element; False for an empty array."""
    if inside:
        if not reader.skip_ws():
            raise JSONStreamError("unexpected end of file inside the task array")
        return True
    if not reader.skip_ws():
        raise JSONStreamError("file is empty")
    if reader.buf[reader.pos] != 0x5B:  # [
        raise JSONStreamError("not a JSON array")
    reader.pos += 1
    if not reader.skip_ws():
        raise JSONStreamError("unexpected end of file inside the task array")
    return reader.buf[reader.pos] != 0x5D  # ]


def _next_element(reader: _Reader, learn: bool) -> tuple[bool, bytes, int]:
    """Move past the separator after an element: (more elements follow, separator, skip).

    With ``learn``, the separator is "}" + the bytes between the elements + the start of the
    next one up to its first key (empty when the next element is not an object), and ``skip``
    the length of what lies between the two elements.
    """
    if len(reader.buf) - reader.pos < 4096 and not reader.eof:
        reader.fill(4096)
    m = _SEPARATOR.match(reader.buf, reader.pos)
    if m is None or m.end() == len(reader.buf):
        # rare: long whitespace, or the buffer ends inside it
        if not reader.skip_ws():
            raise JSONStreamError("unexpected end of file inside the task array")
        here = reader.buf[reader.pos]
        if here == 0x5D:  # ]
            return False, b"", 0
        if here != 0x2C:  # ,
            raise JSONStreamError("expected ',' or ']' after a task")
        reader.pos += 1
        if not reader.skip_ws():
            raise JSONStreamError("unexpected end of file inside the task array")
        return True, b"", 0
    gap = m.group()
    if gap[-1] == 0x5D:  # ]
        return False, b"", 0
    reader.pos = m.end()
    if learn and reader.buf[reader.pos] == 0x7B:
        head = reader.buf[reader.pos:reader.pos + _SEP_PREFIX]
        quote = head.find(b'"', 2)  # up to the end of the first key
        if quote > 0:
            head = head[:quote + 1]
        return True, b"}" + gap + head, len(gap)
    return True, b"", 0


def iter_array_file(f: BinaryIO, chunk: int = 1 << 22, inside: bool = False) -> Iterator[Any]:
    """Elements of the top-level JSON array in the binary file ``f``.

    With ``inside``, ``f`` is positioned at the start of an element inside the array (the
    elements from there on are read). Raises :class:`JSONStreamError` when the file is not one
    JSON array (empty, invalid JSON, not UTF-8, another top-level value).
    """
    reader = _Reader(f, chunk, f.tell() if inside else 0)
    if not _open_array(reader, inside):
        if not inside:
            trailing = _after_array(reader)
            if trailing is not None:
                yield trailing
        return
    fast = _orjson is not None
    orjson_loads = _orjson.loads if fast else None
    decode_error = _orjson.JSONDecodeError if fast else ValueError
    sep = b""  # learned: "}" + what lies between two elements + the start of the next one
    skip = 0  # len(sep) - len(head): from the "}" to the next element's start
    view_of = digits = b""  # the buffer that ``view`` and the digit map ``digits`` were made for
    view = memoryview(b"")
    long_run = -1  # first run of 19+ digits in that buffer
    while True:
        if sep:
            # fast path: elements ending at the learned separator, while guesses hold
            buf = reader.buf
            pos = reader.pos
            while True:
                hit = buf.find(sep, pos)
                if hit < 0:
                    break
                stop = hit + 1
                if buf.count(b"{", pos, stop) != buf.count(b"}", pos, stop):
                    # an inner separator (or braces inside strings): look further
                    reader.pos = pos
                    stop = _balanced_end(reader, sep, pos, hit)
                    buf = reader.buf
                    pos = reader.pos
                    if stop < 0:
                        hit = 0
                        break
                if buf is not view_of:
                    view = memoryview(buf)
                    digits = buf.translate(_DIGITS)
                    view_of = buf
                    long_run = digits.find(_LONG_RUN)
                if 0 <= long_run < stop and digits.find(_LONG_RUN, pos, stop) >= 0:
                    hit = 0
                    break
                try:
                    value = orjson_loads(view[pos:stop])  # type: ignore[misc]
                except decode_error:
                    hit = 0
                    break
                yield value
                pos = stop + skip
            reader.pos = pos
            if hit < 0 and not reader.eof:
                reader.fill()  # more of the file, then go on guessing
                if reader.pos < len(reader.buf):
                    continue
        value = _exact(reader)
        yield value
        more, sep, skip = _next_element(reader, fast and isinstance(value, dict))
        if not more:
            if not inside:
                trailing = _after_array(reader)
                if trailing is not None:
                    yield trailing
            return


def iter_array_batches(f: BinaryIO, size: int = 1 << 20, chunk: int = 1 << 22) -> Iterator[tuple]:
    """Cut the top-level array in ``f`` into batches of elements without parsing them.

    Yields, in file order:

    * ``("value", offset, value, length)``: an element read here the exact way (the first one,
      to learn the separator between elements, and any element whose braces do not balance),
      ``length`` bytes long (when it is not an ``Unreadable``);
    * ``("batch", offset, length)``: about ``size`` bytes holding whole elements and the separators
      between them (no brackets), cut at the learned separator where the counts of braces since
      the batch start balance (the elements are objects, so inside one the count of structural
      braces is never zero: only braces inside strings or a list element can fool it, and the
      parse catches that);
    * ``("rest", offset)``: no more cuts (another separator); the elements from ``offset`` on
      must be read with ``iter_array_file(f, inside=True)``.

    A cut is a guess (braces inside strings can fool the counts), checked by whoever parses the
    batch: ``b"[" + <its bytes> + b"]"`` must be a JSON array (``iter_array_file`` raises otherwise).
    Starting from a true element start, a batch that parses that way ends at a true element end,
    so the next batch starts right too. When one does not parse, its elements and all after it
    must be read again from its offset with ``iter_array_file(f, inside=True)``.

    When the counts do not balance within twice ``size`` (braces inside strings), the window
    is cut element by element, and an element that does not balance is read the exact way.
    """
    reader = _Reader(f, chunk)
    if not _open_array(reader, False):
        return
    while True:
        # an element read the exact way, then cuts with the separator it teaches
        value, at = _exact_span(reader)
        yield "value", reader.base + at, value, reader.pos - at
        more, sep, skip = _next_element(reader, isinstance(value, dict))
        if not more:
            return
        if not sep:
            yield "rest", reader.base + reader.pos
            return
        for cut in _cut_batches(reader, sep, skip, size, _task_start(reader, sep, skip)):
            if cut is None:
                return  # the end of the array
            yield cut
        # the element at reader.pos must be read the exact way


def _ensure(reader: _Reader, keep_from: int, upto: int) -> int:
    """Refill until ``upto`` bytes from ``keep_from`` are buffered (or the file ends); returns the
    shift (``keep_from``'s new index minus its old one)."""
    if len(reader.buf) >= upto or reader.eof:
        return 0
    reader.pos = keep_from
    while len(reader.buf) - reader.pos < upto - keep_from and reader.fill(upto - keep_from):
        pass
    return reader.pos - keep_from


def _first_value_then(key: bytes) -> bytes:
    """Pattern: ":" + an integer + "," + ``key`` (a quoted JSON key) + ":", white space allowed."""
    ws = rb"[ \t\r\n]*"
    return b":" + ws + rb"-?\d{1,18}" + ws + b"," + ws + key + ws + b":"


_FIRST_VALUE = re.compile(_first_value_then(rb'("[^"\\]{1,64}")'))


def _task_start(reader: _Reader, sep: bytes, skip: int) -> re.Pattern[bytes] | None:
    """The separator followed by what follows it at ``reader.pos`` (the element just after the
    separator): an integer first value and the same second key (``},{"id":<n>,"annotations":``
    in Label Studio's export). None when the element does not start that way.

    A cut there needs no brace counting: objects nested in a task that start with the same two
    keys are unheard of (annotations and predictions have other second keys), and a wrong cut is
    still caught by the parse of the batch (see ``iter_array_batches``)."""
    head = len(sep) - 1 - skip  # the part of ``sep`` that is the element's own start
    m = _FIRST_VALUE.match(reader.buf, reader.pos + head)
    if m is None:
        return None
    return re.compile(re.escape(sep) + _first_value_then(re.escape(m.group(1))))


def _cut_batches(reader: _Reader, sep: bytes, skip: int, size: int,
                 task_start: re.Pattern[bytes] | None = None) -> Iterator[tuple | None]:
    """Batches from ``reader.pos`` on; None at the end of the array. Returns (without None) with
    ``reader.pos`` at an element to read the exact way."""
    while True:
        if task_start is not None:
            cut = _cut_ahead(reader, task_start, skip, size)
            if cut is not None:
                yield cut
                continue
        start = reader.pos
        start += _ensure(reader, start, start + 2 * size + len(sep))
        reader.pos = start
        buf = reader.buf
        limit = start + 2 * size
        m = task_start.search(buf, start + size, limit + 256) if task_start is not None else None
        if m is not None:
            hit = m.start()
        else:  # the first separator after ``size`` bytes where the braces since ``start`` balance
            scan = start
            braces = 0
            hit = buf.find(sep, start + size)
            while 0 <= hit <= limit:
                stop = hit + 1
                braces += buf.count(b"{", scan, stop) - buf.count(b"}", scan, stop)
                scan = stop
                if braces == 0:
                    break
                hit = buf.find(sep, stop)
        if 0 <= hit <= limit:
            yield "batch", reader.base + start, hit + 1 - start
            reader.pos = hit + 1 + skip
            continue
        if hit < 0 and reader.eof:
            # the last batch? it runs to the closing bracket, if the counts balance
            tail = buf[start:].rstrip(_WS)
            if tail.endswith(b"]"):
                body = tail[:-1]
                if body.count(b"{") == body.count(b"}"):
                    yield "batch", reader.base + start, len(body)
                    yield None
                    return
        # element by element: whole elements up to ``size``, then a batch of them
        pos = start
        while True:
            end = _element_end(buf, sep, pos, min(len(buf), pos + size))
            if end < 0:
                break  # read the one at pos the exact way
            pos = end + skip
            if pos - start >= size:
                break
        if pos > start:
            yield "batch", reader.base + start, pos - skip - start
        reader.pos = pos
        if pos - start < size:
            return


_AHEAD = 1 << 16  # bytes read where a batch should end (a task start within them ends it)


def _cut_ahead(reader: _Reader, task_start: re.Pattern[bytes], skip: int, size: int) -> tuple | None:
    """The batch from ``reader.pos`` to the first task start at least ``size`` bytes on, found by
    reading only ``_AHEAD`` bytes from there: a batch's own bytes are read by whoever parses it.
    The cut is the one ``_cut_batches`` makes reading everything; None (and the reader as it
    was) when there is no task start in those bytes."""
    origin = reader.base + reader.pos
    f = reader.f
    f.seek(origin + size)
    ahead = f.read(_AHEAD)
    m = task_start.search(ahead)
    if m is None:
        f.seek(reader.base + len(reader.buf))  # where the reader's buffer ends: nothing changed
        return None
    reader.buf, reader.base, reader.pos = ahead, origin + size, m.start() + 1 + skip
    reader.eof = False  # the file goes on after ``ahead`` (read from there next)
    return "batch", origin, reader.base + m.start() + 1 - origin


def _element_end(buf: bytes, sep: bytes, pos: int, limit: int) -> int:
    """End of the element at ``pos`` (after its "}") at a separator where its braces balance,
    looking at most 16 separators and up to ``limit``; -1 if none."""
    scan = pos
    braces = 0
    for _ in range(16):
        hit = buf.find(sep, scan, limit + len(sep))
        if hit < 0:
            return -1
        stop = hit + 1
        braces += buf.count(b"{", scan, stop) - buf.count(b"}", scan, stop)
        scan = stop
        if braces == 0:
            return stop
    return -1


def _balanced_end(reader: _Reader, sep: bytes, start: int, hit: int) -> int:
    """End (after the "}") of the element at ``start`` whose first separator guess was inside it:
    the first later separator where its braces balance; -1 to read it the exact way.
    ``reader.pos`` is ``start``; a refill may move both (``start`` is then ``reader.pos``)."""
    buf = reader.buf
    scan = start
    braces = 0
    while True:
        stop = hit + 1
        braces += buf.count(b"{", scan, stop) - buf.count(b"}", scan, stop)
        scan = stop
        if braces == 0:
            return stop
        if braces < 0:
            return -1
        hit = buf.find(sep, scan)
        while hit < 0:
            if reader.eof or len(buf) - start > _MAX_GUESS:
                return -1
            reader.pos = start
            reader.fill()  # keeps the bytes from start on
            scan -= start
            start = 0
            buf = reader.buf
            hit = buf.find(sep, scan)
