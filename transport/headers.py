"""Reading a message's header without parsing the message: bounded and byte-exact.

The hub needs a few facts about the header (how many Received: fields, whether a
Message-ID or Date is there) before it delivers; the whole MIME parse happens once,
in the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

# Postfix header_size_limit: a header longer than this is not scanned further.
MAX_HEADER_SCAN = 102_400


def header_block(data: bytes) -> bytes:
    """The header of `data` (up to the blank line), at most MAX_HEADER_SCAN bytes."""
    head = data[:MAX_HEADER_SCAN]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            return head[: end + len(separator) // 2]
    if head.startswith((b"\r\n", b"\n")):
        return b""
    return head


def read_header_block(path: Path) -> bytes:
    with path.open("rb") as f:
        return header_block(f.read(MAX_HEADER_SCAN))


def field_names(header: bytes) -> Iterator[bytes]:
    """Lower-cased field names in order (continuation lines skipped)."""
    for line in header.splitlines():
        if not line or line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if colon and name and b" " not in name.strip():
            yield name.strip().lower()


def count_fields(header: bytes, name: bytes) -> int:
    wanted = name.lower()
    return sum(1 for n in field_names(header) if n == wanted)


def has_field(header: bytes, name: bytes) -> bool:
    return count_fields(header, name) > 0
