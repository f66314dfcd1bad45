"""Self-delimiting, checksummed msgpack records (journal and metadata cache).

A record is ``magic(2) length(4, LE) crc32(4, LE)`` followed by `length` bytes of msgpack. A
reader stops at the first record whose magic, length or checksum is wrong: that is a torn
tail (a crash mid-append) or damage, and everything before it is still good. Never pickle:
payloads are plain msgpack maps with a schema version and enums as strings.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack

from .limits import MAX_RECORD_BYTES

MAGIC = b"\xd7\x4d"
HEADER = struct.Struct("<2sII")


class RecordError(ValueError):
    """A record that cannot be decoded (only raised by `decode_one`)."""


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes | memoryview) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)


def frame(payload: bytes) -> bytes:
    if len(payload) > MAX_RECORD_BYTES:
        raise ValueError("record too large")
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def frame_obj(obj: Any) -> bytes:
    return frame(pack(obj))


def scan(buf: bytes, start: int = 0) -> Iterator[tuple[int, int, bytes]]:
    """Yield (offset, end, payload) for each good record from `start` until a bad one."""
    pos = start
    size = len(buf)
    while pos + HEADER.size <= size:
        magic, length, crc = HEADER.unpack_from(buf, pos)
        if magic != MAGIC or length > MAX_RECORD_BYTES:
            return
        end = pos + HEADER.size + length
        if end > size:
            return
        payload = buf[pos + HEADER.size : end]
        if zlib.crc32(payload) != crc:
            return
        yield pos, end, payload
        pos = end


def decode_one(buf: bytes) -> Any:
    """Decode the single record at the start of `buf` (a cache lookup)."""
    if len(buf) < HEADER.size:
        raise RecordError("short record")
    magic, length, crc = HEADER.unpack_from(buf, 0)
    if magic != MAGIC or length > MAX_RECORD_BYTES or HEADER.size + length > len(buf):
        raise RecordError("bad record header")
    payload = buf[HEADER.size : HEADER.size + length]
    if zlib.crc32(payload) != crc:
        raise RecordError("bad record checksum")
    try:
        return unpack(payload)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        raise RecordError(str(exc)) from exc
