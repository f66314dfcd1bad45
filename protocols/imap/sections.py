"""Which bytes a BODY[section]<partial> / BINARY[section] names (RFC 3501 6.4.5).

The I/O layer supplies a :class:`PartSpan` tree: where each MIME entity's header and body
sit in the raw message (the store can cache it; :func:`parse_spans` computes it from the
bytes with bounded effort). :func:`resolve_section` maps a section onto a byte range
without reading the message, so the session can read only that range from disk;
:func:`extract_section` does the whole job for a message already in memory.

Part numbering (RFC 3501 6.4.5): the parts of a message are the children of its body if
that is multipart, otherwise its body alone is part 1. A message/rfc822 part's sub-parts
are the parts of the message it encapsulates. HEADER, TEXT and HEADER.FIELDS need a
message: the top level, or a part of type message/rfc822. MIME needs a part.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .commands import Partial, Section, SectionText
from .limits import MAX_MIME_DEPTH, MAX_MIME_PARTS

__all__ = [
    "PartSpan",
    "SectionRange",
    "UnknownTransferEncoding",
    "apply_partial",
    "decode_transfer_encoding",
    "extract_section",
    "filter_header_fields",
    "parse_spans",
    "resolve_section",
]


class UnknownTransferEncoding(ValueError):
    """BINARY on a part whose Content-Transfer-Encoding we cannot decode.

    RFC 3516 4.3: answer ``NO [UNKNOWN-CTE]``.
    """


@dataclass(frozen=True, slots=True)
class PartSpan:
    """One MIME entity located in the raw message.

    ``header_start`` .. ``body_start`` is the header including the blank line that ends
    it; ``body_start`` .. ``end`` is the body. ``content_type`` is ``type/subtype`` in lower
    case; ``encoding`` the Content-Transfer-Encoding in lower case. ``parts`` are the
    children of a multipart; ``message`` the encapsulated message of message/rfc822.
    """

    header_start: int
    body_start: int
    end: int
    content_type: str = "text/plain"
    encoding: str = "7bit"
    parts: tuple[PartSpan, ...] = ()
    message: PartSpan | None = None

    @property
    def is_multipart(self) -> bool:
        return self.content_type.startswith("multipart/")


@dataclass(frozen=True, slots=True)
class SectionRange:
    """The octets ``start`` .. ``end`` of the message, then the post-processing needed.

    ``fields``/``exclude`` for HEADER.FIELDS (.NOT); ``encoding`` for BINARY decoding.
    """

    start: int
    end: int
    fields: tuple[str, ...] | None = None
    exclude: bool = False
    encoding: str | None = None


def _message_parts(message: PartSpan) -> tuple[PartSpan, ...]:
    return message.parts if message.is_multipart else (message,)


def _subparts(part: PartSpan) -> tuple[PartSpan, ...]:
    if part.is_multipart:
        return part.parts
    if part.message is not None:
        return _message_parts(part.message)
    return ()


def _find_part(root: PartSpan, path: Sequence[int]) -> PartSpan | None:
    candidates = _message_parts(root)
    part: PartSpan | None = None
    for number in path:
        if not 1 <= number <= len(candidates):
            return None
        part = candidates[number - 1]
        candidates = _subparts(part)
    return part


def resolve_section(
    root: PartSpan, section: Section, *, binary: bool = False
) -> SectionRange | None:
    """The byte range ``section`` names, or ``None`` if the message has no such part."""
    if not section.part:
        message: PartSpan = root
        if section.text is None:  # BODY[]: the whole message
            return SectionRange(root.header_start, root.end)
    else:
        part = _find_part(root, section.part)
        if part is None:
            return None
        if section.text is None:
            # BODY[n]: the part's body; for message/rfc822 that is the whole encapsulated
            # message. BINARY[n] decodes the part's transfer encoding (RFC 3516 4.1).
            enc = part.encoding if binary and not part.is_multipart else None
            return SectionRange(part.body_start, part.end, encoding=enc)
        if section.text is SectionText.MIME:
            return SectionRange(part.header_start, part.body_start)
        if part.message is None:
            return None  # HEADER/TEXT need a message/rfc822 part (RFC 3501 6.4.5)
        message = part.message
    if section.text is SectionText.TEXT:
        return SectionRange(message.body_start, message.end)
    if section.text is SectionText.HEADER:
        return SectionRange(message.header_start, message.body_start)
    if section.text is SectionText.HEADER_FIELDS:
        return SectionRange(message.header_start, message.body_start, fields=section.fields)
    if section.text is SectionText.HEADER_FIELDS_NOT:
        return SectionRange(
            message.header_start, message.body_start, fields=section.fields, exclude=True
        )
    return None  # MIME without a part number is not valid


def extract_section(
    raw: bytes, root: PartSpan, section: Section, *, binary: bool = False
) -> bytes | None:
    """The content of ``section`` (before any partial); ``None`` for a missing part.

    Raises :class:`UnknownTransferEncoding` for BINARY on an undecodable part.
    """
    rng = resolve_section(root, section, binary=binary)
    if rng is None:
        return None
    data = raw[rng.start : rng.end]
    if rng.fields is not None:
        data = filter_header_fields(data, rng.fields, exclude=rng.exclude)
    if rng.encoding is not None:
        data = decode_transfer_encoding(data, rng.encoding)
    return data


def apply_partial(data: bytes, partial: Partial | None) -> bytes:
    """RFC 3501 6.4.5 ``<origin.count>``: an origin past the end gives an empty string."""
    if partial is None:
        return data
    return data[partial.origin : partial.origin + partial.count]


_LINE: Final = re.compile(rb"[^\n]*\n|[^\n]+")


def filter_header_fields(header: bytes, names: Sequence[str], *, exclude: bool = False) -> bytes:
    """Keep (or drop, when ``exclude``) the fields named in ``names``, case-insensitively.

    Folded continuation lines stay with their field; the blank line ending the header is
    kept (RFC 3501 6.4.5: "the blank line is included in all header fetches").
    """
    wanted = {n.lower().encode("ascii", "replace") for n in names}
    out = bytearray()
    keep = False
    for line in _LINE.findall(header):
        if line in (b"\r\n", b"\n"):
            out += line  # the delimiting blank line
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out += line
            continue
        name = line.split(b":", 1)[0].strip().lower() if b":" in line else None
        keep = (name in wanted) != exclude if name is not None else exclude
        if keep:
            out += line
    return bytes(out)


def decode_transfer_encoding(data: bytes, encoding: str) -> bytes:
    """Undo a Content-Transfer-Encoding for BINARY (RFC 3516 4.1)."""
    enc = encoding.lower()
    if enc in ("7bit", "8bit", "binary", ""):
        return data
    if enc == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4] if len(cleaned) % 4 == 1 else cleaned
        try:
            return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4))
        except (binascii.Error, ValueError) as exc:
            raise UnknownTransferEncoding("undecodable base64") from exc
    if enc == "quoted-printable":
        return binascii.a2b_qp(data)
    raise UnknownTransferEncoding(f"unknown transfer encoding {encoding}")


# --- locating parts in raw bytes ---------------------------------------------------------

_TOKEN: Final = rb'[^\x00-\x20()<>@,;:\\"/\[\]?=\x7f-\xff]+'  # RFC 2045 5.1 token
_CONTENT_TYPE: Final = re.compile(
    rb"^content-type[ \t]*:[ \t]*(" + _TOKEN + rb")[ \t]*/[ \t]*(" + _TOKEN + rb")"
    rb"([^\n]*(?:\n[ \t][^\n]*)*)",
    re.IGNORECASE | re.MULTILINE,
)
_CTE: Final = re.compile(rb"^content-transfer-encoding[ \t]*:[ \t]*([^\s;]+)", re.I | re.M)
_BOUNDARY: Final = re.compile(
    rb'boundary[ \t]*=[ \t]*(?:"((?:[^"\\\r\n]|\\.){1,200})"|([^;\s"]{1,200}))', re.I
)


def _header_end(raw: bytes, start: int, end: int) -> int:
    """Offset of the body (just past the blank line), or ``end`` when there is none."""
    if raw.startswith(b"\r\n", start):
        return start + 2
    if raw.startswith(b"\n", start):
        return start + 1
    i = raw.find(b"\n\r\n", start, end)
    j = raw.find(b"\n\n", start, end)
    if i < 0 and j < 0:
        return end
    if j < 0 or (0 <= i < j):
        return i + 3
    return j + 2


def _multipart_bodies(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """RFC 2046 5.1.1: the CRLF before a delimiter belongs to the delimiter."""
    delim = b"--" + boundary
    bodies: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while len(bodies) < MAX_MIME_PARTS:
        i = raw.find(delim, pos, end)
        if i < 0:
            break
        if i != start and raw[i - 1] != 0x0A:
            pos = i + 1
            continue
        eol = raw.find(b"\n", i, end)
        line_end = end if eol < 0 else eol + 1
        rest = raw[i + len(delim) : line_end].rstrip(b"\r\n")
        closing = rest.startswith(b"--")
        if not closing and rest.strip(b" \t"):
            pos = i + 1  # a longer boundary sharing this prefix
            continue
        if part_start is not None:
            part_end = i
            if part_end > part_start and raw[part_end - 1] == 0x0A:
                part_end -= 1
                if part_end > part_start and raw[part_end - 1] == 0x0D:
                    part_end -= 1
            bodies.append((part_start, part_end))
        if closing:
            return bodies
        part_start = pos = line_end
    if part_start is not None and len(bodies) < MAX_MIME_PARTS:
        bodies.append((part_start, end))  # unterminated multipart: the last part runs on
    return bodies


def parse_spans(raw: bytes) -> PartSpan:
    """Locate every MIME entity of ``raw`` (bounded: depth and part count limits)."""
    budget = [MAX_MIME_PARTS]
    return _span(raw, 0, len(raw), 0, "text/plain", budget)


def _span(
    raw: bytes, start: int, end: int, depth: int, default_type: str, budget: list[int]
) -> PartSpan:
    body_start = _header_end(raw, start, end)
    header = raw[start:body_start]
    ctype = default_type
    boundary: bytes | None = None
    m = _CONTENT_TYPE.search(header)
    if m is not None:
        ctype = (m.group(1) + b"/" + m.group(2)).decode("ascii").lower()
        b = _BOUNDARY.search(m.group(3))
        if b is not None:
            boundary = b.group(1) if b.group(1) is not None else b.group(2)
    cte = _CTE.search(header)
    encoding = cte.group(1).decode("ascii", "replace").lower() if cte else "7bit"
    budget[0] -= 1
    if depth >= MAX_MIME_DEPTH or budget[0] <= 0:
        return PartSpan(start, body_start, end, ctype, encoding)
    if ctype.startswith("multipart/") and boundary:
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        parts = tuple(
            _span(raw, s, e, depth + 1, child_default, budget)
            for s, e in _multipart_bodies(raw, body_start, end, boundary)
            if budget[0] > 0
        )
        return PartSpan(start, body_start, end, ctype, encoding, parts=parts)
    if ctype in ("message/rfc822", "message/global") and encoding in ("7bit", "8bit", "binary"):
        inner = _span(raw, body_start, end, depth + 1, "text/plain", budget)
        return PartSpan(start, body_start, end, ctype, encoding, message=inner)
    return PartSpan(start, body_start, end, ctype, encoding)
