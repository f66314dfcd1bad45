"""Rendering server responses to bytes (RFC 3501 7, RFC 9051 7 and extensions).

Every function returns complete bytes (with CRLF where a whole response is produced).
The choices that matter for interoperability:

* Strings are quoted when short and made of TEXT-CHARs, otherwise sent as literals; after
  ``ENABLE UTF8=ACCEPT`` (``utf8=True``) valid UTF-8 may be quoted too (RFC 6855 3).
  ``None`` is NIL. Body data is always a literal (literal8 when it holds NUL, RFC 3516).
* Human-readable text never carries CR, LF or NUL, and never starts with ``[`` unless a
  response code is meant.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from .commands import SearchReturn, StatusItem
from .limits import MAX_MIME_DEPTH, MAX_QUOTED_RESPONSE
from .model import BodyStructure, Envelope, ThreadNode
from .names import encode_mailbox_name
from .sequence import format_numbers

__all__ = [
    "ResponseCode",
    "Status",
    "astring",
    "body_structure",
    "capability",
    "continuation",
    "enabled",
    "envelope",
    "esearch",
    "exists",
    "expunge",
    "fetch",
    "flag_list",
    "flags",
    "id_response",
    "internal_date",
    "list_response",
    "literal",
    "literal_prefix",
    "mailbox",
    "namespace",
    "nstring",
    "quota",
    "quotaroot",
    "recent",
    "search",
    "section_data",
    "sort",
    "status",
    "string",
    "tagged",
    "thread",
    "untagged",
    "untagged_status",
    "vanished",
]

CRLF: Final = b"\r\n"


class Status(enum.StrEnum):
    OK = "OK"
    NO = "NO"
    BAD = "BAD"
    PREAUTH = "PREAUTH"
    BYE = "BYE"


# --- strings -----------------------------------------------------------------------------

_ATOM_SPECIALS: Final = frozenset(b'(){ %*"\\]') | frozenset(range(0x00, 0x20)) | {0x7F}
_ASTRING_SPECIALS: Final = _ATOM_SPECIALS - {ord("]")}


def _to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("utf-8", "surrogateescape")  # 8-bit kept by a surrogateescape decode
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace")  # other lone surrogates


def _quotable(raw: bytes, utf8: bool) -> bool:
    if len(raw) > MAX_QUOTED_RESPONSE or b"\r" in raw or b"\n" in raw or b"\x00" in raw:
        return False
    if raw.isascii():
        return True
    if not utf8:
        return False
    try:
        raw.decode("utf-8")  # RFC 6855 3: quoted UTF-8 only when it is valid UTF-8
    except UnicodeDecodeError:
        return False
    return True


def literal(data: bytes, *, binary: bool = False) -> bytes:
    """``{n}CRLF data``, or ``~{n}`` (literal8, RFC 3516) when ``binary`` and data has NUL."""
    return literal_prefix(data, binary=binary) + data


def literal_prefix(data: bytes, *, binary: bool = False) -> bytes:
    """What precedes ``data`` in :func:`literal` (``{n}CRLF`` or ``~{n}CRLF``), for a
    caller that sends a large literal's content as a separate write."""
    marker = b"~" if binary and b"\x00" in data else b""
    return marker + b"{" + str(len(data)).encode() + b"}\r\n"


# Printable ASCII without '"' or '\\': quoted as it is (most header text; the fast path).
_PLAIN_QUOTED: Final = re.compile(rb"[\x20\x21\x23-\x5b\x5d-\x7e]{0,%d}" % MAX_QUOTED_RESPONSE)


def string(value: str | bytes, *, utf8: bool = False) -> bytes:
    """RFC 3501 9 ``string``: quoted when safe, else a literal.

    NUL cannot appear in either (RFC 3501 9: CHAR8 excludes it); header-derived text that
    holds one gets U+FFFD instead. Body content goes through :func:`literal`.
    """
    raw = _to_bytes(value)
    if _PLAIN_QUOTED.fullmatch(raw):
        return b'"' + raw + b'"'
    raw = raw.replace(b"\x00", "\ufffd".encode())
    if _quotable(raw, utf8):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(raw)


def nstring(value: str | bytes | None, *, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else string(value, utf8=utf8)


def astring(value: str | bytes, *, utf8: bool = False) -> bytes:
    """An atom when every octet is an ASTRING-CHAR (and it is not NIL), else a string."""
    raw = _to_bytes(value)
    if raw and raw.isascii() and raw.upper() != b"NIL" and not (set(raw) & _ASTRING_SPECIALS):
        return raw
    return string(raw, utf8=utf8)


def mailbox(name: str, *, utf8: bool = False) -> bytes:
    """A mailbox name on the wire: modified UTF-7, or UTF-8 after UTF8=ACCEPT."""
    return astring(encode_mailbox_name(name, utf8=utf8), utf8=utf8)


def _text(text: str) -> bytes:
    raw = text.encode("utf-8", "replace")
    raw = raw.replace(b"\r", b" ").replace(b"\n", b" ").replace(b"\x00", b" ")
    if not raw.strip():
        raw = b"done"  # RFC 3501 9: text = 1*TEXT-CHAR
    if raw.startswith(b"["):
        raw = b" " + raw  # would be read as a response code
    return raw


# --- response codes ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """A response code (RFC 3501 7.1, RFC 5530, RFC 9051 7.1): ``[NAME data]``."""

    name: str
    data: bytes | None = None

    def render(self) -> bytes:
        inner = self.name.encode("ascii")
        if self.data is not None:
            inner += b" " + self.data
        return b"[" + inner + b"]"

    # Codes without data (RFC 3501 7.1, RFC 4315, RFC 4978, RFC 5530, RFC 7162, RFC 7889).
    @classmethod
    def of(cls, name: str) -> ResponseCode:
        return cls(name)

    @classmethod
    def capability(cls, caps: Iterable[str]) -> ResponseCode:
        return cls("CAPABILITY", " ".join(caps).encode("ascii"))

    @classmethod
    def badcharset(cls, charsets: Iterable[str]) -> ResponseCode:
        return cls("BADCHARSET", b"(" + b" ".join(astring(c) for c in charsets) + b")")

    @classmethod
    def permanentflags(cls, flags: Iterable[str]) -> ResponseCode:
        return cls("PERMANENTFLAGS", flag_list(flags))

    @classmethod
    def uidnext(cls, uid: int) -> ResponseCode:
        return cls("UIDNEXT", str(uid).encode())

    @classmethod
    def uidvalidity(cls, value: int) -> ResponseCode:
        return cls("UIDVALIDITY", str(value).encode())

    @classmethod
    def unseen(cls, seq: int) -> ResponseCode:
        return cls("UNSEEN", str(seq).encode())

    @classmethod
    def appenduid(cls, uidvalidity: int, uids: Sequence[int]) -> ResponseCode:
        """RFC 4315 3: ``APPENDUID uidvalidity uid-set`` (a set only with MULTIAPPEND)."""
        return cls("APPENDUID", str(uidvalidity).encode() + b" " + format_numbers(uids))

    @classmethod
    def copyuid(cls, uidvalidity: int, source: Sequence[int], dest: Sequence[int]) -> ResponseCode:
        """RFC 4315 3: source and destination sets correspond pairwise, in order."""
        return cls(
            "COPYUID",
            str(uidvalidity).encode() + b" " + format_numbers(source) + b" " + format_numbers(dest),
        )

    @classmethod
    def highestmodseq(cls, modseq: int) -> ResponseCode:
        return cls("HIGHESTMODSEQ", str(modseq).encode())

    @classmethod
    def modified(cls, numbers: Sequence[int]) -> ResponseCode:
        """RFC 7162 3.1.3: messages that failed UNCHANGEDSINCE."""
        return cls("MODIFIED", format_numbers(sorted(numbers)))


# Frequently used codes without data.
ALERT: Final = ResponseCode("ALERT")
PARSE: Final = ResponseCode("PARSE")
READ_ONLY: Final = ResponseCode("READ-ONLY")
READ_WRITE: Final = ResponseCode("READ-WRITE")
TRYCREATE: Final = ResponseCode("TRYCREATE")
UIDNOTSTICKY: Final = ResponseCode("UIDNOTSTICKY")
NOMODSEQ: Final = ResponseCode("NOMODSEQ")
CLOSED: Final = ResponseCode("CLOSED")
TOOBIG: Final = ResponseCode("TOOBIG")
OVERQUOTA: Final = ResponseCode("OVERQUOTA")
NONEXISTENT: Final = ResponseCode("NONEXISTENT")
ALREADYEXISTS: Final = ResponseCode("ALREADYEXISTS")
CANNOT: Final = ResponseCode("CANNOT")
LIMIT: Final = ResponseCode("LIMIT")
SERVERBUG: Final = ResponseCode("SERVERBUG")
CLIENTBUG: Final = ResponseCode("CLIENTBUG")
AUTHENTICATIONFAILED: Final = ResponseCode("AUTHENTICATIONFAILED")
AUTHORIZATIONFAILED: Final = ResponseCode("AUTHORIZATIONFAILED")
UNAVAILABLE: Final = ResponseCode("UNAVAILABLE")
INUSE: Final = ResponseCode("INUSE")
PRIVACYBUG: Final = ResponseCode("PRIVACYBUG")
EXPIRED: Final = ResponseCode("EXPIRED")
CONTACTADMIN: Final = ResponseCode("CONTACTADMIN")
NOPERM: Final = ResponseCode("NOPERM")
EXPUNGEISSUED: Final = ResponseCode("EXPUNGEISSUED")
CORRUPTION: Final = ResponseCode("CORRUPTION")
HASCHILDREN: Final = ResponseCode("HASCHILDREN")
UNKNOWN_CTE: Final = ResponseCode("UNKNOWN-CTE")
COMPRESSIONACTIVE: Final = ResponseCode("COMPRESSIONACTIVE")
NOTSAVED: Final = ResponseCode("NOTSAVED")


# --- status responses --------------------------------------------------------------------


def _status_line(
    prefix: bytes, status: Status, text: str, code: ResponseCode | str | None
) -> bytes:
    out = prefix + b" " + status.value.encode()
    if code is not None:
        out += b" " + (
            code.render() if isinstance(code, ResponseCode) else b"[" + code.encode() + b"]"
        )
    return out + b" " + _text(text) + CRLF


def tagged(tag: str, status: Status, text: str, code: ResponseCode | str | None = None) -> bytes:
    """``tag OK [code] text``. ``code`` may be a pre-rendered string (from BadCommand)."""
    return _status_line(tag.encode("ascii"), status, text, code)


def untagged_status(status: Status, text: str, code: ResponseCode | str | None = None) -> bytes:
    """``* OK [code] text`` (also greetings: PREAUTH, and BYE)."""
    return _status_line(b"*", status, text, code)


def continuation(text: str | None = "Ready", *, data: bytes | None = None) -> bytes:
    """``+ text`` or, for a SASL challenge, ``+ <base64 data>`` (pass it as ``data``)."""
    if data is not None:
        return b"+ " + data + CRLF
    return b"+ " + _text(text or "Ready") + CRLF


def untagged(payload: bytes) -> bytes:
    return b"* " + payload + CRLF


# --- mailbox data ------------------------------------------------------------------------


def flag_list(items: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode("ascii", "replace") for f in items) + b")"


def capability(caps: Iterable[str]) -> bytes:
    return untagged(b"CAPABILITY " + " ".join(caps).encode("ascii"))


def enabled(caps: Iterable[str]) -> bytes:
    """RFC 5161 3.2: ``* ENABLED`` (possibly with nothing after it)."""
    names = " ".join(caps).encode("ascii")
    return untagged(b"ENABLED" + (b" " + names if names else b""))


def flags(items: Iterable[str]) -> bytes:
    return untagged(b"FLAGS " + flag_list(items))


def exists(count: int) -> bytes:
    return untagged(str(count).encode() + b" EXISTS")


def recent(count: int) -> bytes:
    return untagged(str(count).encode() + b" RECENT")


def expunge(seq: int) -> bytes:
    return untagged(str(seq).encode() + b" EXPUNGE")


def vanished(uids: Sequence[int], *, earlier: bool = False) -> bytes:
    """RFC 7162 3.2.10: ``* VANISHED [(EARLIER)] uid-set``."""
    return untagged(b"VANISHED " + (b"(EARLIER) " if earlier else b"") + format_numbers(uids))


def list_response(
    name: str,
    *,
    attributes: Iterable[str] = (),
    delimiter: str | None = "/",
    extended: Sequence[tuple[str, bytes]] = (),
    lsub: bool = False,
    utf8: bool = False,
) -> bytes:
    """``* LIST (attrs) "/" name [(ext-name ext-value ...)]`` (RFC 3501 7.2.2, RFC 5258 9).

    ``extended`` items are (tag, rendered value), e.g. ``("CHILDINFO", b'("SUBSCRIBED")')``
    or ``("OLDNAME", b'("old")')``.
    """
    delim = b"NIL" if delimiter is None else string(delimiter)
    out = (b"LSUB " if lsub else b"LIST ") + flag_list(attributes) + b" " + delim
    out += b" " + mailbox(name, utf8=utf8)
    if extended:
        out += b" (" + b" ".join(string(k) + b" " + v for k, v in extended) + b")"
    return untagged(out)


def status(name: str, items: Mapping[StatusItem, int], *, utf8: bool = False) -> bytes:
    """RFC 3501 7.2.4: ``* STATUS name (MESSAGES 3 UIDNEXT 7)``."""
    body = b" ".join(k.value.encode() + b" " + str(v).encode() for k, v in items.items())
    return untagged(b"STATUS " + mailbox(name, utf8=utf8) + b" (" + body + b")")


def namespace(
    personal: Sequence[tuple[str, str | None]] | None,
    other: Sequence[tuple[str, str | None]] | None = None,
    shared: Sequence[tuple[str, str | None]] | None = None,
    *,
    utf8: bool = False,
) -> bytes:
    """RFC 2342 5: ``* NAMESPACE (("" "/")) NIL NIL``."""

    def one(spaces: Sequence[tuple[str, str | None]] | None) -> bytes:
        if not spaces:
            return b"NIL"
        return (
            b"("
            + b"".join(
                b"("
                + string(encode_mailbox_name(p, utf8=utf8), utf8=utf8)
                + b" "
                + nstring(d)
                + b")"
                for p, d in spaces
            )
            + b")"
        )

    return untagged(b"NAMESPACE " + one(personal) + b" " + one(other) + b" " + one(shared))


def quota(root: str, resources: Sequence[tuple[str, int, int]]) -> bytes:
    """RFC 9208 5.1: ``* QUOTA root (STORAGE used limit ...)`` (STORAGE in KiB)."""
    body = b" ".join(f"{name} {used} {limit}".encode("ascii") for name, used, limit in resources)
    return untagged(b"QUOTA " + astring(root) + b" (" + body + b")")


def quotaroot(name: str, roots: Sequence[str], *, utf8: bool = False) -> bytes:
    """RFC 9208 5.2: ``* QUOTAROOT mailbox root...``."""
    out = b"QUOTAROOT " + mailbox(name, utf8=utf8)
    for root in roots:
        out += b" " + astring(root)
    return untagged(out)


def id_response(params: Sequence[tuple[str, str | None]] | None) -> bytes:
    """RFC 2971 3.2: ``* ID ("name" "mailhost")`` or ``* ID NIL``."""
    if not params:
        return untagged(b"ID NIL")
    body = b" ".join(string(k) + b" " + nstring(v) for k, v in params)
    return untagged(b"ID (" + body + b")")


# --- search, sort, thread ----------------------------------------------------------------


def search(numbers: Iterable[int], *, modseq: int | None = None) -> bytes:
    """RFC 3501 7.2.5, RFC 7162 3.1.5: ``* SEARCH 2 5 (MODSEQ 917)``."""
    nums = [str(n).encode() for n in numbers]
    out = b"SEARCH" + b"".join(b" " + n for n in nums)
    if modseq is not None and nums:
        out += b" (MODSEQ " + str(modseq).encode() + b")"
    return untagged(out)


def esearch(
    tag: str,
    results: Sequence[int],
    returns: frozenset[SearchReturn],
    *,
    uid: bool = False,
    modseq: int | None = None,
) -> bytes:
    """RFC 4731 3.1 ``* ESEARCH (TAG "t") [UID] MIN 1 MAX 9 COUNT 4 ALL 1:3,9``.

    ``results`` ascending. MIN/MAX/ALL are left out when nothing matched; COUNT 0 is
    sent. Returns ``b""`` when SAVE was the only option (RFC 5182 2.1: no ESEARCH then).
    """
    if returns == {SearchReturn.SAVE}:
        return b""
    out = b"ESEARCH (TAG " + string(tag) + b")"
    if uid:
        out += b" UID"
    if results:
        if SearchReturn.MIN in returns:
            out += b" MIN " + str(results[0]).encode()
        if SearchReturn.MAX in returns:
            out += b" MAX " + str(results[-1]).encode()
    if SearchReturn.COUNT in returns:
        out += b" COUNT " + str(len(results)).encode()
    if results and SearchReturn.ALL in returns:
        out += b" ALL " + format_numbers(results)
    if modseq is not None and results:
        out += b" MODSEQ " + str(modseq).encode()  # RFC 7162 3.1.5
    return untagged(out)


def sort(numbers: Iterable[int]) -> bytes:
    """RFC 5256 4: ``* SORT 2 3 6``."""
    return untagged(b"SORT" + b"".join(b" " + str(n).encode() for n in numbers))


def _thread_list(root: ThreadNode) -> bytes:
    """One ``thread-list`` (RFC 5256 5), iteratively: hostile References headers can make
    trees as deep as the mailbox is large."""
    out = bytearray(b"(")
    stack: list[ThreadNode | bytes] = [root]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            if item == b"(" and out[-1:].isdigit():
                out += b" "  # "6 (4 23)(44 7 96)"
            out += item
            continue
        if item.message is not None:
            if out[-1:].isdigit():
                out += b" "
            out += str(item.message).encode()
        kids = item.children
        if len(kids) == 1:
            stack.append(kids[0])  # thread-members: a chain continues inline
        else:
            for child in reversed(kids):  # thread-nested = 2*thread-list
                stack.extend((b")", child, b"("))
    out += b")"
    return bytes(out)


def thread(roots: Sequence[ThreadNode]) -> bytes:
    """RFC 5256 4: ``* THREAD (2)(3 6 (4 23)(44 7 96))``; a dummy root holding several
    threads renders as ``((3)(5))``."""
    body = b"".join(_thread_list(root) for root in roots)
    return untagged(b"THREAD" + (b" " + body if body else b""))


# --- FETCH -------------------------------------------------------------------------------

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def internal_date(value: dt.datetime) -> bytes:
    """RFC 3501 9 ``date-time``: ``"17-Jul-1996 02:44:25 -0700"`` (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    offset = value.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    text = (
        f"{value.day:02d}-{_MONTHS[value.month - 1]}-{value.year:04d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} "
        f"{sign}{minutes // 60:02d}{minutes % 60:02d}"
    )
    return b'"' + text.encode("ascii") + b'"'


class AddressFields(Protocol):
    """What ENVELOPE renders of an address: the IMAP model's, or the store's as it is."""

    @property
    def name(self) -> str | None: ...
    @property
    def route(self) -> str | None: ...
    @property
    def mailbox(self) -> str | None: ...
    @property
    def host(self) -> str | None: ...


class EnvelopeFields(Protocol):
    """What ENVELOPE renders of a message: the IMAP model's :class:`Envelope`, or the
    store's envelope as it is (no conversion per message on the hot path)."""

    @property
    def date(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def from_(self) -> Sequence[AddressFields]: ...
    @property
    def sender(self) -> Sequence[AddressFields] | None: ...
    @property
    def reply_to(self) -> Sequence[AddressFields] | None: ...
    @property
    def to(self) -> Sequence[AddressFields]: ...
    @property
    def cc(self) -> Sequence[AddressFields]: ...
    @property
    def bcc(self) -> Sequence[AddressFields]: ...
    @property
    def in_reply_to(self) -> str | None: ...
    @property
    def message_id(self) -> str | None: ...


# Rendered address lists, keyed by the list (addresses are frozen, so hashable): a folder
# repeats the same From, To and Cc lists over and over.
AddressMemo = dict[tuple[bool, Sequence[AddressFields]], bytes]


def _address(addr: AddressFields, utf8: bool) -> bytes:
    return b"(%s %s %s %s)" % (
        nstring(addr.name, utf8=utf8),
        nstring(addr.route, utf8=utf8),
        nstring(addr.mailbox, utf8=utf8),
        nstring(addr.host, utf8=utf8),
    )


def _address_list(
    addrs: Sequence[AddressFields] | None, utf8: bool, memo: AddressMemo | None = None
) -> bytes:
    if not addrs:
        return b"NIL"
    if memo is None:
        return b"(" + b"".join([_address(a, utf8) for a in addrs]) + b")"
    key = (utf8, addrs)
    rendered = memo.get(key)
    if rendered is None:
        rendered = memo[key] = b"(" + b"".join([_address(a, utf8) for a in addrs]) + b")"
    return rendered


def envelope(env: EnvelopeFields, *, utf8: bool = False, memo: AddressMemo | None = None) -> bytes:
    """RFC 3501 7.4.2 ENVELOPE (sender and reply-to default to from). ``memo`` keeps
    rendered address lists between calls (a caller rendering a whole folder)."""
    from_ = _address_list(env.from_, utf8, memo)
    return b"(%s %s %s %s %s %s %s %s %s %s)" % (
        nstring(env.date, utf8=utf8),
        nstring(env.subject, utf8=utf8),
        from_,
        _address_list(env.sender, utf8, memo) if env.sender else from_,
        _address_list(env.reply_to, utf8, memo) if env.reply_to else from_,
        _address_list(env.to, utf8, memo),
        _address_list(env.cc, utf8, memo),
        _address_list(env.bcc, utf8, memo),
        nstring(env.in_reply_to, utf8=utf8),
        nstring(env.message_id, utf8=utf8),
    )


def _params(params: Sequence[tuple[str, str]], utf8: bool) -> bytes:
    if not params:
        return b"NIL"
    return (
        b"("
        + b" ".join(string(k, utf8=utf8) + b" " + string(v, utf8=utf8) for k, v in params)
        + b")"
    )


def _extension(part: BodyStructure, utf8: bool) -> bytes:
    """``body-fld-dsp SP body-fld-lang SP body-fld-loc`` (shared by both part kinds)."""
    if part.disposition is None:
        dsp = b"NIL"
    else:
        dsp = (
            b"("
            + string(part.disposition.type, utf8=utf8)
            + b" "
            + _params(part.disposition.params, utf8)
            + b")"
        )
    if not part.language:
        lang = b"NIL"
    elif len(part.language) == 1:
        lang = string(part.language[0], utf8=utf8)
    else:
        lang = b"(" + b" ".join(string(x, utf8=utf8) for x in part.language) + b")"
    return dsp + b" " + lang + b" " + nstring(part.location, utf8=utf8)


_PLACEHOLDER: Final = BodyStructure(params=(("charset", "us-ascii"),), lines=0)


def body_structure(part: BodyStructure, *, extensible: bool = True, utf8: bool = False) -> bytes:
    """RFC 3501 7.4.2 / 9 ``body``: BODYSTRUCTURE (``extensible``) or BODY."""
    return _body(part, extensible, utf8, 0)


def _body(part: BodyStructure, ext: bool, utf8: bool, depth: int) -> bytes:
    if depth > MAX_MIME_DEPTH:
        part = BodyStructure(type="application", subtype="octet-stream", size=part.size)
    if part.is_multipart:
        children = part.parts or (_PLACEHOLDER,)  # RFC 3501 9: 1*body
        out = b"".join(_body(child, ext, utf8, depth + 1) for child in children)
        out += b" " + string(part.subtype, utf8=utf8)
        if ext:
            out += b" " + _params(part.params, utf8) + b" " + _extension(part, utf8)
        return b"(" + out + b")"
    fields = [
        string(part.type, utf8=utf8),
        string(part.subtype, utf8=utf8),
        _params(part.params, utf8),
        nstring(part.id, utf8=utf8),
        nstring(part.description, utf8=utf8),
        string(part.encoding, utf8=utf8),
        str(part.size).encode(),
    ]
    if part.is_message:
        fields.append(envelope(part.envelope or Envelope(), utf8=utf8))
        fields.append(_body(part.body or _PLACEHOLDER, ext, utf8, depth + 1))
        fields.append(str(part.lines or 0).encode())
    elif part.type.lower() == "text":
        fields.append(str(part.lines or 0).encode())
    if ext:
        fields.append(nstring(part.md5, utf8=utf8))
        fields.append(_extension(part, utf8))
    return b"(" + b" ".join(fields) + b")"


def section_data(data: bytes | None, *, binary: bool = False) -> bytes:
    """BODY[...] / BINARY[...] content: NIL for a missing part, else a literal.

    todo(rfc 3516 4.3): BODY[] content holding NUL goes out in a plain literal; Dovecot
    rewrites NUL to 0x80 there. BINARY[] uses literal8 as it must.
    """
    if data is None:
        return b"NIL"
    return literal(data, binary=binary)


def fetch(seq: int, items: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``* seq FETCH (NAME value NAME value)``; names from
    :meth:`FetchAttribute.response_name`, values rendered by the helpers here."""
    body = b" ".join(name + b" " + value for name, value in items)
    return untagged(str(seq).encode() + b" FETCH (" + body + b")")
