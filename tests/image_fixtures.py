"""Image files for data tests (imported by the test modules; not collected itself)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels but holds no pixel data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path
