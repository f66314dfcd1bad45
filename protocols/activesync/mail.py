"""E-mail items as ActiveSync shows them: Email, Email2 and AirSyncBase from store metadata.

One function, `email_application_data`, turns what the store knows about a message (its
cached metadata, flags, keywords, and the extra properties EAS keeps beside the store)
into the children of `ApplicationData` for Sync, ItemOperations and Search. Bodies follow
MS-ASAIRS: the client's BodyPreference list chooses plain text (1), HTML (2) or MIME (4,
only with MIMESupport), each with TruncationSize (on a UTF-8 character boundary; MIME
counts bytes), AllOrNone (an oversized body is sent without Data) and Preview (14.0+).
Only the bytes needed are read from the message file, so a 10 MB message with a 500-byte
truncation costs a few kilobytes of I/O.

Choices (documented here because clients see them):
- ServerId of an item is `<folder id>:<uid>`; its LongId (Search) is the same string.
- FileReference of an attachment is `<folder id>:<uid>:<IMAP part number>` (e.g. `…:7:2.1`).
- Categories are the message's keywords, except IMAP's `$`-prefixed system keywords and
  the Junk/NonJunk markers, which are not categories.
- LastVerbExecuted (Email2) is kept as the \\Answered / $Forwarded store flags (so IMAP
  sees them too) plus the exact verb and time in the item properties; a message answered
  over IMAP shows as "reply to sender" (1), forwarded as "forward" (3).
- ConversationId is the store's thread id (16 bytes); ConversationIndex is the 5-byte
  header of MS-ASCON 2.2.2.4 made from the message's Date.

Blocking: reads message files. Run it in a worker thread.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import html
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import msgpack

from store import Flag, FolderSnapshot, MessageMetadata
from store.flags import flags_to_bits
from store.mime import Address, BodyPart, decode_words

from .numbers import NumberError, parse_uint
from .policy import Policy
from .request import ProtocolVersion
from .syncstate import ItemProps, change_token
from .wbxml import E, Element

# MS-ASAIRS 2.2.2.22.1 / MS-ASCMD 2.2.3.176: body types.
BODY_PLAIN: Final = 1
BODY_HTML: Final = 2
BODY_RTF: Final = 3
BODY_MIME: Final = 4
# MS-ASAIRS 2.2.2.34: Preview is at most 255 characters.
MAX_PREVIEW: Final = 255
# MS-ASCMD 2.2.3.100.3: MIMESupport 0 never, 1 S/MIME only, 2 always.
MIME_NEVER: Final = 0
MIME_SMIME_ONLY: Final = 1
MIME_ALWAYS: Final = 2
# MS-ASCMD 2.2.3.101.2 MIMETruncation codes (12.1 clients) -> bytes; 8 = no truncation.
MIME_TRUNCATION: Final[dict[int, int | None]] = {
    0: 0,
    1: 4096,
    2: 5120,
    3: 7168,
    4: 10240,
    5: 20480,
    6: 51200,
    7: 102400,
    8: None,
}
# Items whose tokens TokenCache keeps (about 200 bytes each: 40 MB at most), over the
# folders being synced or pinged now, least recently used dropped first. Every entry
# counts as at least one item, so entries of empty folders are evicted too.
TOKEN_CACHE_ITEMS: Final = 200_000
# Entries (folder states) TokenCache keeps whatever their size: each costs a key and three
# containers (about 1 KB empty), and a server with many idle empty folders must not grow.
TOKEN_CACHE_ENTRIES: Final = 10_000
# RFC 9051 2.3.1.1: a UID is a 32-bit number, at most ten digits.
UID_DIGITS: Final = 10
# Nesting of an IMAP part number in a FileReference (`2.1.3`); deeper is no real message.
MAX_PART_DEPTH: Final = 100
# Text bodies larger than this (decoded) are not read whole just to measure them: the
# EstimatedDataSize is then estimated from the transfer-encoded size.
MEASURE_LIMIT: Final = 1024 * 1024
# MS-ASEMAIL 2.2.2.28 InternetCPID: the code page of the body we send (UTF-8).
CPID_UTF8: Final = "65001"
CONTENT_CLASS: Final = "urn:content-classes:message"  # MS-ASEMAIL 2.2.2.14
# MS-ASEMAIL 2.2.2.39 Importance: 0 low, 1 normal, 2 high.
IMPORTANCE: Final = {"low": 0, "normal": 1, "high": 2}
# MS-ASAIRS 2.2.2.31 Method: 1 normal attachment, 5 embedded message.
METHOD_NORMAL: Final = 1
METHOD_EMBEDDED: Final = 5
# MS-ASEMAIL 2.2.2.47 LastVerbExecuted.
VERB_REPLY: Final = 1
VERB_REPLY_ALL: Final = 2
VERB_FORWARD: Final = 3
# MS-ASEMAIL 2.2.2.34 Flag Status.
FLAG_CLEARED: Final = 0
FLAG_COMPLETE: Final = 1
FLAG_ACTIVE: Final = 2
# Keywords that are IMAP bookkeeping, not categories (RFC 9051 2.3.2, RFC 5788 registry).
NOT_CATEGORIES: Final = frozenset({"junk", "nonjunk", "notjunk"})
# Store flags that decide what a device shows; \\Deleted items are not shown at all.
SHOWN_FLAGS: Final = flags_to_bits(
    (Flag.SEEN, Flag.ANSWERED, Flag.FLAGGED, Flag.DRAFT, Flag.FORWARDED)
)
DELETED_BIT: Final = flags_to_bits((Flag.DELETED,))
SEEN_BIT: Final = flags_to_bits((Flag.SEEN,))
FLAGGED_BIT: Final = flags_to_bits((Flag.FLAGGED,))
ANSWERED_BIT: Final = flags_to_bits((Flag.ANSWERED,))
FORWARDED_BIT: Final = flags_to_bits((Flag.FORWARDED,))
DRAFT_BIT: Final = flags_to_bits((Flag.DRAFT,))
_FILETIME_EPOCH: Final = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
_SUBJECT_PREFIX: Final = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|antw|rif|tr)(?:\[\d+\]|\(\d+\))?\s*:\s*)+", re.IGNORECASE
)
_TAG: Final = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_BLOCK_END: Final = re.compile(r"<\s*(br|/p|/div|/tr|/li|/h[1-6])\b[^>]*>", re.IGNORECASE)
_BLANK_LINES: Final = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")

Reader = Callable[[int, int | None], bytes]  # (start, length or None = to the end) -> bytes


# --- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyPreference:
    """MS-ASAIRS 2.2.2.7 BodyPreference."""

    type: int
    truncation: int | None = None  # TruncationSize
    all_or_none: bool = False
    preview: int = 0  # characters of Preview wanted (14.0+), 0 = none


@dataclass(frozen=True, slots=True)
class RenderOptions:
    version: ProtocolVersion
    body_preferences: tuple[BodyPreference, ...] = ()
    mime_support: int = MIME_NEVER
    mime_truncation: int | None = None  # MIMETruncation code (12.1)
    allow_html: bool = True  # policy AllowHTMLEmail: HTML bodies become plain text
    max_body_bytes: int | None = None  # policy MaxEmailBodyTruncationSize, in bytes
    with_body: bool = True  # False for Find results (no body at all)
    max_html_bytes: int | None = None  # policy MaxEmailHTMLBodyTruncationSize, in bytes
    # MIME carries the HTML and the attachments the policy may forbid: without HTML or
    # attachments allowed, a device asking for MIME gets a plain text body.
    mime_allowed: bool = True

    def body_limit(self, body_type: int) -> int | None:
        """The policy's cap on a body of `body_type` (bytes; None: none)."""
        if body_type == BODY_HTML:
            return self.max_html_bytes
        if body_type == BODY_MIME:
            return self.max_html_bytes if self.allow_html else self.max_body_bytes
        return self.max_body_bytes

    def chosen(self, smime: bool) -> BodyPreference:
        """The body type to send: MIME when asked and allowed, else HTML, else plain."""
        prefs = {p.type: p for p in self.body_preferences}
        mime_ok = self.mime_support == MIME_ALWAYS or (
            self.mime_support == MIME_SMIME_ONLY and smime
        )
        if BODY_MIME in prefs and mime_ok and self.mime_allowed:
            return prefs[BODY_MIME]
        if BODY_HTML in prefs and self.allow_html:
            return prefs[BODY_HTML]
        if BODY_PLAIN in prefs:
            return prefs[BODY_PLAIN]
        if self.body_preferences:
            # Only RTF, or only MIME without MIMESupport: plain text with their limits.
            first = self.body_preferences[0]
            return BodyPreference(BODY_PLAIN, first.truncation, first.all_or_none, first.preview)
        return BodyPreference(BODY_PLAIN)


def _kb(value: int | None) -> int | None:
    return None if value is None else value * 1024


def policy_render_limits(policy: Policy) -> dict[str, Any]:
    """RenderOptions fields that enforce the device's mailbox policy on the server side
    (the device is told the same in its EASProvisionDoc, but is not trusted to obey)."""
    return {
        "allow_html": policy.allow_html_email,
        "max_body_bytes": _kb(policy.max_email_body_kb),
        "max_html_bytes": _kb(policy.max_email_html_body_kb),
        "mime_allowed": policy.allow_html_email and policy.attachments_enabled,
    }


# --- facts of one item -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemFacts:
    """Everything but the bytes: metadata plus the item's mutable state."""

    folder_id: str
    uid: int
    metadata: MessageMetadata
    flag_bits: int
    keywords: frozenset[str]
    internal_date: dt.datetime
    size: int
    props: dict[str, Any] | None

    @property
    def server_id(self) -> str:
        return server_id(self.folder_id, self.uid)


def server_id(folder_id: str, uid: int) -> str:
    return f"{folder_id}:{uid}"


def parse_server_id(text: str) -> tuple[str, int] | None:
    """(folder id, uid) of `<folder id>:<uid>`; None for anything else."""
    folder, sep, uid_text = text.strip().rpartition(":")
    if not sep or not folder:
        return None
    try:
        uid = parse_uint(uid_text, max_digits=UID_DIGITS, what="uid")
    except NumberError:
        return None
    return folder, uid


def file_reference(folder_id: str, uid: int, part: tuple[int, ...]) -> str:
    return f"{folder_id}:{uid}:{'.'.join(str(n) for n in part)}"


def parse_file_reference(text: str) -> tuple[str, int, tuple[int, ...]] | None:
    """(folder id, uid, part) of a FileReference; clients may send it percent-encoded, as
    MS-ASCMD's own examples show it (`20%3a2%3a0`)."""
    pieces = unquote(text.strip()).split(":")
    if len(pieces) != 3 or not pieces[0]:
        return None
    numbers = pieces[2].split(".")
    if len(numbers) > MAX_PART_DEPTH:
        return None
    try:
        uid = parse_uint(pieces[1], max_digits=UID_DIGITS, what="uid")
        part = tuple(parse_uint(n, what="part number") for n in numbers)
    except NumberError:
        return None
    if any(n < 1 for n in part):
        return None
    return pieces[0], uid, part


def categories_of(keywords: Iterable[str]) -> list[str]:
    return sorted(k for k in keywords if not k.startswith("$") and k.lower() not in NOT_CATEGORIES)


def item_token(
    flag_bits: int, keywords: Iterable[str], props: ItemProps, folder_id: str, uid: int
) -> int:
    """The change token a device's copy of this item is compared by."""
    return change_token(flag_bits & SHOWN_FLAGS, categories_of(keywords), props.crc(folder_id, uid))


class TokenCache:
    """The change tokens of a folder's items at one HIGHESTMODSEQ, shared by every device
    that syncs or pings it. Any flag, keyword, append or expunge moves the MODSEQ; the
    extra properties are part of the key by their checksum. Paging 10,000 items in
    windows of 100 then computes the tokens once instead of a hundred times."""

    def __init__(self, items: int = TOKEN_CACHE_ITEMS, entries: int = TOKEN_CACHE_ENTRIES) -> None:
        self._limit = items
        self._max_entries = entries
        self._items = 0
        self._lock = threading.Lock()
        self._entries: OrderedDict[
            tuple[Any, ...], tuple[dict[int, int], dict[int, int], set[int]]
        ] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> tuple[dict[int, int], dict[int, int], set[int]] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(
        self, key: tuple[Any, ...], entry: tuple[dict[int, int], dict[int, int], set[int]]
    ) -> None:
        size = _weight(entry)
        if size > self._limit:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._items -= _weight(old)
            self._entries[key] = entry
            self._items += size
            while self._items > self._limit or len(self._entries) > self._max_entries:
                _, dropped = self._entries.popitem(last=False)
                self._items -= _weight(dropped)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def _weight(entry: tuple[dict[int, int], dict[int, int], set[int]]) -> int:
    """What an entry counts against TOKEN_CACHE_ITEMS: its items, and at least 1."""
    return max(1, len(entry[2]))


def _all_tokens(
    snapshot: FolderSnapshot, props: ItemProps
) -> tuple[dict[int, int], dict[int, int], set[int]]:
    tokens: dict[int, int] = {}
    dates: dict[int, int] = {}
    present: set[int] = set()
    folder_id = snapshot.folder_id
    extra = props.of_folder(folder_id)
    memo: dict[tuple[int, frozenset[str]], int] = {}
    for summary in snapshot:
        uid = summary.uid
        present.add(uid)
        bits = flags_to_bits(summary.flags)
        if bits & DELETED_BIT:
            continue
        dates[uid] = summary.internal_date_ms
        if uid in extra:
            tokens[uid] = change_token(
                bits & SHOWN_FLAGS, categories_of(summary.keywords), props.crc(folder_id, uid)
            )
            continue
        memo_key = (bits, summary.keywords)
        token = memo.get(memo_key)
        if token is None:
            token = memo[memo_key] = change_token(
                bits & SHOWN_FLAGS, categories_of(summary.keywords)
            )
        tokens[uid] = token
    return tokens, dates, present


def folder_tokens(
    snapshot: FolderSnapshot,
    props: ItemProps,
    *,
    since: dt.datetime | None = None,
    cache: TokenCache | None = None,
) -> tuple[dict[int, int], set[int]]:
    """(uid -> token of every item a device should have, every uid present). Items marked
    \\Deleted (IMAP, before EXPUNGE) are not shown; `since` is the FilterType window."""
    entry = None
    key: tuple[Any, ...] = ()
    if cache is not None:
        extra = props.of_folder(snapshot.folder_id)
        props_crc = zlib.crc32(msgpack.packb(sorted(extra.items()), use_bin_type=True))
        key = (
            snapshot.folder_id,
            snapshot.uidvalidity,
            snapshot.highestmodseq,
            len(snapshot),
            props_crc,
        )
        entry = cache.get(key)
    if entry is None:
        entry = _all_tokens(snapshot, props)
        if cache is not None:
            cache.put(key, entry)
    tokens, dates, present = entry
    if since is None:
        return dict(tokens), present
    cutoff = int(since.timestamp() * 1000)
    return {uid: t for uid, t in tokens.items() if dates[uid] >= cutoff}, present


# --- formatting ------------------------------------------------------------------------


def eas_datetime(value: dt.datetime) -> str:
    """MS-ASDTYPE 2.3: 2024-01-02T03:04:05.000Z (Email, Tasks, Contacts)."""
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_eas_datetime(text: str) -> dt.datetime | None:
    """Both MS-ASDTYPE forms (2024-01-02T03:04:05.000Z and 20240102T030405Z)."""
    text = text.strip()
    for pattern in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y%m%dT%H%M%SZ"):
        try:
            return dt.datetime.strptime(text, pattern).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    return None


def _name(address: Address) -> str | None:
    return decode_words(address.name).strip() if address.name else None


def format_address(address: Address) -> str | None:
    spec = address.addr_spec
    if spec is None:
        return None
    name = _name(address)
    if name:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}" <{spec}>'
    return spec


def format_addresses(addresses: Iterable[Address]) -> str:
    return ", ".join(f for f in (format_address(a) for a in addresses) if f)


def display_names(addresses: Iterable[Address]) -> str:
    """MS-ASEMAIL 2.2.2.25 DisplayTo: the names, semicolon separated."""
    shown = []
    for address in addresses:
        if address.addr_spec is None:
            continue
        shown.append(_name(address) or address.addr_spec)
    return "; ".join(shown)


def thread_topic(subject: str) -> str:
    return _SUBJECT_PREFIX.sub("", subject).strip()


def conversation_id(metadata: MessageMetadata) -> bytes:
    """MS-ASCON 2.2.2.3.3: 16 bytes; the store's thread id is 32 hex digits."""
    try:
        raw = bytes.fromhex(metadata.thread_id)
    except ValueError:
        raw = b""
    return (raw + bytes(16))[:16]


def conversation_index(when: dt.datetime) -> bytes:
    """MS-ASCON 2.2.2.4: the 5-byte header from the FILETIME of the message's date (its
    high 40 bits, big-endian). Response levels need the thread's root date, which the
    store does not keep; clients order by the header."""
    delta = when.astimezone(dt.UTC) - _FILETIME_EPOCH
    filetime = (delta.days * 86_400 + delta.seconds) * 10_000_000 + delta.microseconds * 10
    return (filetime >> 24).to_bytes(5, "big")


# --- bodies ------------------------------------------------------------------------------


def _body_parts(structure: BodyPart) -> Iterator[BodyPart]:
    for _, part in structure.walk():
        if (
            part.type == "text"
            and part.subtype in ("plain", "html")
            and part.disposition != "attachment"
            and part.filename() is None
        ):
            yield part


def text_part(structure: BodyPart, subtype: str) -> BodyPart | None:
    for part in _body_parts(structure):
        if part.subtype == subtype:
            return part
    return None


def native_body_type(structure: BodyPart) -> int:
    return BODY_HTML if text_part(structure, "html") is not None else BODY_PLAIN


def _charset(part: BodyPart) -> str:
    charset = (part.param("charset") or "utf-8").strip().strip('"').lower()
    if charset in ("us-ascii", "ascii", "unicode-1-1-utf-7", ""):
        return "utf-8"
    if charset in ("iso-8859-1", "latin1", "latin-1"):
        return "cp1252"  # WHATWG: what mailers mean by Latin-1
    return charset


def decode_part(raw: bytes, part: BodyPart, *, complete: bool) -> str:
    """Transfer- and charset-decode (a prefix of) a leaf part's body."""
    encoding = (part.encoding or "").lower()
    if encoding == "base64":
        compact = b"".join(raw.split())
        if not complete:
            compact = compact[: len(compact) - len(compact) % 4]
        compact += b"=" * (-len(compact) % 4)
        try:
            raw = base64.b64decode(compact)
        except (binascii.Error, ValueError):
            raw = b""
    elif encoding == "quoted-printable":
        if not complete:
            cut = raw.rfind(b"=", max(0, len(raw) - 3))
            if cut >= 0:
                raw = raw[:cut]
        raw = binascii.a2b_qp(raw)
    try:
        return raw.decode(_charset(part), errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def html_to_text(text: str) -> str:
    text = _BLOCK_END.sub("\n", text)
    text = html.unescape(_TAG.sub("", text))
    text = text.replace("\r\n", "\n").replace("\xa0", " ")
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


def text_to_html(text: str) -> str:
    escaped = html.escape(text).replace("\r\n", "\n").replace("\n", "<br>\n")
    return f'<html><head><meta charset="utf-8"></head><body>{escaped}</body></html>'


def truncate_utf8(text: str, limit: int) -> str:
    """At most `limit` bytes of UTF-8, cut on a character boundary (MS-ASAIRS 3.2.5)."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


@dataclass(frozen=True, slots=True)
class RenderedBody:
    type: int
    data: str | bytes | None  # None: AllOrNone left it out
    estimated_size: int
    truncated: bool


def _read_text(part: BodyPart, read: Reader, want: int | None) -> tuple[str, bool]:
    """(text, whole part read) reading only what `want` UTF-8 bytes need."""
    size = part.size
    if want is None or size <= MEASURE_LIMIT:
        return decode_part(read(part.body_start, size), part, complete=True), True
    budget = max(4096, want * 2 + 1024)
    while True:
        length = min(size, budget)
        text = decode_part(read(part.body_start, length), part, complete=length >= size)
        if length >= size or len(text.encode("utf-8", "surrogatepass")) > want:
            return text, length >= size
        budget *= 4


def _estimate(part: BodyPart) -> int:
    if (part.encoding or "").lower() == "base64":
        return part.size * 3 // 4
    return part.size


def render_body(
    facts: ItemFacts,
    pref: BodyPreference,
    read: Reader,
    *,
    max_bytes: int | None = None,
) -> RenderedBody:
    """The body in the preferred type, truncated as asked (and as policy caps)."""
    meta = facts.metadata
    limit = pref.truncation
    if max_bytes is not None:
        limit = max_bytes if limit is None else min(limit, max_bytes)
    if pref.type == BODY_MIME:
        total = facts.size
        if limit is not None and total > limit:
            if pref.all_or_none:
                return RenderedBody(BODY_MIME, None, total, True)
            return RenderedBody(BODY_MIME, _mime_value(read(0, limit), cut=True), total, True)
        return RenderedBody(BODY_MIME, _mime_value(read(0, None), cut=False), total, False)
    want_html = pref.type == BODY_HTML
    structure = meta.structure
    html_part = text_part(structure, "html")
    plain_part = text_part(structure, "plain")
    source = (html_part or plain_part) if want_html else (plain_part or html_part)
    if source is None:
        text, whole, estimate = "", True, 0
    else:
        need = None if limit is None else limit + 1
        converting = (source.subtype == "html") != want_html
        text, whole = _read_text(source, read, None if converting else need)
        if source.subtype == "html" and not want_html:
            text = html_to_text(text)
        elif source.subtype == "plain" and want_html:
            text = text_to_html(text)
        estimate = len(text.encode("utf-8", "surrogatepass")) if whole else _estimate(source)
    kind = BODY_HTML if want_html else BODY_PLAIN
    if limit is not None and estimate > limit:
        if pref.all_or_none:
            return RenderedBody(kind, None, estimate, True)
        return RenderedBody(kind, truncate_utf8(text, limit), estimate, True)
    return RenderedBody(kind, text, estimate, False)


def _mime_value(data: bytes, *, cut: bool) -> str | bytes:
    """MIME as text when it is UTF-8 (what clients expect in Data); other 8-bit MIME as
    opaque bytes so no byte is altered."""
    if cut:
        text = data.decode("utf-8", "ignore")
        if text.encode("utf-8") == data[: len(text.encode("utf-8"))] and "\x00" not in text:
            return text
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    return data if "\x00" in text else text


def body_element(body: RenderedBody, preview: str | None) -> Element:
    """MS-ASAIRS 2.2.2.9 Body: Type, EstimatedDataSize, Truncated, Data, Preview."""
    return E(
        "AirSyncBase:Body",
        E("AirSyncBase:Type", body.type),
        E("AirSyncBase:EstimatedDataSize", body.estimated_size),
        E("AirSyncBase:Truncated", 1) if body.truncated else None,
        E("AirSyncBase:Data", body.data) if body.data is not None else None,
        E("AirSyncBase:Preview", preview) if preview else None,
    )


# --- attachments -----------------------------------------------------------------------


def attachment_name(facts: ItemFacts, index: int) -> str:
    attachment = facts.metadata.attachments[index]
    if attachment.filename:
        return decode_words(attachment.filename)
    if attachment.content_type == "message/rfc822":
        part = facts.metadata.structure.part(attachment.part)
        subject = ""
        if part is not None and part.envelope is not None and part.envelope.subject:
            subject = decode_words(part.envelope.subject)
        return (subject or "message")[:200] + ".eml"
    extension = attachment.content_type.partition("/")[2] or "bin"
    return f"attachment{index + 1}.{extension[:10]}"


def attachments_element(facts: ItemFacts) -> Element | None:
    """MS-ASAIRS 2.2.2.7 Attachments/Attachment."""
    meta = facts.metadata
    if not meta.attachments:
        return None
    items = []
    for i, attachment in enumerate(meta.attachments):
        method = METHOD_EMBEDDED if attachment.content_type == "message/rfc822" else METHOD_NORMAL
        items.append(
            E(
                "AirSyncBase:Attachment",
                E("AirSyncBase:DisplayName", attachment_name(facts, i)),
                E(
                    "AirSyncBase:FileReference",
                    file_reference(facts.folder_id, facts.uid, attachment.part),
                ),
                E("AirSyncBase:Method", method),
                E("AirSyncBase:EstimatedDataSize", attachment.size),
                E("AirSyncBase:ContentId", attachment.content_id.strip("<>"))
                if attachment.content_id
                else None,
                E("AirSyncBase:IsInline", 1) if attachment.inline else None,
            )
        )
    return E("AirSyncBase:Attachments", items)


# --- flags and verbs ---------------------------------------------------------------------

# Item-property names of the follow-up flag (MS-ASEMAIL 2.2.2.31) and the element each maps
# to, in the order the Flag element lists them.
FLAG_FIELDS: Final = (
    ("type", "Email:FlagType"),
    ("start", "Tasks:StartDate"),
    ("ustart", "Tasks:UtcStartDate"),
    ("due", "Tasks:DueDate"),
    ("udue", "Tasks:UtcDueDate"),
    ("reminder_set", "Tasks:ReminderSet"),
    ("reminder", "Tasks:ReminderTime"),
    ("ordinal", "Tasks:OrdinalDate"),
    ("subordinal", "Tasks:SubOrdinalDate"),
    ("complete_time", "Email:CompleteTime"),
    ("completed", "Tasks:DateCompleted"),
)


def flag_status(facts: ItemFacts) -> int:
    if facts.flag_bits & FLAGGED_BIT:
        return FLAG_ACTIVE
    stored = (facts.props or {}).get("flag") or {}
    if stored.get("status") == FLAG_COMPLETE:
        return FLAG_COMPLETE
    return FLAG_CLEARED


def flag_element(facts: ItemFacts) -> Element:
    """Email:Flag; empty when there is no flag (a Change with an empty Flag clears it)."""
    status = flag_status(facts)
    if status == FLAG_CLEARED:
        return E("Email:Flag")
    stored = (facts.props or {}).get("flag") or {}
    children = [E("Email:Status", status)]
    for name, qname in FLAG_FIELDS:
        if status == FLAG_ACTIVE and name in ("complete_time", "completed"):
            continue
        value = stored.get(name)
        if value is not None and value != "":
            children.append(E(qname, str(value)))
    if status == FLAG_ACTIVE and "type" not in stored:
        children.insert(1, E("Email:FlagType", "Follow up"))
    return E("Email:Flag", children)


def last_verb(facts: ItemFacts) -> tuple[int, str | None] | None:
    stored = facts.props or {}
    verb = stored.get("verb")
    if isinstance(verb, int) and verb in (VERB_REPLY, VERB_REPLY_ALL, VERB_FORWARD):
        return verb, stored.get("verb_time")
    if facts.flag_bits & FORWARDED_BIT:
        return VERB_FORWARD, None
    if facts.flag_bits & ANSWERED_BIT:
        return VERB_REPLY, None
    return None


# --- the item --------------------------------------------------------------------------


def email_application_data(facts: ItemFacts, options: RenderOptions, read: Reader) -> list[Element]:
    """The children of ApplicationData for one e-mail (MS-ASEMAIL 2.2.2, in Exchange's
    order: envelope fields, Attachments, Body, class and flag, Email2 fields)."""
    meta = facts.metadata
    env = meta.envelope
    version = options.version
    v14 = version >= ProtocolVersion.V14_0
    v16 = version >= ProtocolVersion.V16_0
    out: list[Element | None] = [
        E("Email:To", format_addresses(env.to)) if env.to else None,
        E("Email:Cc", format_addresses(env.cc)) if env.cc else None,
        E("Email:From", format_addresses(env.from_)) if env.from_ else None,
        E("Email:Subject", meta.subject),
        E("Email:ReplyTo", format_addresses(env.reply_to)) if env.reply_to else None,
        E("Email:DateReceived", eas_datetime(facts.internal_date)),
        E("Email:DisplayTo", display_names(env.to)),
        E("Email:ThreadTopic", thread_topic(meta.subject)),
        E("Email:Importance", IMPORTANCE.get(meta.importance.value, 1)),
        E("Email:Read", 1 if facts.flag_bits & SEEN_BIT else 0),
        attachments_element(facts),
    ]
    if options.with_body:
        smime = meta.message_class.startswith("IPM.Note.SMIME")
        pref = options.chosen(smime)
        if pref.type == BODY_MIME and pref.truncation is None and options.mime_truncation:
            pref = BodyPreference(
                BODY_MIME,
                MIME_TRUNCATION.get(options.mime_truncation),
                pref.all_or_none,
                pref.preview,
            )
        body = render_body(facts, pref, read, max_bytes=options.body_limit(pref.type))
        preview = meta.preview[: min(pref.preview, MAX_PREVIEW)] if v14 and pref.preview else None
        out.append(body_element(body, preview))
    out += [
        E("Email:MessageClass", meta.message_class),
        E("Email:InternetCPID", CPID_UTF8),
        flag_element(facts),
        E("Email:ContentClass", CONTENT_CLASS),
        E("AirSyncBase:NativeBodyType", native_body_type(meta.structure)),
    ]
    if v14:
        out.append(E("Email2:ConversationId", conversation_id(meta)))
        out.append(
            E("Email2:ConversationIndex", conversation_index(meta.sent_date or facts.internal_date))
        )
        verb = last_verb(facts)
        if verb is not None:
            out.append(E("Email2:LastVerbExecuted", verb[0]))
            if verb[1]:
                out.append(E("Email2:LastVerbExecutionTime", verb[1]))
        categories = categories_of(facts.keywords)
        out.append(E("Email:Categories", (E("Email:Category", c) for c in categories)))
    if v16:
        draft = bool(facts.flag_bits & DRAFT_BIT)
        if draft and meta.envelope.bcc:
            out.append(E("Email2:Bcc", format_addresses(env.bcc)))
        out.append(E("Email2:IsDraft", 1 if draft else 0))
    return [e for e in out if e is not None]
