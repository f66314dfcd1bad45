"""Out-of-office auto-replies (RFC 3834) through a real hub and store: who gets one and
who never does, once per sender per period, the scheduled window, the three audiences,
external replies to the queue with the null sender, and the reply's own headers."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from email.message import Message
from pathlib import Path

import pytest

from store import Store
from store.model import FolderKind
from transport.autoreply import (
    MAX_REPLY_MESSAGE,
    MAX_SUBJECT,
    AutoReplier,
    MemoryOofStore,
    OofReply,
    OofSettings,
    OofState,
    StoreContacts,
    build_reply,
    read_headers,
    skip_reason,
)
from transport.hub import DomainKind, Hub, LocalRecipient, MessageInfo, RoutedRecipient

ALICE = "alice@example.org"
BOB = "bob@example.org"
STRANGER = "someone@elsewhere.test"
FRIEND = "friend@elsewhere.test"
NOW = 1_700_000_000.0


@dataclass
class Directory:
    """`HubDirectory` from data: example.org is ours; alice and bob have mailboxes."""

    def domain_kind(self, domain: str) -> DomainKind | None:
        return DomainKind.AUTHORITATIVE if domain == "example.org" else None

    def local_recipient(self, address: str) -> LocalRecipient | None:
        if address.lower() in (ALICE, "a.liddell@example.org"):
            return LocalRecipient("mbx-alice", ALICE)
        if address.lower() == BOB:
            return LocalRecipient("mbx-bob", BOB)
        return None

    def addresses_of(self, owner: str) -> tuple[str, ...]:
        return (ALICE, "a.liddell@example.org") if owner == ALICE else (owner,)


@dataclass
class Queued:
    sender: str | None
    recipients: list[str]
    message: bytes


@dataclass
class FakeQueue:
    """`RemoteQueue` that keeps what it is given."""

    entries: list[Queued] = field(default_factory=list)

    def can_route(self, domain: str) -> bool:
        return True

    def enqueue(self, message: bytes | Path, *, sender: str | None,
                recipients: Sequence[RoutedRecipient], info: MessageInfo,
                local: bool = False) -> str:  # fmt: skip
        data = message if isinstance(message, bytes) else message.read_bytes()
        self.entries.append(Queued(sender, [r.address for r in recipients], data))
        return f"Q{len(self.entries)}"


@dataclass
class Known:
    addresses: set[str]

    def is_known(self, mailbox_id: str, address: str) -> bool:
        return address.lower() in self.addresses


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    store: Store
    hub: Hub
    queue: FakeQueue
    oof: MemoryOofStore
    clock: Clock
    replier: AutoReplier

    def send(self, sender: str | None, to: str, *, subject: str = "hello", extra: str = "",
             header_to: str | None = None) -> None:  # fmt: skip
        message = (
            f"From: <{sender or 'mailer-daemon@elsewhere.test'}>\r\n"
            f"To: <{header_to or to}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}.{len(self.queue.entries)}@elsewhere.test>\r\n"
            f"References: <earlier@elsewhere.test>\r\n{extra}\r\nHi.\r\n"
        ).encode()
        route = self.hub.route(to, authenticated=False)
        report = self.hub.deliver(message, prefix=b"", sender=sender,
                                  recipients=[RoutedRecipient(to, route)])  # fmt: skip
        assert report.delivered == [to]

    def inbox(self, mailbox_id: str) -> list[Message]:
        folder = self.store.open_mailbox(mailbox_id).inbox
        return [
            email.message_from_bytes(folder.read_message(uid), policy=email.policy.default)
            for uid in folder.snapshot().uids
        ]

    def replies_to(self, mailbox_id: str) -> list[str]:
        return [str(m["Subject"]) for m in self.inbox(mailbox_id)
                if str(m["Subject"]).startswith("Automatic reply")]  # fmt: skip


AWAY = OofSettings(
    state=OofState.ENABLED,
    internal=OofReply(True, "Away (internal)."),
    known_external=OofReply(True, "Away (known)."),
    unknown_external=OofReply(True, "<p>Away, <b>stranger</b>.</p>", html=True),
)


@pytest.fixture
def world(tmp_path: Path) -> World:
    store = Store(tmp_path / "mailboxes", hostname="mail.example.org", fsync=False)
    queue = FakeQueue()
    hub = Hub(Directory(), store, spool_dir=tmp_path / "spool", queue=queue)
    oof = MemoryOofStore()
    clock = Clock()
    replier = AutoReplier(oof, hub, hostname="mail.example.org", known=Known({FRIEND}),
                          clock=clock)  # fmt: skip
    hub.after_local = replier
    return World(store, hub, queue, oof, clock, replier)


def test_an_internal_sender_is_answered_once_per_period(world: World) -> None:
    world.oof.set_oof_settings("mbx-alice", AWAY)
    world.send(BOB, ALICE, subject="first")
    world.send(BOB, ALICE, subject="second")
    (reply,) = [m for m in world.inbox("mbx-bob") if m["Subject"] == "Automatic reply: first"]
    assert world.replies_to("mbx-bob") == ["Automatic reply: first"]
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<first.0@elsewhere.test>"
    assert reply["References"] == "<earlier@elsewhere.test> <first.0@elsewhere.test>"
    assert reply["From"] == ALICE and reply["To"] == BOB
    assert reply["Return-Path"] == "<>"  # RFC 3834 3.3: the null sender
    assert reply.get_content().strip() == "Away (internal)."
    # Saving the settings starts a new period: Bob is answered again, once.
    world.oof.set_oof_settings("mbx-alice", AWAY)
    world.send(BOB, ALICE, subject="third")
    world.send(BOB, ALICE, subject="fourth")
    assert world.replies_to("mbx-bob") == ["Automatic reply: first", "Automatic reply: third"]
    assert world.replier.counters.sent == 2 and world.replier.counters.skipped == 2


@pytest.mark.parametrize(
    ("sender", "extra", "header_to"),
    [
        (None, "", None),  # a bounce
        ("mailer-daemon@elsewhere.test", "", None),
        ("owner-staff@elsewhere.test", "", None),
        ("staff-request@elsewhere.test", "", None),
        (STRANGER, "Auto-Submitted: auto-generated\r\n", None),
        (STRANGER, "Auto-Submitted: auto-replied\r\n", None),
        (STRANGER, "List-Id: <staff.elsewhere.test>\r\n", None),
        (STRANGER, "List-Unsubscribe: <mailto:leave@elsewhere.test>\r\n", None),
        (STRANGER, "Precedence: bulk\r\n", None),
        (STRANGER, "Precedence: junk\r\n", None),
        (STRANGER, "Precedence: list\r\n", None),
        (STRANGER, "X-Auto-Response-Suppress: DR, OOF\r\n", None),
        (STRANGER, "", "everyone@elsewhere.test"),  # alice only on Bcc
        (ALICE, "", None),  # her own mail
    ],
)
def test_never_answered(world: World, sender: str | None, extra: str,
                        header_to: str | None) -> None:  # fmt: skip
    world.oof.set_oof_settings("mbx-alice", AWAY)
    world.send(sender, ALICE, extra=extra, header_to=header_to)
    assert world.queue.entries == [] and world.replies_to("mbx-alice") == []
    assert world.replier.counters.sent == 0


def test_auto_submitted_no_is_a_person(world: World) -> None:
    world.oof.set_oof_settings("mbx-alice", AWAY)
    world.send(STRANGER, ALICE, extra="Auto-Submitted: no\r\n")
    assert len(world.queue.entries) == 1


def test_external_senders_by_audience_through_the_queue(world: World) -> None:
    world.oof.set_oof_settings("mbx-alice", AWAY)
    world.send(STRANGER, ALICE, subject="from a stranger")
    world.send(FRIEND, ALICE, subject="from a friend")
    stranger, friend = world.queue.entries
    assert stranger.sender is None and stranger.recipients == [STRANGER]
    parsed = email.message_from_bytes(stranger.message, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/alternative"
    plain = parsed.get_body(("plain",))
    assert plain is not None and plain.get_content().strip() == "Away, stranger."
    known = email.message_from_bytes(friend.message, policy=email.policy.default)
    assert known.get_content().strip() == "Away (known)."
    # Known senders only: strangers get nothing.
    only_known = replace(AWAY, unknown_external=OofReply(False, "x"))
    world.oof.set_oof_settings("mbx-alice", only_known)
    world.send("other@elsewhere.test", ALICE)
    world.send(FRIEND, ALICE)
    assert [e.recipients for e in world.queue.entries[2:]] == [[FRIEND]]


def test_the_scheduled_window(world: World) -> None:
    world.oof.set_oof_settings(
        "mbx-alice", replace(AWAY, state=OofState.SCHEDULED, start=NOW + 3600, end=NOW + 7200)
    )
    world.send(BOB, ALICE, subject="before")
    world.clock.now = NOW + 3600
    world.send(BOB, ALICE, subject="during")
    world.clock.now = NOW + 7200
    world.oof.set_oof_settings(  # a new period, but the window is over
        "mbx-alice", replace(AWAY, state=OofState.SCHEDULED, start=NOW + 3600, end=NOW + 7200)
    )
    world.send(BOB, ALICE, subject="after")
    assert world.replies_to("mbx-bob") == ["Automatic reply: during"]


def test_disabled_costs_nothing_and_a_failing_store_costs_no_delivery(world: World) -> None:
    world.send(BOB, ALICE)
    assert world.replies_to("mbx-bob") == []

    class Broken(MemoryOofStore):
        def oof_settings(self, mailbox_id: str) -> OofSettings:
            raise OSError("disk on fire")

    world.hub.after_local = AutoReplier(Broken(), world.hub, hostname="mail.example.org")
    world.send(BOB, ALICE, subject="still delivered")
    assert "still delivered" in [str(m["Subject"]) for m in world.inbox("mbx-alice")]


def test_reply_headers_cannot_be_injected() -> None:
    original = read_headers(
        b"From: x@elsewhere.test\r\nTo: alice@example.org\r\n"
        b"Subject: =?utf-8?q?hi=0D=0ABcc:_victim@example.org?=\r\n"
        b"Message-ID: <ok@elsewhere.test> <second@x>\r\n\r\nbody\r\n"
    )
    data = build_reply(original, OofReply(True, "Away."), from_address=ALICE,
                       to_address="x@elsewhere.test", hostname="mail.example.org",
                       now=NOW)  # fmt: skip
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert "Bcc" not in parsed  # the CR LF became a space inside the subject
    assert parsed["Subject"] == "Automatic reply: hi Bcc: victim@example.org"
    assert parsed["In-Reply-To"] == "<ok@elsewhere.test>"
    again = email.message_from_bytes(parsed.as_bytes(policy=email.policy.SMTP),
                                     policy=email.policy.default)  # fmt: skip
    assert len(again.keys()) == len(parsed.keys())  # reliability-security item 49


def test_long_subjects_are_cut() -> None:
    original = read_headers(b"Subject: " + b"s" * (MAX_SUBJECT + 50) + b"\r\n\r\n")
    data = build_reply(original, OofReply(True, "Away."), from_address=ALICE,
                       to_address=BOB, hostname="mail.example.org", now=NOW)  # fmt: skip
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert str(parsed["Subject"]) == "Automatic reply: " + "s" * MAX_SUBJECT


def test_skip_reason_wants_the_user_in_to_or_cc() -> None:
    headers = read_headers(b"To: a.liddell@example.org\r\nCc: z@x.test\r\n\r\n")
    addresses = (ALICE, "a.liddell@example.org")
    assert skip_reason(headers, envelope_sender=STRANGER, recipient_addresses=addresses) is None
    cc = read_headers(b"To: z@x.test\r\nCc: Alice <ALICE@example.org>\r\n\r\n")
    assert skip_reason(cc, envelope_sender=STRANGER, recipient_addresses=addresses) is None


def test_settings_limits() -> None:
    long = OofSettings(internal=OofReply(True, "x" * (MAX_REPLY_MESSAGE + 1)))
    assert long.errors() and not replace(long, internal=OofReply(True, "x")).errors()
    scheduled = OofSettings(state=OofState.SCHEDULED, start=NOW, end=NOW)
    assert scheduled.errors() == ["the end must be after the start"]
    assert OofSettings(state=OofState.SCHEDULED).errors()
    assert OofSettings(state=OofState.SCHEDULED, start=NOW).active(NOW + 1)  # open end
    assert not OofSettings(state=OofState.SCHEDULED, start=NOW).active(NOW - 1)


def test_known_senders_from_the_contacts_folder(tmp_path: Path) -> None:
    store = Store(tmp_path / "mailboxes", hostname="mail.example.org", fsync=False)
    mailbox = store.open_mailbox("mbx-alice")
    contacts = StoreContacts(store)
    assert contacts.is_known("mbx-alice", FRIEND) is False  # no such folder content yet
    folder = mailbox.folder_of_kind(FolderKind.CONTACTS)
    folder.add_item("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Friend\r\n"
                    "EMAIL:Friend@Elsewhere.test\r\nEND:VCARD\r\n")  # fmt: skip
    assert contacts.is_known("mbx-alice", FRIEND) is True
    assert contacts.is_known("mbx-alice", STRANGER) is False
    assert contacts.is_known("no-such-mailbox", FRIEND) is False
