"""Out-of-office auto-replies (RFC 3834), the way Exchange's OOF assistant answers.

The user's settings (`OofSettings`) say whether auto-replies are off, on, or on between
a start and an end, and hold three messages, as Exchange has them: for senders inside
the organisation, for external senders the user knows (in their Contacts), and for
everyone else. The hub calls `AutoReplier.after_local_delivery` once a message is in
the recipients' mailboxes; a reply then goes out:
- never to a null envelope sender, MAILER-DAEMON, owner-* or *-request (RFC 3834 2);
- never to auto-submitted mail (`Auto-Submitted` other than `no`, RFC 3834 5), mailing
  lists (any `List-*` field, RFC 2369 / RFC 2919), bulk mail (`Precedence: bulk`,
  `list` or `junk`), or when the sender asked for none (`X-Auto-Response-Suppress:
  OOF` or `All`, MS-OXCMAIL 2.2.3.2.20);
- only when one of the user's addresses is in To or Cc (RFC 3834 2: a personal
  responder does not answer mail sent to a list it is on);
- once per sender per out-of-office period (RFC 3834 2: "SHOULD NOT issue the same
  response to the same sender more than once within a period of several days"); a new
  period starts whenever the settings are saved, as Exchange clears its OOF history;
- as `Auto-Submitted: auto-replied`, with `In-Reply-To` and `References` (RFC 3834 3.1),
  from the null envelope sender (RFC 3834 3.3), so nothing bounces back at it;
- local senders get it in their mailbox at once; external ones through the outbound
  queue, like any other mail leaving the server.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import html
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.policy import SMTP
from email.policy import default as DEFAULT_POLICY
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from store import Store
from store.errors import StoreError
from store.model import FolderKind

from .hub import Hub, MessageInfo, RoutedRecipient

log = logging.getLogger("mailhost.autoreply")

# A reply is a short note; Exchange caps the OOF message (128 KB in EWS); we keep 64 KiB.
MAX_REPLY_MESSAGE: Final = 64 * 1024
MAX_HEADER_READ: Final = 256 * 1024  # headers of a delivered message read to decide
MAX_SUBJECT: Final = 255  # of the original shown in the reply's subject
REPLY_SUBJECT_PREFIX: Final = "Automatic reply: "  # as Exchange words it (RFC 3834 3.1.5)
MAX_CONTACT_ITEMS: Final = 10_000  # contacts read to find a known sender
# RFC 3834 2: local parts that are never answered (and postmaster, a mail system too).
_NEVER_ANSWERED: Final = re.compile(r"^(mailer-daemon|owner-.*|.*-request|postmaster)$", re.I)
_BULK_PRECEDENCE: Final = frozenset({"bulk", "list", "junk"})
_MESSAGE_ID: Final = re.compile(r"<[^<>\s]{1,900}>")
_TAG: Final = re.compile(r"<[^>]*>")


class OofState(StrEnum):
    """MS-ASCMD 2.2.3.120 OofState: 0 disabled, 1 enabled, 2 between start and end."""

    DISABLED = "disabled"
    ENABLED = "enabled"
    SCHEDULED = "scheduled"


class Audience(StrEnum):
    INTERNAL = "internal"  # a sender in one of our accepted domains
    KNOWN_EXTERNAL = "known-external"  # in the user's Contacts
    UNKNOWN_EXTERNAL = "unknown-external"


@dataclass(frozen=True, slots=True)
class OofReply:
    """One of the three messages (MS-ASCMD 2.2.3.119 OofMessage)."""

    enabled: bool = False
    text: str = ""
    html: bool = False  # the text is HTML (BodyType HTML)

    def as_text(self) -> str:
        return html_to_plain(self.text) if self.html else self.text

    def as_html(self) -> str:
        if self.html:
            return self.text
        return "<html><body><pre>" + html.escape(self.text) + "</pre></body></html>"


@dataclass(frozen=True, slots=True)
class OofSettings:
    """A user's out-of-office settings. Times are seconds since the epoch (UTC)."""

    state: OofState = OofState.DISABLED
    start: float | None = None
    end: float | None = None
    internal: OofReply = field(default_factory=OofReply)
    known_external: OofReply = field(default_factory=OofReply)
    unknown_external: OofReply = field(default_factory=OofReply)
    period: int = 0  # a new one each time the settings are saved (the store counts)

    def active(self, now: float) -> bool:
        if self.state is OofState.ENABLED:
            return True
        if self.state is OofState.SCHEDULED:
            return (self.start is None or self.start <= now) and (
                self.end is None or now < self.end
            )
        return False

    def reply_for(self, audience: Audience) -> OofReply:
        return {
            Audience.INTERNAL: self.internal,
            Audience.KNOWN_EXTERNAL: self.known_external,
            Audience.UNKNOWN_EXTERNAL: self.unknown_external,
        }[audience]

    def errors(self) -> list[str]:
        errors = []
        if self.state is OofState.SCHEDULED:
            if self.start is None or self.end is None:
                errors.append("a scheduled out-of-office needs a start and an end")
            elif self.end <= self.start:
                errors.append("the end must be after the start")
        for name in ("internal", "known_external", "unknown_external"):
            if len(getattr(self, name).text) > MAX_REPLY_MESSAGE:
                errors.append(f"{name} message: longer than {MAX_REPLY_MESSAGE} characters")
        return errors


class OofStore(Protocol):
    """Where settings and the reply history live. Blocking and thread-safe."""

    def oof_settings(self, mailbox_id: str) -> OofSettings: ...

    def set_oof_settings(self, mailbox_id: str, settings: OofSettings) -> OofSettings:
        """Save the settings as a new period (its history empty); returns them as saved."""
        ...

    def claim_reply(self, mailbox_id: str, sender: str, period: int, now: float) -> bool:
        """True, once, for a sender in a period: record that it is being answered."""
        ...


class MemoryOofStore:
    """`OofStore` over dicts, for tests and tools."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._settings: dict[str, OofSettings] = {}
        self._replied: set[tuple[str, str, int]] = set()

    def oof_settings(self, mailbox_id: str) -> OofSettings:
        with self._lock:
            return self._settings.get(mailbox_id, OofSettings())

    def set_oof_settings(self, mailbox_id: str, settings: OofSettings) -> OofSettings:
        with self._lock:
            previous = self._settings.get(mailbox_id, OofSettings())
            saved = replace(settings, period=previous.period + 1)
            self._settings[mailbox_id] = saved
            return saved

    def claim_reply(self, mailbox_id: str, sender: str, period: int, now: float) -> bool:
        with self._lock:
            key = (mailbox_id, sender.lower(), period)
            if key in self._replied:
                return False
            self._replied.add(key)
            return True


class KnownSenders(Protocol):
    def is_known(self, mailbox_id: str, address: str) -> bool:
        """Whether `address` is one of the user's contacts. Blocking."""
        ...


class StoreContacts:
    """`KnownSenders` from the default Contacts folder of the mailbox (vCards)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def is_known(self, mailbox_id: str, address: str) -> bool:
        needle = address.lower().encode("utf-8")
        try:
            folder = self._store.open_mailbox(mailbox_id, create=False).folder_of_kind(
                FolderKind.CONTACTS
            )
            uids = list(folder.snapshot().uids)[:MAX_CONTACT_ITEMS]
            for uid in uids:
                if needle in folder.read_message(uid).lower():
                    return True
        except (StoreError, OSError):
            return False
        return False


# --- deciding ------------------------------------------------------------------------------


def html_to_plain(text: str) -> str:
    """Enough HTML-to-text for a reply's plain part: tags out, entities decoded."""
    text = re.sub(r"(?i)<br\s*/?>|</p>|</div>", "\n", text)
    return html.unescape(_TAG.sub("", text)).strip()


def read_headers(message: bytes | Path) -> Message:
    """The header of a message (up to MAX_HEADER_READ bytes of it)."""
    if isinstance(message, Path):
        with message.open("rb") as f:
            data = f.read(MAX_HEADER_READ)
    else:
        data = message[:MAX_HEADER_READ]
    return BytesHeaderParser(policy=DEFAULT_POLICY).parsebytes(data)


def _header(headers: Message, name: str) -> str:
    try:
        value = headers.get(name)
    except (ValueError, IndexError, TypeError):  # a defective header is treated as absent
        return ""
    return " ".join(str(value or "").split())


def _addresses_in(headers: Message, *names: str) -> set[str]:
    found: set[str] = set()
    for name in names:
        try:
            values = headers.get_all(name) or []
        except (ValueError, IndexError, TypeError):
            continue
        for value in values:
            for address in getattr(value, "addresses", ()):
                if address.addr_spec:
                    found.add(address.addr_spec.lower())
    return found


def skip_reason(
    headers: Message, *, envelope_sender: str | None, recipient_addresses: Sequence[str]
) -> str | None:
    """Why this message gets no auto-reply (None: it may get one)."""
    if not envelope_sender:
        return "null sender"  # RFC 3834 2: bounces and other replies
    local_part = envelope_sender.rpartition("@")[0]
    if _NEVER_ANSWERED.match(local_part):
        return "sender is a mail system or list address"  # RFC 3834 2
    if envelope_sender.lower() in {a.lower() for a in recipient_addresses}:
        return "sent by the user"
    auto = _header(headers, "Auto-Submitted").lower()
    if auto and auto.split(";")[0].strip() != "no":
        return "auto-submitted"  # RFC 3834 5.2
    for name in headers:
        if name.lower().startswith("list-"):
            return "mailing list"  # RFC 2369 / RFC 2919
    if _header(headers, "Precedence").lower() in _BULK_PRECEDENCE:
        return "bulk mail"
    suppress = {v.strip().lower() for v in _header(headers, "X-Auto-Response-Suppress").split(",")}
    if suppress & {"oof", "all"}:
        return "the sender suppressed auto-replies"  # MS-OXCMAIL 2.2.3.2.20
    shown = _addresses_in(headers, "To", "Cc", "Resent-To", "Resent-Cc")
    if not shown & {a.lower() for a in recipient_addresses}:
        return "not addressed to the user in To or Cc"  # RFC 3834 2
    return None


def build_reply(
    original: Message,
    reply: OofReply,
    *,
    from_address: str,
    to_address: str,
    hostname: str,
    now: float,
) -> bytes:
    """The auto-reply message (RFC 3834 3.1)."""
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = to_address
    subject = _header(original, "Subject")[:MAX_SUBJECT]
    message["Subject"] = REPLY_SUBJECT_PREFIX + subject if subject else "Automatic reply"
    message["Date"] = email.utils.formatdate(now, usegmt=True)
    message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    message_id = _MESSAGE_ID.search(_header(original, "Message-ID"))
    if message_id:
        message["In-Reply-To"] = message_id.group(0)  # RFC 3834 3.1.3
        references = _MESSAGE_ID.findall(_header(original, "References"))[-20:]
        message["References"] = " ".join([*references, message_id.group(0)])
    message["Auto-Submitted"] = "auto-replied"  # RFC 3834 3.1.7, 5.2
    message["X-Auto-Response-Suppress"] = "All"  # MS-OXCMAIL: no replies to a reply
    message.set_content(reply.as_text())
    if reply.html:
        message.add_alternative(reply.as_html(), subtype="html")
    return message.as_bytes(policy=SMTP)


# --- the hub hook --------------------------------------------------------------------------


@dataclass(slots=True)
class ReplyCounters:
    sent: int = 0
    skipped: int = 0


class AutoReplier:
    """The hub's after-delivery hook that answers for users who are out of office."""

    def __init__(
        self,
        store: OofStore,
        hub: Hub,
        *,
        hostname: str,
        known: KnownSenders | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._hub = hub
        self._hostname = hostname
        self._known = known
        self._clock = clock
        self.counters = ReplyCounters()

    def after_local_delivery(
        self, message: bytes | Path, *, sender: str | None, recipients: Sequence[RoutedRecipient]
    ) -> None:
        """Blocking (called by `Hub.deliver` in its worker thread); never raises."""
        if not sender:
            return  # the cheapest refusal first: bounces and our own replies
        now = self._clock()
        headers: Message | None = None
        seen: set[str] = set()
        for recipient in recipients:
            local = recipient.route.local
            if local is None or local.mailbox_id in seen:
                continue
            seen.add(local.mailbox_id)
            try:
                settings = self._store.oof_settings(local.mailbox_id)
                if not settings.active(now):
                    continue
                if headers is None:
                    headers = read_headers(message)
                self._answer(headers, sender, local.mailbox_id, local.owner, settings, now)
            except Exception:
                log.exception("auto-reply for %s to %s failed", local.owner, sender)

    def _audience(self, mailbox_id: str, sender: str) -> Audience:
        domain = sender.rpartition("@")[2].lower()
        if self._hub.directory.domain_kind(domain) is not None:
            return Audience.INTERNAL
        if self._known is not None and self._known.is_known(mailbox_id, sender):
            return Audience.KNOWN_EXTERNAL
        return Audience.UNKNOWN_EXTERNAL

    def _answer(
        self,
        headers: Message,
        sender: str,
        mailbox_id: str,
        owner: str,
        settings: OofSettings,
        now: float,
    ) -> None:
        addresses = self._hub.directory.addresses_of(owner) or (owner,)
        reason = skip_reason(headers, envelope_sender=sender, recipient_addresses=addresses)
        audience = self._audience(mailbox_id, sender)
        reply = settings.reply_for(audience)
        if reason is None and not reply.enabled:
            reason = f"no reply for {audience.value} senders"
        if reason is None and not self._store.claim_reply(mailbox_id, sender, settings.period, now):
            reason = "already answered in this out-of-office period"
        if reason is not None:
            self.counters.skipped += 1
            log.info("auto-reply: %s to %s skipped: %s", owner, sender, reason)
            return
        data = build_reply(
            headers, reply, from_address=owner, to_address=sender, hostname=self._hostname, now=now
        )
        route = self._hub.route(sender, authenticated=True)
        if not route.accepted:
            log.info("auto-reply: %s to %s not sent: %s", owner, sender, route.reason)
            return
        report = self._hub.deliver(
            data,
            prefix=b"",
            sender=None,  # RFC 3834 3.3: the null return path
            recipients=[RoutedRecipient(sender, route)],
            info=MessageInfo(auth_identity=owner),
        )
        self.counters.sent += 1
        where = "queued" if report.queued else "delivered" if report.delivered else "failed"
        log.info(
            "auto-reply: %s to %s (%s, %s): %s", owner, sender, audience.value, route.verdict, where
        )


def oof_time(value: float | None) -> str:
    """A time for people: ISO 8601 in UTC, or '-'."""
    if value is None:
        return "-"
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
