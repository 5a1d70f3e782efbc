"""Helpers for the converters tests: fixture paths, running a converter, reading outputs."""

from __future__ import annotations

import csv
import json
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from tests.conftest import FIXTURES

EXPORTS = FIXTURES / "exports"
PROJECTS = [
    "image-bbox", "image-polygon", "image-keypoints", "image-brush",
    "text-ner", "text-classification", "audio-asr",
]

# Skips (or fails, with SYNCD_REQUIRE_SERVICES=1) when the fixture set is missing.
needs_fixtures = pytest.mark.usefixtures("fixtures_dir")


def load_tasks(slug: str) -> list[dict]:
    return json.loads((EXPORTS / slug / "JSON.json").read_text(encoding="utf-8"))


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def csv_rows(path: Path, delimiter: str) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def xml_tree(path: Path) -> tuple:
    def walk(el: ET.Element) -> tuple:
        return (el.tag, (el.text or "").strip(), tuple(walk(c) for c in el))

    return walk(ET.parse(path).getroot())


def read_png_gray8(path: Path) -> tuple[int, int, bytes]:
    """Decode a non-interlaced 8-bit grayscale PNG (all five filter types) -> (width, height, pixels)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, color, interlace) == (8, 0, 0), "only 8-bit grayscale is supported"
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    out = bytearray()
    prev = bytearray(width)
    for row in range(height):
        start = row * (width + 1)
        ftype, line = raw[start], bytearray(raw[start + 1:start + 1 + width])
        for i in range(width):
            a = line[i - 1] if i else 0
            b = prev[i]
            c = prev[i - 1] if i else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        out += line
        prev = line
    return width, height, bytes(out)


def run(argv: list[str]) -> int:
    """``syncd convert``/``formats``, in this process (as ``syncd.cli.main`` runs them)."""
    from syncd.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)
