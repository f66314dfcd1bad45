"""Mail submitted by a logged-in user as a whole message (EAS SendMail/SmartReply/
SmartForward, and any other front end that receives a finished message rather than an SMTP
envelope): recipients from the header, the sender checked, the message made ready, routed
and delivered through the hub.

What happens to a submitted message (RFC 6409 8, RFC 5322 3.6.3):
- Recipients are the addresses of To, Cc and Bcc (and Resent-* are not honoured: a phone
  never resends). They are parsed with `email.headerregistry` and each one is validated
  again here; `email.utils.getaddresses` is never used for a decision (it misreads crafted
  headers, CVE-2023-27043). A header the parser flags as defective is refused.
- The sender is the account: every From (and Sender) address must be one of the account's
  own addresses, else the submission is refused; a message without From gets the primary
  address. The envelope sender is the primary address when From names it, otherwise the
  From address (an alias the user owns).
- Message-ID and Date are added when missing (RFC 6409 8.2, 8.3); Bcc is removed from the
  copy that is delivered (RFC 5322 3.6.3), but every Bcc recipient gets it. The copy kept
  for the sender's Sent Items keeps its Bcc line, as Exchange and Outlook do: only the
  sender sees that copy, and it is how they see whom they sent it to.
- A Received field records the submission (RFC 5321 4.4).

The hub decides per recipient; `Submitter.submit` maps the verdicts to outcomes that each
protocol turns into its own statuses. Blocking (routing and delivery touch the disk): run
it in a worker thread.
"""

from __future__ import annotations

import datetime
import email.policy
import email.utils
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.errors import HeaderParseError, MessageDefect
from email.headerregistry import AddressHeader
from email.parser import BytesHeaderParser
from enum import StrEnum
from typing import Final

from . import headers
from .hub import MAX_RECEIVED_FIELDS, DeliveryReport, Hub, RoutedRecipient, Verdict

log = logging.getLogger("mailhost.submission")

# Postfix smtpd_recipient_limit default is 1000; Exchange's default is 500 per message.
MAX_RECIPIENTS: Final = 500
DEFAULT_MAX_MESSAGE_SIZE: Final = 25 * 1024 * 1024  # the SMTP listener's default SIZE
# RFC 5321 4.5.3.1.1 / 4.5.3.1.2: local part 64 octets, domain 255 octets.
MAX_LOCAL_PART: Final = 64
MAX_DOMAIN: Final = 255
_RECIPIENT_FIELDS: Final = ("to", "cc", "bcc")
_DOT_ATOM_LOCAL: Final = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
_LABEL: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class Outcome(StrEnum):
    """What became of a submission, protocol-neutral."""

    SENT = "sent"  # every copy is durable (delivered or queued)
    INVALID_MESSAGE = "invalid-message"  # no header, defective address headers
    NO_RECIPIENTS = "no-recipients"
    RECIPIENT_UNRESOLVED = "recipient-unresolved"  # no such local user
    NO_ROUTE = "no-route"  # a remote recipient nothing can deliver to
    SENDER_NOT_OWNED = "sender-not-owned"  # From/Sender is not the user's
    TOO_LARGE = "too-large"
    TOO_MANY_RECIPIENTS = "too-many-recipients"
    LOOP = "loop"  # too many Received fields
    TEMPORARY = "temporary"  # try again later
    FAILED = "failed"  # refused for good by every recipient's store


class SubmissionError(Exception):
    def __init__(self, outcome: Outcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready to deliver: `message` is what recipients get (no Bcc), `saved` what
    the sender's Sent Items keep."""

    message: bytes
    saved: bytes
    sender: str
    recipients: tuple[str, ...]
    message_id: str


@dataclass(frozen=True, slots=True)
class SubmissionResult:
    outcome: Outcome
    reason: str = ""
    prepared: Prepared | None = None
    report: DeliveryReport | None = None
    unresolved: tuple[str, ...] = field(default=())

    @property
    def sent(self) -> bool:
        return self.outcome is Outcome.SENT


# --- parsing and checking (pure) -----------------------------------------------------------


def valid_address(address: str) -> str | None:
    """`local@domain` with the domain lower-cased, or None if it is not a plain mailbox
    address we would route (no quoted local parts with specials, no address literals,
    no source routes, no empty parts)."""
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        return None
    if len(local.encode("utf-8")) > MAX_LOCAL_PART or len(domain) > MAX_DOMAIN:
        return None
    if not local.isascii():
        if any(c.isspace() or c in '"(),:;<>@[\\]' for c in local):
            return None  # RFC 6531: UTF-8 local parts, but no specials
    elif not _DOT_ATOM_LOCAL.fullmatch(local):
        return None
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        return None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return f"{local}@{domain.lower()}"


def _utc(now: float | None) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)


def _parse_header(raw: bytes) -> email.message.Message:
    header = headers.header_block(raw)
    if not header.strip():
        raise SubmissionError(Outcome.INVALID_MESSAGE, "the message has no header")
    try:
        return BytesHeaderParser(policy=email.policy.default).parsebytes(header)
    except (HeaderParseError, ValueError, TypeError) as exc:
        raise SubmissionError(Outcome.INVALID_MESSAGE, f"unreadable header: {exc}") from None


def _addresses(message: email.message.Message, name: str) -> list[tuple[str, str]]:
    """(display name, address) of every mailbox in every `name` field, strictly."""
    out: list[tuple[str, str]] = []
    try:
        values = message.get_all(name) or []
    except (HeaderParseError, ValueError, TypeError, IndexError) as exc:
        raise SubmissionError(Outcome.INVALID_MESSAGE, f"{name}: {exc}") from None
    for value in values:
        if not isinstance(value, AddressHeader):
            raise SubmissionError(Outcome.INVALID_MESSAGE, f"{name}: not an address field")
        defects = [d for d in getattr(value, "defects", ()) if isinstance(d, MessageDefect)]
        if defects:
            raise SubmissionError(Outcome.INVALID_MESSAGE, f"{name}: malformed ({defects[0]})")
        for address in value.addresses:
            if not address.username or not address.domain:
                raise SubmissionError(
                    Outcome.INVALID_MESSAGE, f"{name}: {address.addr_spec!r} is not an address"
                )
            checked = valid_address(f"{address.username}@{address.domain}")
            if checked is None:
                raise SubmissionError(
                    Outcome.INVALID_MESSAGE, f"{name}: {address.addr_spec!r} is not valid"
                )
            out.append((address.display_name, checked))
    return out


def _drop_fields(header: bytes, names: frozenset[bytes]) -> bytes:
    """The header without the named fields (with their continuation lines), byte-exact."""
    out: list[bytes] = []
    dropping = False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        dropping = b":" in line and name in names
        if not dropping:
            out.append(line)
    return b"".join(out)


def _crlf(data: bytes) -> bytes:
    """Line ends as CRLF (phones send LF now and then; the store and SMTP want CRLF)."""
    if b"\n" not in data or (b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def prepare(
    raw: bytes,
    *,
    addresses: Sequence[str],
    hostname: str,
    now: float | None = None,
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> Prepared:
    """Check and complete a submitted message; SubmissionError says why not.

    `addresses` are the account's own addresses, primary first."""
    if len(raw) > max_size:
        raise SubmissionError(Outcome.TOO_LARGE, f"message of {len(raw)} bytes over {max_size}")
    raw = _crlf(raw)
    parsed = _parse_header(raw)
    owned = {a.lower() for a in addresses}
    primary = addresses[0]
    senders = _addresses(parsed, "from") + _addresses(parsed, "sender")
    for _, address in senders:
        if address.lower() not in owned:
            raise SubmissionError(
                Outcome.SENDER_NOT_OWNED, f"{address} is not an address of this account"
            )
    recipients: list[str] = []
    seen: set[str] = set()
    for name in _RECIPIENT_FIELDS:
        for _, address in _addresses(parsed, name):
            if address.lower() not in seen:
                seen.add(address.lower())
                recipients.append(address)
    if not recipients:
        raise SubmissionError(Outcome.NO_RECIPIENTS, "no To, Cc or Bcc recipient")
    if len(recipients) > MAX_RECIPIENTS:
        raise SubmissionError(Outcome.TOO_MANY_RECIPIENTS, f"more than {MAX_RECIPIENTS}")
    header = headers.header_block(raw)
    body = raw[len(header) :]
    if headers.count_fields(header, b"received") >= MAX_RECEIVED_FIELDS:
        raise SubmissionError(Outcome.LOOP, "too many Received fields")
    added: list[bytes] = []
    from_ = [a for _, a in _addresses(parsed, "from")]
    if not from_:
        added.append(f"From: {primary}\r\n".encode())
    message_id = f"{secrets.token_hex(12)}@{hostname}"
    existing_id = parsed.get("message-id")
    if existing_id is None:
        added.append(f"Message-ID: <{message_id}>\r\n".encode())
    else:
        message_id = str(existing_id).strip().strip("<>") or message_id
    if not headers.has_field(header, b"date"):
        added.append(f"Date: {email.utils.format_datetime(_utc(now))}\r\n".encode())
    if header.endswith(b"\n"):
        head = header
    else:  # a header with no body and no final line end
        head, body = header + b"\r\n", b"\r\n" + body
    if not body.startswith((b"\r\n", b"\n")):
        body = b"\r\n" + body
    extra = b"".join(added)
    saved = head + extra + body
    delivered = _drop_fields(head, frozenset({b"bcc"})) + extra + body
    envelope_sender = primary if not from_ or from_[0].lower() == primary.lower() else from_[0]
    return Prepared(delivered, saved, envelope_sender, tuple(recipients), message_id)


def received_field(
    *, hostname: str, peer: str, user: str, protocol: str, queue_id: str, now: float
) -> bytes:
    """RFC 5321 4.4 trace field for a submission over `protocol` (e.g. "ActiveSync")."""
    clean_peer = "".join(c for c in peer if c.isalnum() or c in ".:")[:64] or "unknown"
    clean_user = "".join(c for c in user if c.isprintable() and c not in "()\\")[:255]
    return (
        f"Received: from [{clean_peer}] ([{clean_peer}])\r\n"
        f"\t(authenticated sender: {clean_user})\r\n"
        f"\tby {hostname} (mailhost) with {protocol} id {queue_id};"
        f" {email.utils.format_datetime(_utc(now))}\r\n"
    ).encode()


# --- routing and delivery ------------------------------------------------------------------


class Submitter:
    """Submits prepared messages through the hub (blocking; run in a worker thread)."""

    def __init__(
        self, hub: Hub, *, hostname: str, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> None:
        self.hub = hub
        self.hostname = hostname
        self.max_size = max_size

    def submit(
        self,
        raw: bytes,
        *,
        addresses: Sequence[str],
        peer: str,
        protocol: str,
        now: float | None = None,
    ) -> SubmissionResult:
        when = time.time() if now is None else now
        try:
            prepared = prepare(
                raw, addresses=addresses, hostname=self.hostname, now=when, max_size=self.max_size
            )
        except SubmissionError as exc:
            log.info("submission by %s refused: %s", addresses[0], exc.reason)
            return SubmissionResult(exc.outcome, exc.reason)
        routed: list[RoutedRecipient] = []
        unresolved: list[str] = []
        unroutable: list[str] = []
        for address in prepared.recipients:
            route = self.hub.route(address, authenticated=True)
            if route.verdict is Verdict.UNKNOWN_USER:
                unresolved.append(address)
            elif not route.accepted:
                unroutable.append(address)
            else:
                routed.append(RoutedRecipient(address, route))
        if unresolved:
            return SubmissionResult(
                Outcome.RECIPIENT_UNRESOLVED,
                f"no such user: {', '.join(unresolved)}",
                prepared,
                unresolved=tuple(unresolved),
            )
        if unroutable:
            return SubmissionResult(
                Outcome.NO_ROUTE,
                f"cannot route to {', '.join(unroutable)}",
                prepared,
                unresolved=tuple(unroutable),
            )
        queue_id = secrets.token_hex(8).upper()
        trace = received_field(
            hostname=self.hostname,
            peer=peer,
            user=addresses[0],
            protocol=protocol,
            queue_id=queue_id,
            now=when,
        )
        report = self.hub.deliver(
            prepared.message,
            prefix=trace,
            sender=prepared.sender,
            recipients=routed,
            message_id=queue_id,
        )
        for address in report.delivered + report.queued:
            log.info(
                "message id=%s submitted by %s via %s rcpt=<%s> result=ok size=%d",
                queue_id,
                addresses[0],
                protocol,
                address,
                len(prepared.message),
            )
        failures = {**report.temporary, **report.quota, **report.permanent}
        for address, reason in failures.items():
            log.warning(
                "message id=%s submitted by %s via %s rcpt=<%s> result=failed (%s)",
                queue_id,
                addresses[0],
                protocol,
                address,
                reason,
            )
        if not report.failed:
            # Every copy is in a mailbox or the queue; copies that failed while others
            # landed were handed to the queue by the hub (retried, or bounced with a DSN).
            return SubmissionResult(Outcome.SENT, "", prepared, report)
        if report.landed or report.temporary or report.quota:
            # Some copies could not even be queued: the phone sends again (its ClientId is
            # not remembered for a failure), and a duplicate is better than a loss.
            return SubmissionResult(
                Outcome.TEMPORARY, "delivery failed; try again", prepared, report
            )
        return SubmissionResult(Outcome.FAILED, "every recipient refused it", prepared, report)
