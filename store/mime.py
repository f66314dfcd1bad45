"""A bounded RFC 5322 / MIME scanner that records byte offsets.

The stdlib `email` package builds a whole object tree and forgets where things were in the
file; IMAP needs exactly those positions (BODY[1.2.MIME], BODY[2.TEXT], partial fetches) and
BODYSTRUCTURE fields (sizes in octets, line counts) computed over the raw bytes. So this
module scans the bytes once, with every loop bounded by a limit from `store.limits`:

* header sections: fields are unfolded (RFC 5322 2.2.3) and kept raw (encoded words, RFC
  2047, are not decoded: IMAP ENVELOPE sends them verbatim, EAS decodes them with
  `decode_words`);
* multipart bodies are split on their delimiter lines (RFC 2046 5.1.1: the CRLF before
  "--boundary" belongs to the delimiter, so a part's body ends before it);
* message/rfc822 bodies are parsed as messages (RFC 2046 5.2.1) for BODYSTRUCTURE's nested
  envelope and structure.

Line endings may be CRLF or bare LF. Nothing here raises on bad input except
`MimeLimitExceeded`, which the caller turns into a "parse failed" structure.
"""

from __future__ import annotations

import base64
import binascii
import mmap
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from .limits import (
    MAX_ADDRESSES,
    MAX_BOUNDARY_LENGTH,
    MAX_DECODE_INPUT,
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_HEADER_LINES,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
)

Buffer = bytes | mmap.mmap

MISSING_MAILBOX = "MISSING_MAILBOX"  # as Dovecot renders an address without local part
MISSING_DOMAIN = "MISSING_DOMAIN"  # ... and without a domain
_COUNT_CHUNK = 1024 * 1024
_MAX_DELIMITER_PADDING = 1000  # transport padding allowed after "--boundary" (RFC 2046 5.1.1)


class MimeLimitExceeded(Exception):
    """The message has more parts than MAX_MIME_PARTS."""


# --- header sections -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeaderBlock:
    """One header section: (lower-case name, unfolded raw value) pairs and its extent."""

    fields: tuple[tuple[str, str], ...]
    start: int
    body_start: int
    # The first value of each name: a message's metadata asks for some twenty fields.
    _first: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        first: dict[str, str] = {}
        for key, value in self.fields:
            first.setdefault(key, value)
        object.__setattr__(self, "_first", first)

    def get(self, name: str) -> str | None:
        return self._first.get(name)

    def get_all(self, name: str) -> list[str]:
        return [value for key, value in self.fields if key == name]


def _find_header_end(buf: Buffer, start: int, end: int) -> tuple[int, int]:
    """(end of the last header line, start of the body) within [start, end)."""
    if start >= end:
        return end, end
    if end - start >= 2 and buf[start : start + 2] == b"\r\n":
        return start, start + 2
    if buf[start : start + 1] == b"\n":
        return start, start + 1
    # The first empty line, CRLF or bare LF. The CRLF search goes first: in the usual
    # message it ends near the top, and the bare-LF search then stops there instead of
    # reading the whole body for a pair that is not in it.
    crlf = buf.find(b"\n\r\n", start, end)
    lf = buf.find(b"\n\n", start, end if crlf < 0 else crlf + 1)
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return end, end


# RFC 5322 3.6.8 ftext (printable US-ASCII except ':'), then the colon.
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_FIELD_NAME_WITHIN = 1000  # bytes of a line in which its colon must appear


# Header bytes split into lines at a time: one split for a usual header, and a bounded
# copy for a message that never ends its header (the parse stops at MAX_HEADER_FIELDS).
_LINE_BATCH = 64 * 1024


def _lines(buf: Buffer, start: int, end: int) -> Iterator[bytes]:
    """The lines of [start, end) without their LF, in batches of about _LINE_BATCH."""
    pos = start
    while pos < end:
        stop = buf.find(b"\n", min(pos + _LINE_BATCH, end - 1), end)
        stop = end if stop < 0 else stop + 1
        lines = bytes(buf[pos:stop]).split(b"\n")
        if not lines[-1]:
            lines.pop()  # the batch's last line end (an empty line cannot be inside it)
        yield from lines
        pos = stop


def parse_header_block(buf: Buffer, start: int, end: int) -> HeaderBlock:
    header_end, body_start = _find_header_end(buf, start, end)
    fields: list[tuple[str, str]] = []
    name: str | None = None
    chunks: list[bytes] = []
    size = 0
    for count, line in enumerate(_lines(buf, start, header_end)):
        if count >= MAX_HEADER_LINES:
            break
        content = line[:-1] if line[-1:] == b"\r" else line
        if line[:1] in (b" ", b"\t"):  # folded: a continuation of the field before
            if name is not None and size < MAX_HEADER_FIELD_BYTES:
                take = min(len(content), MAX_HEADER_FIELD_BYTES - size)
                chunks.append(content[:take])
                size += take
            continue
        if name is not None:
            fields.append((name, b"".join(chunks).decode("utf-8", errors="replace").strip()))
            name = None
        if len(fields) >= MAX_HEADER_FIELDS:
            break
        # The name up to the first colon (within the line's first 1000 bytes), optional
        # blanks before the colon allowed (obs-optional WSP, RFC 5322 4.5.3).
        match = _FIELD_NAME.match(content)
        if match is not None and match.end() <= _FIELD_NAME_WITHIN:
            name = match.group(1).decode("ascii").lower()
            value = content[match.end() : match.end() + MAX_HEADER_FIELD_BYTES]
            chunks = [value]
            size = len(value)
    if name is not None and len(fields) < MAX_HEADER_FIELDS:
        fields.append((name, b"".join(chunks).decode("utf-8", errors="replace").strip()))
    return HeaderBlock(tuple(fields), start, body_start)


# --- structured header values (RFC 2045 5.1, RFC 2183, RFC 2231) --------------------------

Params = tuple[tuple[str, str], ...]
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 2045 5.1 token (no tspecials)


def _split_semicolons(value: str) -> list[str]:
    """Split at ';' outside quoted strings and comments."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = False
    comment = 0
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\" and (quoted or comment) and i + 1 < n:
            current.append(value[i : i + 2])
            i += 2
            continue
        if quoted:
            quoted = ch != '"'
        elif comment:
            comment += 1 if ch == "(" else -1 if ch == ")" else 0
        elif ch == '"':
            quoted = True
        elif ch == "(":
            comment = 1
        elif ch == ";":
            pieces.append("".join(current))
            current = []
            i += 1
            continue
        current.append(ch)
        i += 1
    pieces.append("".join(current))
    return pieces


def _strip_comments(text: str) -> str:
    out: list[str] = []
    depth = 0
    quoted = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and (quoted or depth):
            if not depth:
                out.append(text[i : i + 2])
            i += 2
            continue
        if depth:
            depth += 1 if ch == "(" else -1 if ch == ")" else 0
        elif quoted:
            quoted = ch != '"'
            out.append(ch)
        elif ch == "(":
            depth = 1
        else:
            quoted = ch == '"'
            out.append(ch)
        i += 1
    return "".join(out).strip()


def _unquote(text: str) -> str:
    if not text.startswith('"'):
        return text.split()[0] if text.split() else ""
    out: list[str] = []
    i = 1
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _parse_params(pieces: list[str]) -> Params:
    params: list[tuple[str, str]] = []
    for piece in pieces:
        name, eq, value = piece.partition("=")
        name = _strip_comments(name).lower()
        if not eq or not _TOKEN.fullmatch(name):
            continue
        params.append((name, _unquote(_strip_comments(value))))
    return tuple(params)


def parse_content_type(value: str | None) -> tuple[str, str, Params] | None:
    """(type, subtype, params) with type and subtype in lower case, or None if invalid.

    Parameter values are unquoted but otherwise as given (BODYSTRUCTURE sends them so);
    an unquoted value runs to the next ';', which tolerates the common unquoted
    "boundary=----=_Part_1" that a strict tokenizer would cut at the '='.
    """
    if value is None:
        return None
    pieces = _split_semicolons(value)
    main = _strip_comments(pieces[0]).replace(" ", "")
    ctype, slash, subtype = main.partition("/")
    if not slash or not _TOKEN.fullmatch(ctype) or not _TOKEN.fullmatch(subtype):
        return None
    return ctype.lower(), subtype.lower(), _parse_params(pieces[1:])


def parse_disposition(value: str | None) -> tuple[str, Params] | None:
    if value is None:
        return None
    pieces = _split_semicolons(value)
    kind = _strip_comments(pieces[0])
    if not _TOKEN.fullmatch(kind):
        return None
    return kind.lower(), _parse_params(pieces[1:])


def parse_language(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(t for t in (_strip_comments(p) for p in value.split(",")) if _TOKEN.fullmatch(t))


def param_value(params: Params, name: str) -> str | None:
    """A parameter's value with RFC 2231 continuations and charsets decoded, RFC 2047 too."""
    for key, value in params:
        if key == name:
            return decode_words(value)
    star = name + "*"
    for key, value in params:
        if key == star:
            return _decode_2231(value)
    pieces: list[tuple[int, str, bool]] = []
    for key, value in params:
        if key.startswith(name + "*"):
            rest = key[len(name) + 1 :]
            encoded = rest.endswith("*")
            number = rest.rstrip("*")
            if number.isdigit() and len(number) < 4:
                pieces.append((int(number), value, encoded))
    if not pieces:
        return None
    pieces.sort()
    charset = "utf-8"
    out: list[bytes] = []
    for index, (_, value, encoded) in enumerate(pieces):
        if encoded:
            if index == 0 and value.count("'") >= 2:
                charset, _, value = value.split("'", 2)
            out.append(_percent_decode(value))
        else:
            out.append(value.encode("utf-8", errors="replace"))
    return _decode_bytes(b"".join(out), charset or "utf-8")


def _decode_2231(value: str) -> str:
    if value.count("'") >= 2:
        charset, _, text = value.split("'", 2)
        return _decode_bytes(_percent_decode(text), charset or "utf-8")
    return value


def _percent_decode(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] == "%" and i + 2 < len(text) + 0 and _is_hex(text[i + 1 : i + 3]):
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            out.extend(text[i].encode("utf-8", errors="replace"))
            i += 1
    return bytes(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def _decode_bytes(data: bytes, charset: str) -> str:
    try:
        return data.decode(_charset(charset), errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _charset(charset: str) -> str:
    cs = charset.strip().strip('"').lower()
    if cs in ("", "us-ascii", "ascii", "unknown-8bit", "x-unknown"):
        return "utf-8"  # 8-bit text mislabelled as ASCII is far more often UTF-8
    if cs in ("iso-8859-1", "latin1", "latin-1"):
        return "cp1252"  # what senders labelled ISO-8859-1 almost always mean (WHATWG)
    return cs


# --- RFC 2047 encoded words --------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"[ \t\r\n]+")


def decode_words(raw: str) -> str:
    """A header value with RFC 2047 encoded words decoded (for display, EAS, search).

    Tolerant: unknown charsets and broken encodings leave the word as it was; white space
    between adjacent encoded words is dropped (RFC 2047 6.2).
    """
    if "=?" not in raw or len(raw) > MAX_DECODE_INPUT:
        return raw
    out: list[str] = []
    pos = 0
    last_was_word = False
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos : match.start()]
        if not (last_was_word and _BETWEEN_WORDS.fullmatch(between)):
            out.append(between)
        charset, encoding, text = match.groups()
        try:
            if encoding in "bB":
                data = base64.b64decode(text + "=" * (-len(text) % 4))
            else:
                data = _q_decode(text)
            out.append(data.decode(_charset(charset), errors="replace"))
            last_was_word = True
        except (binascii.Error, LookupError, ValueError):
            out.append(match.group(0))
            last_was_word = False
        pos = match.end()
    out.append(raw[pos:])
    return "".join(out)


def _q_decode(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "_":
            out.append(0x20)
        elif ch == "=" and _is_hex(text[i + 1 : i + 3]):
            out.append(int(text[i + 1 : i + 3], 16))
            i += 2
        else:
            out.extend(ch.encode("utf-8", errors="replace"))
        i += 1
    return bytes(out)


# --- addresses (RFC 5322 3.4) --------------------------------------------------------------


class Address(NamedTuple):
    """One address as IMAP ENVELOPE needs it (RFC 3501 7.4.2 / RFC 9051 7.5.2).

    `name` is the raw display name (encoded words undecoded, quotes removed), `route` the
    obsolete source route, `mailbox`/`host` the local part and domain. Groups follow the
    IMAP convention: a start marker with `mailbox` set to the group name and `host` None,
    and an end marker with everything None.

    A named tuple: a folder's worth of envelopes is decoded from the metadata cache at
    once (``Address._make`` builds one in C), and rendering memoises address lists by
    value (a tuple hashes in C).
    """

    name: str | None
    route: str | None
    mailbox: str | None
    host: str | None

    @property
    def is_group_start(self) -> bool:
        return self.host is None and self.mailbox is not None

    @property
    def is_group_end(self) -> bool:
        return self.host is None and self.mailbox is None

    @property
    def addr_spec(self) -> str | None:
        if self.host is None or self.mailbox is None:
            return None
        return f"{self.mailbox}@{self.host}" if self.host else self.mailbox


_ADDRESS_SPECIALS = frozenset('()<>[]:;@\\,"')
_ATOM_RUN = re.compile(r'[^()<>\[\]:;@\\,"\x20\t\r\n]+')  # up to a special or a space
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+"  # atext and dots (RFC 5322 3.2.3)
_DOT_ATOM = re.compile(_ATEXT)
# The usual single mailbox, `<local@domain>`, `local@domain` or `Display Name
# <local@domain>` with plain atoms only: matched at once, giving exactly what the
# lexer and `_mailbox` below give for it (anything else takes the general path).
_SIMPLE_MAILBOX = re.compile(
    rf"[ \t]*(?:(?P<name>{_ATEXT}(?:[ \t]+{_ATEXT})*)[ \t]*)?"
    rf"<(?P<local>{_ATEXT})@(?P<domain>{_ATEXT})>[ \t]*"
    rf"|[ \t]*(?P<bare_local>{_ATEXT})@(?P<bare_domain>{_ATEXT})[ \t]*"
)


def _lex_addresses(value: str) -> list[tuple[str, str]]:
    """('a' atom, 'q' quoted, 'd' domain literal, 'c' comment, 's' special)."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "(":
            depth = 0
            start = i
            while i < n:
                c = value[i]
                if c == "\\":
                    i += 2
                    continue
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            out.append(("c", value[start + 1 : i].strip()))
            i += 1
        elif ch == '"':
            i += 1
            chars = []
            while i < n and value[i] != '"':
                if value[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(value[i])
                i += 1
            i += 1
            out.append(("q", "".join(chars)))
        elif ch == "[":
            end = value.find("]", i)
            end = n - 1 if end < 0 else end
            out.append(("d", value[i : end + 1]))
            i = end + 1
        elif ch in _ADDRESS_SPECIALS:
            out.append(("s", ch))
            i += 1
        else:
            match = _ATOM_RUN.match(value, i)
            j = match.end() if match is not None else i + 1
            out.append(("a", value[i:j]))
            i = j
    return out


def _local_part(tokens: list[tuple[str, str]]) -> str | None:
    words = [text for kind, text in tokens if kind in ("a", "q")]
    if not words:
        return None
    text = "".join(words)
    if any(kind == "q" for kind, _ in tokens) and not _DOT_ATOM.fullmatch(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _mailbox(tokens: list[tuple[str, str]]) -> Address | None:
    comments = [text for kind, text in tokens if kind == "c"]
    tokens = [t for t in tokens if t[0] != "c"]
    if not tokens:
        return None
    if ("s", "<") in tokens:
        lt = tokens.index(("s", "<"))
        phrase = [text for kind, text in tokens[:lt] if kind in ("a", "q", "d")]
        inner = tokens[lt + 1 :]
        if ("s", ">") in inner:
            inner = inner[: inner.index(("s", ">"))]
        route = None
        if inner and inner[0] == ("s", "@") and ("s", ":") in inner:
            colon = inner.index(("s", ":"))
            route = "".join(text for _, text in inner[:colon])
            inner = inner[colon + 1 :]
        name = " ".join(phrase) or (comments[-1] if comments else None)
        return _addr_spec(inner, name or None, route)
    name = comments[-1] if comments else None
    return _addr_spec(tokens, name or None, None)


def _addr_spec(tokens: list[tuple[str, str]], name: str | None, route: str | None) -> Address:
    if not tokens:
        return Address(name, route, "", "")
    ats = [i for i, t in enumerate(tokens) if t == ("s", "@")]
    if not ats:
        local = _local_part(tokens) or MISSING_MAILBOX
        return Address(name, route, local, MISSING_DOMAIN)
    at = ats[-1]
    local = _local_part(tokens[:at]) or MISSING_MAILBOX
    domain = "".join(text for kind, text in tokens[at + 1 :] if kind in ("a", "d")) or None
    return Address(name, route, local, domain or MISSING_DOMAIN)


def parse_address_list(value: str | None) -> tuple[Address, ...]:
    """An address header's value as IMAP ENVELOPE addresses; never raises."""
    if not value:
        return ()
    simple = _SIMPLE_MAILBOX.fullmatch(value)
    if simple is not None:
        local = simple["local"]
        if local is None:
            return (Address(None, None, simple["bare_local"], simple["bare_domain"]),)
        name = simple["name"]
        return (Address(" ".join(name.split()) if name else None, None, local, simple["domain"]),)
    tokens = _lex_addresses(value)
    out: list[Address] = []
    segment: list[tuple[str, str]] = []
    in_group = False
    angle = 0

    def flush() -> None:
        if len(out) < MAX_ADDRESSES:
            address = _mailbox(segment)
            if address is not None:
                out.append(address)
        segment.clear()

    for token in tokens:
        if token == ("s", "<"):
            angle += 1
        elif token == ("s", ">"):
            angle = max(0, angle - 1)
        if angle == 0 and token == ("s", ","):
            flush()
        elif angle == 0 and token == ("s", ":") and not in_group:
            name = " ".join(text for kind, text in segment if kind in ("a", "q"))
            segment.clear()
            out.append(Address(None, None, name, None))
            in_group = True
        elif angle == 0 and token == ("s", ";"):
            flush()
            if in_group:
                out.append(Address(None, None, None, None))
                in_group = False
        else:
            segment.append(token)
        if len(out) >= MAX_ADDRESSES:
            break
    flush()
    if in_group:
        out.append(Address(None, None, None, None))
    return tuple(out)


# --- envelope ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """RFC 3501 7.4.2 ENVELOPE fields, raw. Absent fields are None / empty.

    IMAP's rule that a missing Sender or Reply-To is rendered as From (RFC 3501 7.4.2) is
    the IMAP layer's to apply; the store reports what the header says.
    """

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


def envelope_from_headers(headers: HeaderBlock) -> Envelope:
    return Envelope(
        date=headers.get("date"),
        subject=headers.get("subject"),
        from_=parse_address_list(headers.get("from")),
        sender=parse_address_list(headers.get("sender")),
        reply_to=parse_address_list(headers.get("reply-to")),
        to=parse_address_list(headers.get("to")),
        cc=parse_address_list(headers.get("cc")),
        bcc=parse_address_list(headers.get("bcc")),
        in_reply_to=headers.get("in-reply-to"),
        message_id=headers.get("message-id"),
    )


# --- body structure ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyPart:
    """One MIME entity, with what IMAP BODYSTRUCTURE needs and where it lies in the file.

    Offsets are absolute byte positions in the message file: `header_start` (BODY[n.MIME]
    starts here; for the root and message/rfc822 bodies BODY[HEADER]), `body_start`
    (BODY[n] / BODY[TEXT]) and `end`. `lines` is set for text/* and message/rfc822 (RFC 3501
    7.4.2 body-fld-lines). A multipart has `parts`; a message/rfc822 has `envelope` and
    `message` (the encapsulated message's root entity).
    """

    type: str
    subtype: str
    params: Params = ()
    content_id: str | None = None
    description: str | None = None
    encoding: str | None = None
    md5: str | None = None
    disposition: str | None = None
    disposition_params: Params = ()
    language: tuple[str, ...] = ()
    location: str | None = None
    header_start: int = 0
    body_start: int = 0
    end: int = 0
    lines: int = 0
    parts: tuple[BodyPart, ...] = ()
    envelope: Envelope | None = None
    message: BodyPart | None = None

    @property
    def size(self) -> int:
        """body-fld-octets: the size of the body in its transfer encoding."""
        return self.end - self.body_start

    @property
    def mime_type(self) -> str:
        return f"{self.type}/{self.subtype}"

    @property
    def is_multipart(self) -> bool:
        return self.type == "multipart"

    def param(self, name: str) -> str | None:
        return param_value(self.params, name)

    def filename(self) -> str | None:
        return param_value(self.disposition_params, "filename") or param_value(self.params, "name")

    def part(self, path: tuple[int, ...]) -> BodyPart | None:
        """The part at an IMAP section path such as (1, 2) for "1.2"; None if absent.

        RFC 3501 6.4.5: a non-multipart message has one part numbered 1 (itself); the
        parts of an encapsulated message/rfc822 are numbered below its own number.
        """
        node: BodyPart = self
        for number in path:
            if node.type == "message" and node.message is not None:
                node = node.message
            if node.is_multipart:
                if not 1 <= number <= len(node.parts):
                    return None
                node = node.parts[number - 1]
            elif number != 1:
                return None
        return node

    def walk(self) -> list[tuple[tuple[int, ...], BodyPart]]:
        """(section path, part) for the parts of this multipart tree, in document order.

        Does not descend into message/rfc822 parts (their parts belong to the attached
        message). A non-multipart entity is its own part 1 (RFC 3501 6.4.5).
        """
        if not self.is_multipart:
            return [((1,), self)]
        out: list[tuple[tuple[int, ...], BodyPart]] = []
        self._walk((), out)
        return out

    def _walk(self, path: tuple[int, ...], out: list[tuple[tuple[int, ...], BodyPart]]) -> None:
        for i, child in enumerate(self.parts):
            child_path = (*path, i + 1)
            out.append((child_path, child))
            if child.is_multipart:
                child._walk(child_path, out)


@dataclass(slots=True)
class _Context:
    buf: Buffer
    parts: int = 0


def count_lines(buf: Buffer, start: int, end: int) -> int:
    if end <= start:
        return 0
    if isinstance(buf, bytes):
        lines = buf.count(b"\n", start, end)
    else:
        lines = 0
        for pos in range(start, end, _COUNT_CHUNK):
            lines += buf[pos : min(pos + _COUNT_CHUNK, end)].count(b"\n")
    if buf[end - 1] != 0x0A:
        lines += 1
    return lines


def _split_multipart(
    ctx: _Context, body_start: int, end: int, boundary: bytes
) -> list[tuple[int, int]]:
    buf = ctx.buf
    marker = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    search = body_start
    closed = False
    while True:
        idx = buf.find(marker, search, end)
        if idx < 0:
            break
        if idx != body_start and buf[idx - 1] != 0x0A:
            search = idx + 1
            continue
        after = idx + len(marker)
        is_close = buf[after : after + 2] == b"--"
        rest_start = after + 2 if is_close else after
        nl = buf.find(b"\n", rest_start, min(end, rest_start + _MAX_DELIMITER_PADDING))
        line_end = nl if nl >= 0 else min(end, rest_start + _MAX_DELIMITER_PADDING)
        if nl < 0 and line_end < end:
            search = after
            continue
        if bytes(buf[rest_start:line_end]).strip(b" \t\r"):
            search = after  # "--boundaryX": a longer line, not a delimiter
            continue
        if part_start is not None:
            part_end = idx - 1 if idx > 0 and buf[idx - 1] == 0x0A else idx
            if part_end > part_start and buf[part_end - 1] == 0x0D:
                part_end -= 1
            parts.append((part_start, max(part_start, part_end)))
            ctx.parts += 1
            if ctx.parts > MAX_MIME_PARTS:
                raise MimeLimitExceeded("too many MIME parts")
        if is_close:
            closed = True
            break
        part_start = line_end + 1 if nl >= 0 else end
        search = part_start
    if not closed and part_start is not None:
        parts.append((part_start, end))
        ctx.parts += 1
    return parts


@dataclass(frozen=True, slots=True)
class _PartFields:
    """The Content-* fields every part has, read from its header."""

    content_id: str | None
    description: str | None
    encoding: str | None
    md5: str | None
    disposition: str | None
    disposition_params: Params
    language: tuple[str, ...]
    location: str | None

    @classmethod
    def read(cls, headers: HeaderBlock) -> _PartFields:
        disposition = parse_disposition(headers.get("content-disposition"))
        return cls(
            content_id=headers.get("content-id"),
            description=headers.get("content-description"),
            encoding=(headers.get("content-transfer-encoding") or "").strip() or None,
            md5=headers.get("content-md5"),
            disposition=disposition[0] if disposition else None,
            disposition_params=disposition[1] if disposition else (),
            language=parse_language(headers.get("content-language")),
            location=headers.get("content-location"),
        )

    def make(
        self,
        ctype: str,
        subtype: str,
        params: Params,
        span: tuple[int, int, int],
        *,
        lines: int = 0,
        parts: tuple[BodyPart, ...] = (),
        envelope: Envelope | None = None,
        message: BodyPart | None = None,
    ) -> BodyPart:
        return BodyPart(
            ctype,
            subtype,
            params,
            content_id=self.content_id,
            description=self.description,
            encoding=self.encoding,
            md5=self.md5,
            disposition=self.disposition,
            disposition_params=self.disposition_params,
            language=self.language,
            location=self.location,
            header_start=span[0],
            body_start=span[1],
            end=span[2],
            lines=lines,
            parts=parts,
            envelope=envelope,
            message=message,
        )


_PLAIN: Params = (("charset", "us-ascii"),)


def parse_entity(
    ctx: _Context,
    start: int,
    end: int,
    depth: int,
    default: tuple[str, str] = ("text", "plain"),
) -> tuple[BodyPart, HeaderBlock]:
    buf = ctx.buf
    headers = parse_header_block(buf, start, end)
    body_start = headers.body_start
    span = (start, body_start, end)
    fields = _PartFields.read(headers)
    parsed = parse_content_type(headers.get("content-type"))
    if parsed is None:
        ctype, subtype = default  # RFC 2045 5.2 (RFC 2046 5.1.5 in a digest)
        params: Params = _PLAIN if default == ("text", "plain") else ()
    else:
        ctype, subtype, params = parsed

    if ctype == "multipart":
        boundary = param_value(params, "boundary") or ""
        if not 0 < len(boundary) <= MAX_BOUNDARY_LENGTH:
            # A multipart without a usable boundary is shown as text (as Dovecot does).
            lines = count_lines(buf, body_start, end)
            return fields.make("text", "plain", _PLAIN, span, lines=lines), headers
        if depth >= MAX_MIME_DEPTH:
            return fields.make("application", "octet-stream", (), span), headers
        child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
        ranges = _split_multipart(ctx, body_start, end, boundary.encode("utf-8", "replace"))
        children = tuple(parse_entity(ctx, s, e, depth + 1, child_default)[0] for s, e in ranges)
        if not children:
            # RFC 3501 body-type-mpart needs at least one part; an empty text part stands in.
            empty = BodyPart("text", "plain", _PLAIN, header_start=end, body_start=end, end=end)
            children = (empty,)
        return fields.make(ctype, subtype, params, span, parts=children), headers

    if ctype == "message" and subtype in ("rfc822", "global"):
        encoding = (fields.encoding or "7bit").lower()
        if depth >= MAX_MIME_DEPTH or encoding not in ("7bit", "8bit", "binary"):
            return fields.make("application", "octet-stream", params, span), headers
        ctx.parts += 1
        if ctx.parts > MAX_MIME_PARTS:
            raise MimeLimitExceeded("too many MIME parts")
        inner, inner_headers = parse_entity(ctx, body_start, end, depth + 1)
        return (
            fields.make(
                ctype,
                subtype,
                params,
                span,
                lines=count_lines(buf, body_start, end),
                envelope=envelope_from_headers(inner_headers),
                message=inner,
            ),
            headers,
        )

    lines = count_lines(buf, body_start, end) if ctype == "text" else 0
    return fields.make(ctype, subtype, params, span, lines=lines), headers


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    headers: HeaderBlock
    envelope: Envelope
    structure: BodyPart
    failed: bool = False


def parse_message(buf: Buffer) -> ParsedMessage:
    """The header, envelope and structure of a whole message; never raises.

    If a limit is crossed (or, defensively, anything unexpected happens) the message is
    described as one text/plain part covering the whole body, with `failed` set.
    """
    size = len(buf)
    try:
        ctx = _Context(buf)
        structure, headers = parse_entity(ctx, 0, size, 0)
        return ParsedMessage(headers, envelope_from_headers(headers), structure)
    except (MimeLimitExceeded, ValueError, IndexError, RecursionError):
        headers = parse_header_block(buf, 0, size)
        structure = BodyPart(
            "text",
            "plain",
            _PLAIN,
            header_start=0,
            body_start=headers.body_start,
            end=size,
            lines=count_lines(buf, headers.body_start, size),
        )
        return ParsedMessage(headers, envelope_from_headers(headers), structure, failed=True)
