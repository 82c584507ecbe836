"""PNG files written byte by byte: the kinds Pillow cannot write (16-bit colour) or that
would take gigabytes to write through it (a decompression bomb)."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def png_bytes(pixels: np.ndarray, colour_type: int, bit_depth: int) -> bytes:
    """A PNG written sample by sample (Pillow cannot write 16-bit colour PNGs).

    ``pixels`` is H×W×K; colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA.
    """
    h, w = pixels.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + pixels[i].astype(dtype).tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def bomb_png(side: int = 16000) -> bytes:
    """A real side×side 1-bit PNG of zeros: 256 million pixels in about 30 kB."""
    row = b"\x00" + bytes(side // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body)
            + chunk(b"IEND", b""))
