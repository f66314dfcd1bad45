"""Calendar, contact, task and note items: a small tolerant iCalendar/vCard reader.

Items live in their folders as ordinary RFC 5322 messages (so every maildir tool can read
them) whose body is the iCalendar (RFC 5545) or vCard (RFC 6350) text, or the note's text,
marked with an ``X-Mailhost-Item`` header naming the kind. The index keeps them like mail
(UID, MODSEQ); the metadata cache keeps the few fields EAS filters and lists need: an
event's start and end, a task's due date, a summary, the item's own UID.

The reader is deliberately forgiving (unfolds lines, ignores unknown properties and bad
values) but bounded: at most `MAX_ITEM_LINES` lines of at most `MAX_ITEM_BYTES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import InvalidItem
from .limits import MAX_ITEM_BYTES, MAX_ITEM_LINES

ITEM_HEADER = "X-Mailhost-Item"


class ItemKind(StrEnum):
    EVENT = "event"
    TASK = "task"
    CONTACT = "contact"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class PimFields:
    """What lists and EAS filters need without reading the item again.

    Times are timezone-aware UTC; a DATE value (an all-day event) is midnight UTC of that
    day with `all_day` set; floating times (no zone) are read as UTC.
    """

    kind: ItemKind
    uid: str | None = None
    summary: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    all_day: bool = False
    due: datetime | None = None
    completed: datetime | None = None
    location: str | None = None
    recurring: bool = False
    email: str | None = None


@dataclass(frozen=True, slots=True)
class PimItem:
    """An item as `Folder.read_item` returns it: its kind, subject and payload text."""

    kind: ItemKind
    subject: str
    data: str
    fields: PimFields | None


@dataclass(frozen=True, slots=True)
class _Line:
    name: str
    params: dict[str, str]
    value: str


def _unfold(text: str) -> list[str]:
    """RFC 5545 3.1 / RFC 6350 3.2: a line starting with a space or tab continues the last."""
    lines: list[str] = []
    for raw in text.splitlines():
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw:
            lines.append(raw)
        if len(lines) > MAX_ITEM_LINES:
            break
    return lines


def _content_line(line: str) -> _Line | None:
    """RFC 5545 3.1: name *(";" param) ":" value, with quoted parameter values."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == ":" and not quoted:
            head, value = line[:i], line[i + 1 :]
            break
    else:
        return None
    parts = head.split(";")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, _, val = part.partition("=")
        params[key.strip().upper()] = val.strip().strip('"')
    name = parts[0].strip().upper()
    if "." in name:  # vCard group prefix: item1.EMAIL
        name = name.rsplit(".", 1)[1]
    return _Line(name, params, value)


def _unescape(value: str) -> str:
    # RFC 5545 3.3.11 TEXT escapes
    return re.sub(
        r"\\([\\;,nN])", lambda m: "\n" if m.group(1) in "nN" else m.group(1), value
    ).strip()


_DATE_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})?(Z)?)?$")
_DURATION = re.compile(r"([+-])?P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def _parse_time(line: _Line) -> tuple[datetime | None, bool]:
    """(UTC datetime, is a DATE) for a DTSTART/DTEND/DUE/COMPLETED line; None if invalid."""
    match = _DATE_TIME.match(line.value.strip())
    if not match:
        return None, False
    year, month, day, hour, minute, second, zulu = match.groups()
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day), tzinfo=UTC), True
        naive = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return None, False
    if zulu:
        return naive.replace(tzinfo=UTC), False
    tzid = line.params.get("TZID")
    if tzid:
        try:
            return naive.replace(tzinfo=ZoneInfo(tzid.strip("/"))).astimezone(UTC), False
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass  # an unknown zone (Outlook's "W. Europe Standard Time"): read as UTC
    return naive.replace(tzinfo=UTC), False


def _parse_duration(value: str) -> timedelta | None:
    match = _DURATION.match(value.strip())
    if not match:
        return None
    sign, weeks, days, hours, minutes, seconds = match.groups()
    delta = timedelta(
        weeks=int(weeks or 0),
        days=int(days or 0),
        hours=int(hours or 0),
        minutes=int(minutes or 0),
        seconds=int(seconds or 0),
    )
    return -delta if sign == "-" else delta


def _component(lines: list[str], name: str) -> list[_Line] | None:
    """The content lines of the first BEGIN:<name> ... END:<name> block (not nested ones)."""
    inside = False
    depth = 0
    out: list[_Line] = []
    for raw in lines:
        line = _content_line(raw)
        if line is None:
            continue
        if line.name == "BEGIN":
            if inside:
                depth += 1
            elif line.value.strip().upper() == name:
                inside = True
            continue
        if line.name == "END":
            if inside and depth == 0 and line.value.strip().upper() == name:
                return out
            if inside and depth:
                depth -= 1
            continue
        if inside and depth == 0:
            out.append(line)
    return out if inside else None


def _first(lines: list[_Line], name: str) -> _Line | None:
    for line in lines:
        if line.name == name:
            return line
    return None


def parse_calendar(text: str, kind: ItemKind) -> PimFields:
    """Fields of the first VEVENT (EVENT) or VTODO (TASK), or InvalidItem."""
    lines = _unfold(text[:MAX_ITEM_BYTES])
    component = _component(lines, "VEVENT" if kind is ItemKind.EVENT else "VTODO")
    if component is None:
        wanted = "VEVENT" if kind is ItemKind.EVENT else "VTODO"
        raise InvalidItem(f"no {wanted} component in the iCalendar data")

    def text_of(name: str) -> str | None:
        line = _first(component, name)
        return _unescape(line.value) if line is not None else None

    def time_of(name: str) -> tuple[datetime | None, bool]:
        line = _first(component, name)
        return _parse_time(line) if line is not None else (None, False)

    start, all_day = time_of("DTSTART")
    end, _ = time_of("DTEND")
    if end is None and start is not None:
        duration_line = _first(component, "DURATION")
        duration = _parse_duration(duration_line.value) if duration_line else None
        if duration is not None:
            end = start + duration
        elif all_day:
            end = start + timedelta(days=1)  # RFC 5545 3.6.1: a DATE start lasts one day
    due, _ = time_of("DUE")
    completed, _ = time_of("COMPLETED")
    return PimFields(
        kind=kind,
        uid=text_of("UID"),
        summary=text_of("SUMMARY"),
        start=start,
        end=end,
        all_day=all_day,
        due=due,
        completed=completed,
        location=text_of("LOCATION"),
        recurring=_first(component, "RRULE") is not None,
    )


def parse_vcard(text: str) -> PimFields:
    lines = _unfold(text[:MAX_ITEM_BYTES])
    card = _component(lines, "VCARD")
    if card is None:
        raise InvalidItem("no VCARD in the contact data")
    name_line = _first(card, "FN")
    name = _unescape(name_line.value) if name_line else None
    if not name:
        n_line = _first(card, "N")
        if n_line is not None:  # RFC 6350 6.2.2: family;given;additional;prefix;suffix
            fields = [_unescape(f) for f in n_line.value.split(";")]
            name = " ".join(f for f in (fields[1:2] + fields[:1]) if f) or None
    email = _first(card, "EMAIL")
    uid = _first(card, "UID")
    return PimFields(
        kind=ItemKind.CONTACT,
        uid=_unescape(uid.value) if uid else None,
        summary=name,
        email=_unescape(email.value) if email else None,
    )


def item_fields(kind: ItemKind, payload: str, subject: str | None) -> PimFields:
    if kind in (ItemKind.EVENT, ItemKind.TASK):
        return parse_calendar(payload, kind)
    if kind is ItemKind.CONTACT:
        return parse_vcard(payload)
    return PimFields(kind=ItemKind.NOTE, summary=subject)


_CONTENT_TYPE = {
    ItemKind.EVENT: "text/calendar; charset=utf-8; component=VEVENT",
    ItemKind.TASK: "text/calendar; charset=utf-8; component=VTODO",
    ItemKind.CONTACT: "text/vcard; charset=utf-8",
    ItemKind.NOTE: "text/plain; charset=utf-8",
}


def build_item_message(
    kind: ItemKind, payload: str | bytes, subject: str | None, now: float
) -> tuple[bytes, PimFields]:
    """The message file for an item, and its fields; InvalidItem if the payload is wrong."""
    if isinstance(payload, bytes):
        if len(payload) > MAX_ITEM_BYTES:
            raise InvalidItem(f"items are at most {MAX_ITEM_BYTES} bytes")
        payload = payload.decode("utf-8", errors="replace")
    if len(payload) > MAX_ITEM_BYTES:
        raise InvalidItem(f"items are at most {MAX_ITEM_BYTES} bytes")
    fields = item_fields(kind, payload, subject)
    title = subject if subject is not None else (fields.summary or "")
    title = " ".join(title.split())  # no line breaks in a header
    encoded_subject = Header(title, "utf-8").encode() if not title.isascii() else title
    body = "\r\n".join(payload.splitlines())
    head = (
        f"Date: {format_datetime(datetime.fromtimestamp(now, UTC))}\r\n"
        f"Subject: {encoded_subject}\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: {_CONTENT_TYPE[kind]}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        f"{ITEM_HEADER}: {kind.value}\r\n"
        "\r\n"
    )
    return head.encode() + body.encode("utf-8") + b"\r\n", fields


def kind_from_header(value: str | None) -> ItemKind | None:
    if value is None:
        return None
    try:
        return ItemKind(value.strip().lower())
    except ValueError:
        return None
