"""Label Studio's brush RLE (thi.ng rle-pack bit stream) and a minimal PNG writer."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["decode_rle", "png_gray8"]


def decode_rle(rle: Sequence[int] | bytes) -> np.ndarray:
    """Decode Label Studio's brush ``rle`` (list of bytes) to a flat uint8 array (RGBA pixels)."""
    import numpy as np

    bits = np.unpackbits(np.frombuffer(bytes(bytearray(rle)), dtype=np.uint8))
    s = (bits + 48).tobytes().decode("ascii")  # "0101..." bit string
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        value = int(s[pos:pos + n], 2) if n else 0
        pos += n
        return value

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, dtype=np.uint8)
    i = 0
    total = len(s)
    while i < num:
        if pos >= total:
            raise ValueError("brush RLE ends before all pixels are decoded")
        x = s[pos] == "1"
        pos += 1
        j = i + 1 + read(sizes[read(2)])
        if x:
            out[i:j] = read(word)
            i = j
        else:
            end = min(j, num)
            vals = [int(s[pos + k * word:pos + (k + 1) * word], 2) for k in range(end - i)]
            pos += (j - i) * word
            out[i:end] = vals
            i = j
    return out


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_gray8(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a 2-D uint8 array (what Pillow writes for mode "L")."""
    import numpy as np

    height, width = image.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # filter byte 0 per row
    rows[:, 1:] = image
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + _chunk(b"IEND", b"")
    )
