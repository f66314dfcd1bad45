"""EAS WBXML decoder and encoder (MS-ASWBXML 2.1.1 over WAP-192 WBXML 1.3).

EAS uses a small subset of WBXML: the header `03 01 6A 00` (version 1.3, public id 1
"unknown", charset UTF-8, empty string table), SWITCH_PAGE, END, tags with or without the
content bit, STR_I and OPAQUE. Everything else (attributes, string tables, entities,
extensions, processing instructions, literal tags) is refused with a `WbxmlError`, and so
is any code page or tag token the EAS tables do not have: a phone never sends them, and
guessing would hide bugs. Decoding is bounded by `Limits`; every way it can fail raises
`WbxmlError`, never anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .element import Element
from .errors import WbxmlEncodeError, WbxmlError, WbxmlLimitError
from .tags import TOKEN_MASK, namespace_of, tag_at, tag_named

# --- wire constants ---------------------------------------------------------------------

WBXML_VERSION_1_3: Final = 0x03  # WBXML 1.3 5.4 (version byte = major-1 << 4 | minor)
PUBLIC_ID_UNKNOWN: Final = 0x01  # WBXML 1.3 7.2; MS-ASWBXML 2.1.1 uses "unknown"
CHARSET_UTF_8: Final = 106  # IANA MIBenum for UTF-8; MS-ASWBXML 2.1.1
HEADER: Final = bytes((WBXML_VERSION_1_3, PUBLIC_ID_UNKNOWN, CHARSET_UTF_8, 0x00))

# Global tokens, WBXML 1.3 7.1 (the same on every code page).
SWITCH_PAGE: Final = 0x00
END: Final = 0x01
ENTITY: Final = 0x02
STR_I: Final = 0x03
LITERAL: Final = 0x04
EXT_I_0: Final = 0x40
EXT_I_1: Final = 0x41
EXT_I_2: Final = 0x42
PI: Final = 0x43
LITERAL_C: Final = 0x44
EXT_T_0: Final = 0x80
EXT_T_1: Final = 0x81
EXT_T_2: Final = 0x82
STR_T: Final = 0x83
LITERAL_A: Final = 0x84
EXT_0: Final = 0xC0
EXT_1: Final = 0xC1
EXT_2: Final = 0xC2
OPAQUE: Final = 0xC3
LITERAL_AC: Final = 0xC4
TAG_CONTENT: Final = 0x40  # WBXML 1.3 5.8.2: the element has content and ends with END
TAG_ATTRIBUTES: Final = 0x80  # WBXML 1.3 5.8.2: attributes follow (never in EAS)

# Global tokens EAS does not use (MS-ASWBXML 2.1.1 lists the WBXML features it uses:
# code pages, tags, inline strings and opaque data), with the name for the error message.
_UNUSED_GLOBALS: Final[dict[int, str]] = {
    ENTITY: "ENTITY",
    LITERAL: "LITERAL",
    EXT_I_0: "EXT_I_0",
    EXT_I_1: "EXT_I_1",
    EXT_I_2: "EXT_I_2",
    PI: "PI",
    LITERAL_C: "LITERAL_C",
    EXT_T_0: "EXT_T_0",
    EXT_T_1: "EXT_T_1",
    EXT_T_2: "EXT_T_2",
    STR_T: "STR_T (string table reference)",
    LITERAL_A: "LITERAL_A",
    EXT_0: "EXT_0",
    EXT_1: "EXT_1",
    EXT_2: "EXT_2",
    LITERAL_AC: "LITERAL_AC",
}

MB_UINT32_MAX_BYTES: Final = 5  # WBXML 1.3 5.1: a 32-bit value in 7-bit groups
MB_UINT32_MAX: Final = 0xFFFF_FFFF  # WBXML 1.3 5.1: mb_u_int32 is an unsigned 32-bit integer

# --- limits -----------------------------------------------------------------------------
# MS-ASWBXML sets none; these bound memory and time per request and leave room for every
# document a real client or this server produces. The HTTP layer may pass others.

# A 35 MB message (Exchange Online's default send limit, measured as MIME) as OPAQUE in
# ComposeMail:SendMail, plus the few bytes of WBXML around it.
MAX_DOCUMENT_SIZE: Final = 36 * 1024 * 1024
# Deepest EAS documents are about 12 levels (Sync/Collections/Collection/Commands/Add/
# ApplicationData/Exceptions/Exception/Attendees/Attendee/...); 32 leaves margin.
MAX_DEPTH: Final = 32
# MS-ASCMD 2.2.3.199.2: WindowSize is at most 512 items per collection; 512 items of up to
# ~150 elements each, with room to spare. Bounds the tree's memory (one object per element).
MAX_ELEMENTS: Final = 100_000
# One STR_I value: inline bodies (AirSyncBase:Data of a draft, a note) as text.
MAX_STRING_LENGTH: Final = 16 * 1024 * 1024
# One OPAQUE value: ComposeMail:Mime of a message at the document limit.
MAX_OPAQUE_LENGTH: Final = MAX_DOCUMENT_SIZE


@dataclass(frozen=True, slots=True)
class Limits:
    """Decoder bounds; the defaults are the constants above."""

    max_document_size: int = MAX_DOCUMENT_SIZE
    max_depth: int = MAX_DEPTH
    max_elements: int = MAX_ELEMENTS
    max_string_length: int = MAX_STRING_LENGTH
    max_opaque_length: int = MAX_OPAQUE_LENGTH


DEFAULT_LIMITS: Final = Limits()


# --- decoding ---------------------------------------------------------------------------


class _Open:
    """An element whose END has not been seen yet."""

    __slots__ = ("blobs", "children", "name", "ns", "offset", "size", "strings")

    def __init__(self, ns: str, name: str, offset: int) -> None:
        self.ns = ns
        self.name = name
        self.offset = offset
        self.children: list[Element] = []
        self.strings: list[str] = []
        self.blobs: list[bytes] = []
        self.size = 0

    def close(self) -> Element:
        if self.strings:
            return Element(self.ns, self.name, (), "".join(self.strings))
        if self.blobs:
            return Element(self.ns, self.name, (), b"".join(self.blobs))
        return Element(self.ns, self.name, tuple(self.children))

    def mixed(self, what: str, offset: int) -> WbxmlError:
        return WbxmlError(
            f"{self.ns}:{self.name} (opened at byte {self.offset}) mixes {what}; "
            "EAS elements hold children, a string or opaque data",
            offset=offset,
        )


def decode(data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS) -> Element:
    """Decode one EAS WBXML document into its root element. Raises `WbxmlError` (or its
    subclass `WbxmlLimitError`) for anything that is not a well-formed EAS document."""
    size = len(data)
    if size > limits.max_document_size:
        raise WbxmlLimitError(
            f"document of {size} bytes exceeds the limit of {limits.max_document_size}"
        )
    buf = bytes(data)
    pos = _read_header(buf)
    return _read_body(buf, pos, limits)


def _read_header(buf: bytes) -> int:
    if not buf:
        raise WbxmlError("empty document", offset=0)
    if buf[0] != WBXML_VERSION_1_3:  # MS-ASWBXML 2.1.1: version 1.3
        raise WbxmlError(f"WBXML version byte 0x{buf[0]:02X}; EAS uses 1.3 (0x03)", offset=0)
    public_id, pos = _read_mb_u_int32(buf, 1, "public identifier")
    if public_id != PUBLIC_ID_UNKNOWN:  # MS-ASWBXML 2.1.1; 0 = a string-table FPI
        raise WbxmlError(f"public identifier {public_id}; EAS uses 1 (unknown)", offset=1)
    start = pos
    charset, pos = _read_mb_u_int32(buf, pos, "charset")
    if charset != CHARSET_UTF_8:  # MS-ASWBXML 2.1.1: UTF-8
        raise WbxmlError(f"charset MIBenum {charset}; EAS uses UTF-8 (106)", offset=start)
    start = pos
    table_length, pos = _read_mb_u_int32(buf, pos, "string table length")
    if table_length != 0:  # MS-ASWBXML 2.1.1: EAS does not use string tables
        raise WbxmlError(
            f"string table of {table_length} bytes; EAS documents have none", offset=start
        )
    return pos


def _read_mb_u_int32(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    start = pos
    value = 0
    for _ in range(MB_UINT32_MAX_BYTES):
        if pos >= len(buf):
            raise WbxmlError(f"document ends inside the {what} (mb_u_int32)", offset=start)
        byte = buf[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            if value > MB_UINT32_MAX:  # WBXML 1.3 5.1
                raise WbxmlError(f"{what} {value} does not fit in 32 bits", offset=start)
            return value, pos
    raise WbxmlError(f"{what}: mb_u_int32 longer than {MB_UINT32_MAX_BYTES} bytes", offset=start)


def _read_body(buf: bytes, pos: int, limits: Limits) -> Element:
    size = len(buf)
    page = 0  # WBXML 1.3 5.8.4.7: the tag code page starts at 0
    stack: list[_Open] = []
    elements = 0
    while pos < size:
        start = pos
        token = buf[pos]
        pos += 1
        if token == SWITCH_PAGE:  # WBXML 1.3 5.8.4.7
            if pos >= size:
                raise WbxmlError("document ends inside SWITCH_PAGE", offset=start)
            new_page = buf[pos]
            pos += 1
            if namespace_of(new_page) is None:
                raise WbxmlError(
                    f"unknown code page {new_page} (EAS has 0-25)", offset=start, page=new_page
                )
            page = new_page
        elif token == END:
            if not stack:
                raise WbxmlError("END with no open element", offset=start)
            element = stack.pop().close()
            if not stack:
                if pos != size:  # WBXML 1.3 5.3: body = one element
                    raise WbxmlError(
                        f"{size - pos} bytes after the end of the root element", offset=pos
                    )
                return element
            stack[-1].children.append(element)
        elif token == STR_I:  # WBXML 1.3 5.8.4.1: UTF-8 (the charset) up to a NUL
            if not stack:
                raise WbxmlError("string outside the root element", offset=start)
            current = stack[-1]
            if current.children or current.blobs:
                raise current.mixed("a string with other content", start)
            end = buf.find(b"\x00", pos, pos + limits.max_string_length + 1)
            if end < 0:
                if size - pos > limits.max_string_length:
                    raise WbxmlLimitError(
                        f"string longer than the limit of {limits.max_string_length} bytes",
                        offset=start,
                    )
                raise WbxmlError("document ends inside a string (no NUL)", offset=start)
            current.size += end - pos
            if current.size > limits.max_string_length:
                raise WbxmlLimitError(
                    f"{current.ns}:{current.name}: string longer than the limit of "
                    f"{limits.max_string_length} bytes",
                    offset=start,
                )
            try:
                current.strings.append(buf[pos:end].decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise WbxmlError(
                    f"string is not valid UTF-8 ({exc.reason})", offset=pos + exc.start
                ) from None
            pos = end + 1
        elif token == OPAQUE:  # WBXML 1.3 5.8.4.6
            if not stack:
                raise WbxmlError("opaque data outside the root element", offset=start)
            current = stack[-1]
            if current.children or current.strings:
                raise current.mixed("opaque data with other content", start)
            length, pos = _read_mb_u_int32(buf, pos, "opaque length")
            current.size += length
            if current.size > limits.max_opaque_length:
                raise WbxmlLimitError(
                    f"opaque data of {current.size} bytes exceeds the limit of "
                    f"{limits.max_opaque_length}",
                    offset=start,
                )
            if pos + length > size:
                raise WbxmlError(
                    f"document ends inside opaque data ({length} bytes announced, "
                    f"{size - pos} left)",
                    offset=start,
                )
            current.blobs.append(buf[pos : pos + length])
            pos += length
        elif token in _UNUSED_GLOBALS:
            raise WbxmlError(f"{_UNUSED_GLOBALS[token]} is not used by EAS", offset=start)
        else:
            identity = token & TOKEN_MASK
            definition = tag_at(page, identity)
            namespace = namespace_of(page)
            if definition is None:
                raise WbxmlError(
                    f"unknown tag token 0x{identity:02X} on code page {page} ({namespace})",
                    offset=start,
                    page=page,
                    token=identity,
                )
            qname = f"{namespace}:{definition.name}"
            if token & TAG_ATTRIBUTES:  # MS-ASWBXML 2.1.1: no attributes
                raise WbxmlError(
                    f"{qname} has attributes; EAS uses none",
                    offset=start,
                    page=page,
                    token=identity,
                )
            elements += 1
            if elements > limits.max_elements:
                raise WbxmlLimitError(f"more than {limits.max_elements} elements", offset=start)
            if len(stack) >= limits.max_depth:
                raise WbxmlLimitError(
                    f"{qname} nested deeper than {limits.max_depth} levels", offset=start
                )
            assert namespace is not None  # tag_at found the page
            if stack:
                parent = stack[-1]
                if parent.strings or parent.blobs:
                    raise parent.mixed("a value with child elements", start)
            if token & TAG_CONTENT:
                stack.append(_Open(namespace, definition.name, start))
                continue
            element = Element(namespace, definition.name)
            if not stack:
                if pos != size:
                    raise WbxmlError(
                        f"{size - pos} bytes after the end of the root element", offset=pos
                    )
                return element
            stack[-1].children.append(element)
    if stack:
        current = stack[-1]
        raise WbxmlError(
            f"document ends inside {current.ns}:{current.name} (opened at byte {current.offset})",
            offset=size,
        )
    raise WbxmlError("document has no root element", offset=size)


# --- encoding ---------------------------------------------------------------------------


def encode(root: Element) -> bytes:
    """Encode a tree as an EAS WBXML document: the `03 01 6A 00` header, SWITCH_PAGE only
    where the code page changes, the content bit only on elements with content, STR_I for
    str values and OPAQUE for bytes. Raises `WbxmlEncodeError` for a str that STR_I cannot
    carry (a NUL or a lone surrogate; `E()` cleans both)."""
    out = bytearray(HEADER)
    page = 0
    # Iterative, so no tree is too deep to encode; (element, closing) pairs.
    stack: list[tuple[Element, bool]] = [(root, False)]
    while stack:
        element, closing = stack.pop()
        if closing:
            out.append(END)
            continue
        definition = tag_named(element.ns, element.tag)
        if definition is None:  # only if someone bypassed Element's checks
            raise WbxmlEncodeError(f"{element.qname} is not on any EAS code page")
        if definition.page != page:  # WBXML 1.3 5.8.4.7; MS-ASWBXML 2.1.2
            out.append(SWITCH_PAGE)
            out.append(definition.page)
            page = definition.page
        value = element.value
        if element.children:
            out.append(definition.token | TAG_CONTENT)
            stack.append((element, True))
            stack.extend((child, False) for child in reversed(element.children))
        elif value is None:
            out.append(definition.token)
        elif isinstance(value, str):
            out.append(definition.token | TAG_CONTENT)
            out.append(STR_I)
            out += _string_bytes(element, value)
            out.append(0x00)
            out.append(END)
        else:
            out.append(definition.token | TAG_CONTENT)
            out.append(OPAQUE)
            out += _mb_u_int32_bytes(element, len(value))
            out += value
            out.append(END)
    return bytes(out)


def _string_bytes(element: Element, value: str) -> bytes:
    if "\x00" in value:  # WBXML 1.3 5.8.4.1: NUL ends an inline string
        raise WbxmlEncodeError(f"{element.qname}: a string cannot contain NUL in WBXML")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError:
        raise WbxmlEncodeError(f"{element.qname}: string has a lone surrogate") from None


def _mb_u_int32_bytes(element: Element, value: int) -> bytes:
    if value > MB_UINT32_MAX:
        raise WbxmlEncodeError(f"{element.qname}: opaque value longer than 4 GiB")
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))
