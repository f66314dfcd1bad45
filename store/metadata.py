"""Per-message metadata, parsed once at delivery and kept in the folder's cache file.

Everything a front end needs to list, search or describe a message without reading it:
the IMAP ENVELOPE fields (raw), the MIME structure with byte offsets (BODYSTRUCTURE and
section fetches), thread and conversation id, attachments, importance, a preview, the EAS
message class, and PIM fields for calendar/contact/task/note items.

Records are versioned msgpack maps (`to_record` / `from_record`) with enums as strings.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from .errors import InvalidItem
from .limits import MAX_PREVIEW_SOURCE_BYTES, PREVIEW_CHARS
from .mime import (
    Address,
    BodyPart,
    Buffer,
    Envelope,
    decode_words,
    param_value,
    parse_message,
)
from .pim import ITEM_HEADER, ItemKind, PimFields, item_fields, kind_from_header

RECORD_VERSION = 1


class Importance(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attachment as EAS lists it (MS-ASAIRS Attachment) and IMAP can fetch it.

    `part` is the IMAP section path ((2,) is BODY[2], (1, 3) is BODY[1.3]); `size` is an
    estimate of the decoded size (base64 shrinks by 3/4).
    """

    part: tuple[int, ...]
    filename: str | None
    content_type: str
    size: int
    content_id: str | None
    inline: bool


@dataclass(frozen=True, slots=True)
class MessageMetadata:
    envelope: Envelope
    structure: BodyPart
    subject: str  # decoded (RFC 2047), for display, EAS and SEARCH
    message_id: str | None  # without the angle brackets
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    thread_id: str  # stable conversation id: 32 hex digits (EAS ConversationId is 16 bytes)
    sent_date: datetime | None  # the Date header, UTC
    importance: Importance
    has_attachments: bool
    attachments: tuple[Attachment, ...]
    preview: str
    message_class: str  # EAS MessageClass: IPM.Note, IPM.Appointment, ...
    parse_failed: bool = False
    pim: PimFields | None = None

    @property
    def header_size(self) -> int:
        return self.structure.body_start


# --- building ---------------------------------------------------------------------------

_MSG_ID = re.compile(r"<([^<>\s]+)>")
_SUBJECT_PREFIX = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|antw|rif|tr|r)(?:\[\d+\]|\(\d+\))?\s*:|\[[^\]]{0,60}\])\s*",
    re.IGNORECASE,
)
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)
_SIGNATURE_TYPES = frozenset(
    (
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pgp-signature",
    )
)


def message_ids(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    found = _MSG_ID.findall(value)
    if found:
        return tuple(found[:100])
    stripped = value.strip()
    return (stripped,) if stripped and " " not in stripped else ()


def base_subject(subject: str) -> str:
    """The subject without reply/forward prefixes and list tags, folded (RFC 5256 2.1-ish)."""
    text = " ".join(subject.split())
    for _ in range(20):
        stripped = _SUBJECT_PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    if text.lower().endswith("(fwd)"):
        text = text[:-5]
    return text.strip().casefold()


def _importance(get: Any) -> Importance:
    value = (get("importance") or get("priority") or "").strip().lower()
    if value in ("high", "urgent"):
        return Importance.HIGH
    if value in ("low", "non-urgent"):
        return Importance.LOW
    x_priority = (get("x-priority") or "").strip()[:1]
    if x_priority in ("1", "2"):
        return Importance.HIGH
    if x_priority in ("4", "5"):
        return Importance.LOW
    ms = (get("x-msmail-priority") or "").strip().lower()
    if ms == "high":
        return Importance.HIGH
    if ms == "low":
        return Importance.LOW
    return Importance.NORMAL


def _sent_date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        parsed = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def _is_body_text(part: BodyPart) -> bool:
    return (
        part.type == "text"
        and part.subtype in ("plain", "html")
        and part.disposition != "attachment"
        and part.filename() is None
    )


def _attachments(structure: BodyPart) -> tuple[Attachment, ...]:
    if not structure.is_multipart:
        return ()
    out = []
    for path, part in structure.walk():
        if part.is_multipart or _is_body_text(part) or part.mime_type in _SIGNATURE_TYPES:
            continue
        if part.type == "text" and part.filename() is None and part.disposition is None:
            continue  # text/calendar invitations, text/enriched alternatives
        size = part.size
        if (part.encoding or "").lower() == "base64":
            size = max(0, (size - 2 * part.lines) * 3 // 4) if part.lines else size * 3 // 4
        inline = part.disposition == "inline" or (
            part.disposition is None and part.content_id is not None
        )
        out.append(
            Attachment(
                part=path,
                filename=part.filename(),
                content_type=part.mime_type,
                size=size,
                content_id=part.content_id,
                inline=inline,
            )
        )
    return tuple(out)


def _first_text(structure: BodyPart) -> BodyPart | None:
    candidates = [p for _, p in structure.walk() if _is_body_text(p)]
    for part in candidates:
        if part.subtype == "plain":
            return part
    return candidates[0] if candidates else None


def decode_body(buf: Buffer, part: BodyPart, limit: int) -> str:
    """Up to `limit` source bytes of a leaf part, transfer- and charset-decoded."""
    raw = bytes(buf[part.body_start : min(part.end, part.body_start + limit)])
    encoding = (part.encoding or "").lower()
    if encoding == "base64":
        compact = b"".join(raw.split())
        compact = compact[: len(compact) - len(compact) % 4]
        try:
            raw = base64.b64decode(compact)
        except (binascii.Error, ValueError):
            raw = b""
    elif encoding == "quoted-printable":
        raw = binascii.a2b_qp(raw)
    charset = (part.param("charset") or "utf-8").strip().lower()
    if charset in ("us-ascii", "ascii", "iso-8859-1", "latin1"):
        charset = "utf-8" if charset in ("us-ascii", "ascii") else "cp1252"
    try:
        return raw.decode(charset, errors="replace")
    except LookupError:
        return raw.decode("utf-8", errors="replace")


def _preview(buf: Buffer, structure: BodyPart) -> str:
    part = _first_text(structure)
    if part is None:
        return ""
    text = decode_body(buf, part, MAX_PREVIEW_SOURCE_BYTES)
    if part.subtype == "html":
        text = html.unescape(_TAG.sub(" ", text))
    return _collapsed(text, PREVIEW_CHARS)


def _collapsed(text: str, limit: int) -> str:
    """`" ".join(text.split())[:limit]`, splitting only as much of `text` as that needs.

    The collapsed form of a prefix of `text` is a prefix of the collapsed whole (a word
    cut at the end is a prefix of that word), so once it is long enough it is the answer.
    """
    window = limit * 4
    if len(text) > window:
        head = " ".join(text[:window].split())
        if len(head) >= limit:
            return head[:limit]
    return " ".join(text.split())[:limit]


def _message_class(structure: BodyPart, kind: ItemKind | None) -> str:
    if kind is not None:
        return {
            ItemKind.EVENT: "IPM.Appointment",
            ItemKind.TASK: "IPM.Task",
            ItemKind.CONTACT: "IPM.Contact",
            ItemKind.NOTE: "IPM.StickyNote",
        }[kind]
    root = structure.mime_type
    if root == "multipart/signed" and (structure.param("protocol") or "").lower() in (
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
    ):
        return "IPM.Note.SMIME.MultipartSigned"
    if root in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        return "IPM.Note.SMIME"
    if root == "multipart/report" and (structure.param("report-type") or "").lower() == (
        "delivery-status"
    ):
        return "REPORT.IPM.Note.NDR"
    for _, part in structure.walk():
        if part.mime_type == "text/calendar":
            method = (part.param("method") or "").upper()
            if method == "REQUEST":
                return "IPM.Schedule.Meeting.Request"
            if method == "CANCEL":
                return "IPM.Schedule.Meeting.Canceled"
    return "IPM.Note"


def build_metadata(buf: Buffer) -> MessageMetadata:
    """Parse a whole message (bytes or an mmap of its file) once; never raises."""
    parsed = parse_message(buf)
    headers = parsed.headers
    structure = parsed.structure
    envelope = parsed.envelope
    subject = decode_words(envelope.subject or "")
    own = message_ids(envelope.message_id)
    in_reply_to = message_ids(envelope.in_reply_to)
    references = message_ids(headers.get("references"))
    root = references[0] if references else in_reply_to[0] if in_reply_to else None
    if root is None and own:
        root = own[0]
    thread_key = f"id:{root}" if root else f"subject:{base_subject(subject)}"
    kind = kind_from_header(headers.get(ITEM_HEADER.lower()))
    pim: PimFields | None = None
    attachments: tuple[Attachment, ...] = ()
    preview = ""
    if not parsed.failed:
        attachments = _attachments(structure)
    if kind is not None and not structure.is_multipart:
        payload = decode_body(buf, structure, structure.size)
        try:
            pim = item_fields(kind, payload, subject)
        except InvalidItem:
            pim = PimFields(kind=kind, summary=subject)
        preview = _collapsed(pim.summary or "", PREVIEW_CHARS)
    else:
        preview = _preview(buf, structure)
    return MessageMetadata(
        envelope=envelope,
        structure=structure,
        subject=subject,
        message_id=own[0] if own else None,
        in_reply_to=in_reply_to,
        references=references,
        thread_id=hashlib.sha256(thread_key.encode("utf-8", "replace")).hexdigest()[:32],
        sent_date=_sent_date(envelope.date),
        importance=_importance(headers.get),
        has_attachments=any(not a.inline for a in attachments),
        attachments=attachments,
        preview=preview,
        message_class=_message_class(structure, kind),
        parse_failed=parsed.failed,
        pim=pim,
    )


# --- records ----------------------------------------------------------------------------


def _addresses_out(addresses: tuple[Address, ...]) -> list[list[str | None]]:
    return [[a.name, a.route, a.mailbox, a.host] for a in addresses]


def _addresses_in(data: list[list[str | None]]) -> tuple[Address, ...]:
    return tuple(map(Address._make, data)) if data else ()


def _envelope_out(env: Envelope) -> list[Any]:
    return [
        env.date,
        env.subject,
        _addresses_out(env.from_),
        _addresses_out(env.sender),
        _addresses_out(env.reply_to),
        _addresses_out(env.to),
        _addresses_out(env.cc),
        _addresses_out(env.bcc),
        env.in_reply_to,
        env.message_id,
    ]


def _envelope_in(d: list[Any]) -> Envelope:
    return Envelope(
        date=d[0],
        subject=d[1],
        from_=_addresses_in(d[2]),
        sender=_addresses_in(d[3]),
        reply_to=_addresses_in(d[4]),
        to=_addresses_in(d[5]),
        cc=_addresses_in(d[6]),
        bcc=_addresses_in(d[7]),
        in_reply_to=d[8],
        message_id=d[9],
    )


def _part_out(p: BodyPart) -> dict[str, Any]:
    out: dict[str, Any] = {
        "t": p.type,
        "s": p.subtype,
        "p": [list(x) for x in p.params],
        "o": [p.header_start, p.body_start, p.end, p.lines],
    }
    optional = {
        "id": p.content_id,
        "desc": p.description,
        "enc": p.encoding,
        "md5": p.md5,
        "disp": p.disposition,
        "loc": p.location,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if p.disposition_params:
        out["dp"] = [list(x) for x in p.disposition_params]
    if p.language:
        out["lang"] = list(p.language)
    if p.parts:
        out["parts"] = [_part_out(c) for c in p.parts]
    if p.envelope is not None:
        out["env"] = _envelope_out(p.envelope)
    if p.message is not None:
        out["msg"] = _part_out(p.message)
    return out


def _part_in(d: dict[str, Any]) -> BodyPart:
    offsets = d["o"]
    return BodyPart(
        d["t"],
        d["s"],
        tuple((k, v) for k, v in d["p"]),
        content_id=d.get("id"),
        description=d.get("desc"),
        encoding=d.get("enc"),
        md5=d.get("md5"),
        disposition=d.get("disp"),
        disposition_params=tuple((k, v) for k, v in d.get("dp", ())),
        language=tuple(d.get("lang", ())),
        location=d.get("loc"),
        header_start=offsets[0],
        body_start=offsets[1],
        end=offsets[2],
        lines=offsets[3],
        parts=tuple(_part_in(c) for c in d.get("parts", ())),
        envelope=_envelope_in(d["env"]) if "env" in d else None,
        message=_part_in(d["msg"]) if "msg" in d else None,
    )


def _time_out(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _time_in(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value is not None else None


def _pim_out(p: PimFields) -> dict[str, Any]:
    return {
        "kind": p.kind.value,
        "uid": p.uid,
        "summary": p.summary,
        "start": _time_out(p.start),
        "end": _time_out(p.end),
        "all_day": p.all_day,
        "due": _time_out(p.due),
        "completed": _time_out(p.completed),
        "location": p.location,
        "recurring": p.recurring,
        "email": p.email,
    }


def _pim_in(d: dict[str, Any]) -> PimFields:
    return PimFields(
        kind=ItemKind(d["kind"]),
        uid=d["uid"],
        summary=d["summary"],
        start=_time_in(d["start"]),
        end=_time_in(d["end"]),
        all_day=d["all_day"],
        due=_time_in(d["due"]),
        completed=_time_in(d["completed"]),
        location=d["location"],
        recurring=d["recurring"],
        email=d["email"],
    )


def to_record(meta: MessageMetadata) -> dict[str, Any]:
    return {
        "v": RECORD_VERSION,
        "env": _envelope_out(meta.envelope),
        "body": _part_out(meta.structure),
        "subject": meta.subject,
        "mid": meta.message_id,
        "irt": list(meta.in_reply_to),
        "refs": list(meta.references),
        "thread": meta.thread_id,
        "sent": _time_out(meta.sent_date),
        "imp": meta.importance.value,
        "hasatt": meta.has_attachments,
        "att": [
            [list(a.part), a.filename, a.content_type, a.size, a.content_id, a.inline]
            for a in meta.attachments
        ],
        "preview": meta.preview,
        "class": meta.message_class,
        "failed": meta.parse_failed,
        "pim": _pim_out(meta.pim) if meta.pim is not None else None,
    }


def envelope_from_record(d: dict[str, Any]) -> tuple[Envelope, str]:
    """The envelope and decoded subject of a record, nothing else decoded."""
    if d.get("v") != RECORD_VERSION:
        raise ValueError("unknown metadata record version")
    return _envelope_in(d["env"]), d["subject"]


def from_record(d: dict[str, Any]) -> MessageMetadata:
    """Inverse of `to_record`; raises ValueError/KeyError/TypeError on a bad record."""
    if d.get("v") != RECORD_VERSION:
        raise ValueError("unknown metadata record version")
    return MessageMetadata(
        envelope=_envelope_in(d["env"]),
        structure=_part_in(d["body"]),
        subject=d["subject"],
        message_id=d["mid"],
        in_reply_to=tuple(d["irt"]),
        references=tuple(d["refs"]),
        thread_id=d["thread"],
        sent_date=_time_in(d["sent"]),
        importance=Importance(d["imp"]),
        has_attachments=d["hasatt"],
        attachments=tuple(Attachment(tuple(a[0]), a[1], a[2], a[3], a[4], a[5]) for a in d["att"]),
        preview=d["preview"],
        message_class=d["class"],
        parse_failed=d["failed"],
        pim=_pim_in(d["pim"]) if d["pim"] is not None else None,
    )


__all__ = [
    "Attachment",
    "Importance",
    "MessageMetadata",
    "base_subject",
    "build_metadata",
    "decode_body",
    "from_record",
    "message_ids",
    "param_value",
    "to_record",
]
