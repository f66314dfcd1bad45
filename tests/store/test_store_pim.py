"""PIM items: iCalendar events and tasks, vCard contacts, notes; fields for EAS filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from store import FolderKind, InvalidItem, ItemKind, Mailbox
from store.limits import MAX_ITEM_BYTES, MAX_ITEM_LINES
from store.pim import parse_calendar

EVENT = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
BEGIN:VTIMEZONE
TZID:Europe/Berlin
BEGIN:STANDARD
DTSTART:19701025T030000
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
UID:event-1@example.com
SUMMARY:Team meeting\\, weekly
DTSTART;TZID=Europe/Berlin:20240115T100000
DTEND;TZID=Europe/Berlin:20240115T110000
LOCATION:Room 1
RRULE:FREQ=WEEKLY
DESCRIPTION:a long
 folded line
BEGIN:VALARM
TRIGGER:-PT15M
END:VALARM
END:VEVENT
END:VCALENDAR
"""

TASK = """BEGIN:VCALENDAR
BEGIN:VTODO
UID:task-1
SUMMARY:Pay bills
DUE;VALUE=DATE:20240201
END:VTODO
END:VCALENDAR
"""

CARD = """BEGIN:VCARD
VERSION:4.0
N:Doe;Jane;;;
item1.EMAIL;TYPE=work:jane@example.com
UID:urn:uuid:1
END:VCARD
"""


def test_event(mailbox: Mailbox) -> None:
    calendar = mailbox.folder("Calendar")
    result = calendar.add_item(EVENT)
    meta = calendar.metadata([result.uid])[result.uid]
    assert meta.message_class == "IPM.Appointment" and meta.pim is not None
    pim = meta.pim
    assert pim.kind is ItemKind.EVENT and pim.uid == "event-1@example.com"
    assert pim.summary == "Team meeting, weekly" and pim.location == "Room 1"
    assert pim.start == datetime(2024, 1, 15, 9, 0, tzinfo=UTC)
    assert pim.end == datetime(2024, 1, 15, 10, 0, tzinfo=UTC)
    assert pim.recurring and not pim.all_day
    assert meta.subject == "Team meeting, weekly"
    item = calendar.read_item(result.uid)
    assert item.kind is ItemKind.EVENT and "BEGIN:VEVENT" in item.data
    assert item.data.replace("\r\n", "\n").strip() == EVENT.strip()


def test_task_contact_note(mailbox: Mailbox) -> None:
    tasks = mailbox.folder_of_kind(FolderKind.TASKS)
    uid = tasks.add_item(TASK).uid
    pim = tasks.metadata([uid])[uid].pim
    assert pim is not None and pim.due == datetime(2024, 2, 1, tzinfo=UTC)
    contacts = mailbox.folder("Contacts")
    cuid = contacts.add_item(CARD).uid
    card = contacts.metadata([cuid])[cuid]
    assert card.pim is not None and card.pim.summary == "Jane Doe"
    assert card.pim.email == "jane@example.com" and card.message_class == "IPM.Contact"
    notes = mailbox.folder("Notes")
    nuid = notes.add_item("buy milk\nand bread", subject="Shopping – ünïcode").uid
    note = notes.read_item(nuid)
    assert note.subject == "Shopping – ünïcode" and note.data.startswith("buy milk")
    assert notes.metadata([nuid])[nuid].message_class == "IPM.StickyNote"


def test_replace_item(mailbox: Mailbox) -> None:
    calendar = mailbox.folder("Calendar")
    first = calendar.add_item(EVENT)
    second = calendar.replace_item(first.uid, EVENT.replace("Team meeting", "Retro"))
    assert second.uid > first.uid
    assert list(calendar.snapshot().uids) == [second.uid]
    assert calendar.read_item(second.uid).subject.startswith("Retro")


def test_invalid_items(mailbox: Mailbox) -> None:
    with pytest.raises(InvalidItem):
        mailbox.folder("Calendar").add_item(TASK)  # a VTODO is not an event
    with pytest.raises(InvalidItem):
        mailbox.folder("Contacts").add_item("not a card")
    with pytest.raises(InvalidItem):
        mailbox.inbox.add_item(EVENT)
    with pytest.raises(InvalidItem):
        mailbox.folder("Notes").add_item(b"x" * (MAX_ITEM_BYTES + 1), subject="big")
    mailbox.folder("Notes").add_item(b"x" * 1000, subject="fits")


def test_line_limit_and_tolerance() -> None:
    many = (
        "BEGIN:VCALENDAR\n" + "X-FILLER:1\n" * (MAX_ITEM_LINES + 10) + "BEGIN:VEVENT\nEND:VEVENT\n"
    )
    with pytest.raises(InvalidItem):
        parse_calendar(many, ItemKind.EVENT)  # the event lies beyond the lines we read
    odd = "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:garbage\nDTEND;TZID=Nowhere/Zone:20240101T100000\nEND:VEVENT\n"
    fields = parse_calendar(odd, ItemKind.EVENT)
    assert fields.start is None and fields.end == datetime(2024, 1, 1, 10, tzinfo=UTC)
    allday = "BEGIN:VEVENT\nDTSTART;VALUE=DATE:20240301\nEND:VEVENT\n"
    fields = parse_calendar(allday, ItemKind.EVENT)
    assert fields.all_day and fields.end == datetime(2024, 3, 2, tzinfo=UTC)
    duration = "BEGIN:VEVENT\nDTSTART:20240301T100000Z\nDURATION:PT1H30M\nEND:VEVENT\n"
    assert parse_calendar(duration, ItemKind.EVENT).end == datetime(2024, 3, 1, 11, 30, tzinfo=UTC)
