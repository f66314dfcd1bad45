"""The queue's data model: one `QueueEntry` per message, one `Recipient` per address.

What the SMTP layer knows at DATA time is kept here so the queue can honour it days later:
the envelope, the DSN parameters (RFC 3461: RET, ENVID, per-recipient NOTIFY and ORCPT),
the body type, the auth identity and the receiving hop. Each recipient carries its own
state because delivery succeeds or fails per recipient (RFC 5321 3.3: RCPT replies are
per recipient), and a retry only repeats the recipients still pending.

Serialisation is msgpack with explicit keys and string enums (STYLE rule 12); reading
validates every field, so a damaged file is reported as `CorruptEntry`, never as a
`KeyError` deep in the runner.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "MAX_ADDRESS",
    "MAX_AUTH_IDENTITY",
    "MAX_ENVID",
    "MAX_ORCPT",
    "MAX_RECIPIENTS",
    "SCHEMA_VERSION",
    "BodyType",
    "CorruptEntry",
    "Diagnostic",
    "DsnReturn",
    "EntryKind",
    "InvalidEnvelope",
    "Notify",
    "OriginalRecipient",
    "QueueEntry",
    "ReceivedHop",
    "Recipient",
    "RecipientSpec",
    "RecipientState",
    "check_envelope_text",
    "domain_of",
]

SCHEMA_VERSION = 1

# RFC 5321 4.5.3.1.3: a path is at most 256 octets including the angle brackets.
MAX_ADDRESS = 254
# RFC 3461 4.4: ENVID "MUST NOT exceed 100 characters".
MAX_ENVID = 100
# RFC 3461 4.2: ORCPT may be up to 500 characters.
MAX_ORCPT = 500
# RFC 4954 5: the AUTH= identity adds at most 500 characters.
MAX_AUTH_IDENTITY = 500
# RFC 5321 4.5.3.1.8 asks for at least 100 recipients; a queue entry holds at most this many.
MAX_RECIPIENTS = 1000
# Diagnostic text kept per recipient (a remote reply can be long; the DSN needs the gist).
MAX_DIAGNOSTIC = 1000
# The receiving hop's names (HELO argument, address, our host name).
MAX_HOP_FIELD = 255

_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")  # CR, LF, NUL and the other controls
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")  # RFC 3463 2: class.subject.detail


class InvalidEnvelope(ValueError):
    """An envelope value that must not enter the queue (control characters, too long)."""


class CorruptEntry(ValueError):
    """A stored envelope that cannot be read back; the queue quarantines it."""


class RecipientState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        return self in (RecipientState.DELIVERED, RecipientState.FAILED)


class Notify(enum.StrEnum):
    """RCPT NOTIFY= (RFC 3461 4.1); values as on the wire."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


class DsnReturn(enum.StrEnum):
    """MAIL RET= (RFC 3461 4.3)."""

    FULL = "FULL"
    HEADERS = "HDRS"


class BodyType(enum.StrEnum):
    """MAIL BODY= (RFC 6152, RFC 3030)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARY_MIME = "BINARYMIME"


class EntryKind(enum.StrEnum):
    """Why the entry exists: a user's message, a DSN we made, or a notice to the postmaster.

    A failed DOUBLE_BOUNCE is only logged: nothing is ever sent about it (no bounce loops).
    """

    MESSAGE = "message"
    DSN = "dsn"
    DOUBLE_BOUNCE = "double-bounce"


def check_envelope_text(value: str, what: str, limit: int) -> str:
    """`value` if it has no control characters and fits `limit`; else InvalidEnvelope.

    CR, LF and NUL in any envelope value are the Exim CVE-2020-28021 class; refusing them
    here keeps them out of the queue, the logs, the DSNs and the outbound commands.
    """
    if not isinstance(value, str):
        raise InvalidEnvelope(f"{what} must be text")
    if _FORBIDDEN.search(value):
        raise InvalidEnvelope(f"{what} contains control characters")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidEnvelope(f"{what} is longer than {limit} octets")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEnvelope(f"{what} is not valid UTF-8") from None
    return value


def _check_address(value: str, what: str) -> str:
    check_envelope_text(value, what, MAX_ADDRESS)
    local, at, domain = value.rpartition("@")
    # RFC 5321 4.1.2: a Quoted-string local part may hold spaces; nothing else may.
    quoted = len(local) >= 2 and local.startswith('"') and local.endswith('"')
    if (
        not at
        or not local
        or not domain
        or (" " in local and not quoted)
        or " " in domain
        or "<" in value
        or ">" in value
    ):
        raise InvalidEnvelope(f"{what} is not an address: {value!r}")
    return value


def domain_of(address: str) -> str:
    """The domain of an address, lower-cased, without a trailing dot."""
    return address.rpartition("@")[2].rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class OriginalRecipient:
    """RFC 3461 4.2 ORCPT, decoded from xtext: `rfc822;user@example.com`."""

    addr_type: str
    address: str

    def __post_init__(self) -> None:
        check_envelope_text(self.addr_type, "ORCPT address type", 64)
        check_envelope_text(self.address, "ORCPT", MAX_ORCPT)


@dataclass(frozen=True, slots=True)
class RecipientSpec:
    """A recipient as the SMTP layer hands it over."""

    address: str
    notify: frozenset[Notify] | None = None  # None: NOTIFY not given
    orcpt: OriginalRecipient | None = None
    local: bool = False  # deliver through LocalDelivery (DSNs for local senders only)

    def __post_init__(self) -> None:
        _check_address(self.address, "recipient")
        if self.notify is not None:
            notify = frozenset(Notify(n) for n in self.notify)
            # RFC 3461 4.1: NEVER must appear alone.
            if Notify.NEVER in notify and len(notify) > 1:
                raise InvalidEnvelope("NOTIFY=NEVER cannot be combined with other values")
            if not notify:
                raise InvalidEnvelope("NOTIFY needs at least one value")
            object.__setattr__(self, "notify", notify)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """What happened at the last attempt for one recipient.

    `status` is an RFC 3463 enhanced code; `reply` the remote's SMTP reply (code and text,
    for Diagnostic-Code: smtp; ...) or None when we decided ourselves (DNS, a refused
    connection); `remote_mta` the host that answered.
    """

    status: str
    text: str
    reply_code: int | None = None
    remote_mta: str | None = None

    def __post_init__(self) -> None:
        if not _STATUS.fullmatch(self.status):
            raise InvalidEnvelope(f"bad enhanced status code {self.status!r}")
        text = _FORBIDDEN.sub(" ", self.text)[:MAX_DIAGNOSTIC]
        object.__setattr__(self, "text", text)
        if self.remote_mta is not None:
            object.__setattr__(
                self, "remote_mta", _FORBIDDEN.sub("", self.remote_mta)[:MAX_HOP_FIELD]
            )

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")


@dataclass(frozen=True, slots=True)
class ReceivedHop:
    """Where the message came from and who took it (DSN Received-From-MTA, Reporting-MTA)."""

    client_helo: str | None = None
    client_address: str | None = None
    received_by: str | None = None

    def __post_init__(self) -> None:
        for name in ("client_helo", "client_address", "received_by"):
            value = getattr(self, name)
            if value is not None:
                check_envelope_text(value, name, MAX_HOP_FIELD)


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str
    notify: frozenset[Notify] | None = None
    orcpt: OriginalRecipient | None = None
    state: RecipientState = RecipientState.PENDING
    local: bool = False
    diagnostic: Diagnostic | None = None
    last_attempt: float | None = None
    relayed: bool = False  # delivered to a server without DSN (RFC 3464 Action: relayed)
    notified: bool = False  # whatever DSN this final state owes has been handed off

    def wants(self, kind: Notify) -> bool:
        """Whether NOTIFY asks for `kind`; unset NOTIFY means FAILURE,DELAY (RFC 3461 4.1)."""
        if self.notify is None:
            return kind in (Notify.FAILURE, Notify.DELAY)
        return kind in self.notify


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEntry:
    id: str
    sender: str | None  # None: the null reverse-path <>
    recipients: tuple[Recipient, ...]
    arrival: float
    size: int
    next_attempt: float
    attempts: int = 0
    last_attempt: float | None = None
    held: bool = False
    ret: DsnReturn | None = None
    envid: str | None = None
    auth_identity: str | None = None
    hop: ReceivedHop | None = None
    body: BodyType = BodyType.SEVEN_BIT
    smtputf8: bool = False
    kind: EntryKind = EntryKind.MESSAGE
    delay_notified: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)  # unknown keys from newer writers

    @property
    def pending(self) -> tuple[Recipient, ...]:
        return tuple(r for r in self.recipients if not r.state.final)

    @property
    def last_error(self) -> Diagnostic | None:
        for r in self.recipients:
            if r.state is RecipientState.DEFERRED and r.diagnostic is not None:
                return r.diagnostic
        return None

    def with_recipients(self, recipients: tuple[Recipient, ...]) -> QueueEntry:
        return replace(self, recipients=recipients)

    # -- serialisation ------------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = dict(self.extra)
        record.update(
            v=SCHEMA_VERSION,
            id=self.id,
            sender=self.sender,
            rcpts=[_recipient_record(r) for r in self.recipients],
            arrival=self.arrival,
            size=self.size,
            next=self.next_attempt,
            attempts=self.attempts,
            last=self.last_attempt,
            held=self.held,
            ret=None if self.ret is None else self.ret.value,
            envid=self.envid,
            auth=self.auth_identity,
            hop=None
            if self.hop is None
            else {
                "helo": self.hop.client_helo,
                "addr": self.hop.client_address,
                "by": self.hop.received_by,
            },
            body=self.body.value,
            utf8=self.smtputf8,
            kind=self.kind.value,
            delayed=self.delay_notified,
        )
        return record

    @classmethod
    def from_record(cls, record: object) -> QueueEntry:
        try:
            return _entry_from_record(record)
        except CorruptEntry:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptEntry(f"envelope fields invalid: {exc}") from None


_KNOWN_KEYS = frozenset(
    {"v", "id", "sender", "rcpts", "arrival", "size", "next", "attempts", "last", "held"}
    | {"ret", "envid", "auth", "hop", "body", "utf8", "kind", "delayed"}
)


def _recipient_record(r: Recipient) -> dict[str, Any]:
    d = r.diagnostic
    return {
        "addr": r.address,
        "notify": None if r.notify is None else sorted(n.value for n in r.notify),
        "orcpt": None if r.orcpt is None else [r.orcpt.addr_type, r.orcpt.address],
        "state": r.state.value,
        "local": r.local,
        "diag": None if d is None else [d.status, d.text, d.reply_code, d.remote_mta],
        "last": r.last_attempt,
        "relayed": r.relayed,
        "notified": r.notified,
    }


def _typed(value: object, kind: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise CorruptEntry(f"{what}: expected a number")
    if not isinstance(value, kind):
        raise CorruptEntry(f"{what}: expected {kind}, got {type(value).__name__}")
    return value


def _optional(value: object, kind: type | tuple[type, ...], what: str) -> Any:
    return None if value is None else _typed(value, kind, what)


def _number(value: object, what: str) -> float:
    return float(_typed(value, (int, float), what))


def _recipient_from_record(raw: object) -> Recipient:
    rec = _typed(raw, dict, "recipient")
    notify_raw = _optional(rec["notify"], list, "notify")
    orcpt_raw = _optional(rec["orcpt"], list, "orcpt")
    diag_raw = _optional(rec["diag"], list, "diag")
    diagnostic = None
    if diag_raw is not None:
        status, text, code, remote = diag_raw
        diagnostic = Diagnostic(
            _typed(status, str, "status"),
            _typed(text, str, "diagnostic"),
            _optional(code, int, "reply code"),
            _optional(remote, str, "remote MTA"),
        )
    spec = RecipientSpec(
        _typed(rec["addr"], str, "address"),
        None if notify_raw is None else frozenset(Notify(n) for n in notify_raw),
        None
        if orcpt_raw is None
        else OriginalRecipient(_typed(orcpt_raw[0], str, "x"), _typed(orcpt_raw[1], str, "x")),
    )
    last = rec["last"]
    return Recipient(
        address=spec.address,
        notify=spec.notify,
        orcpt=spec.orcpt,
        state=RecipientState(rec["state"]),
        local=_typed(rec["local"], bool, "local"),
        diagnostic=diagnostic,
        last_attempt=None if last is None else _number(last, "last attempt"),
        relayed=_typed(rec["relayed"], bool, "relayed"),
        notified=_typed(rec["notified"], bool, "notified"),
    )


def _entry_from_record(raw: object) -> QueueEntry:
    record = _typed(raw, dict, "envelope")
    version = record.get("v")
    if version != SCHEMA_VERSION:
        raise CorruptEntry(f"unknown envelope schema version {version!r}")
    sender = _optional(record["sender"], str, "sender")
    if sender is not None:
        _check_address(sender, "sender")
    recipients = tuple(_recipient_from_record(r) for r in _typed(record["rcpts"], list, "rcpts"))
    if not recipients or len(recipients) > MAX_RECIPIENTS:
        raise CorruptEntry("envelope has no recipients or too many")
    hop_raw = _optional(record["hop"], dict, "hop")
    hop = None
    if hop_raw is not None:
        hop = ReceivedHop(
            _optional(hop_raw["helo"], str, "helo"),
            _optional(hop_raw["addr"], str, "addr"),
            _optional(hop_raw["by"], str, "by"),
        )
    envid = _optional(record["envid"], str, "envid")
    auth = _optional(record["auth"], str, "auth")
    if envid is not None:
        check_envelope_text(envid, "ENVID", MAX_ENVID)
    if auth is not None:
        check_envelope_text(auth, "auth identity", MAX_AUTH_IDENTITY)
    ret = _optional(record["ret"], str, "ret")
    last = record["last"]
    size = _typed(record["size"], int, "size")
    if size < 0:
        raise CorruptEntry("negative size")
    return QueueEntry(
        id=_typed(record["id"], str, "id"),
        sender=sender,
        recipients=recipients,
        arrival=_number(record["arrival"], "arrival"),
        size=size,
        next_attempt=_number(record["next"], "next attempt"),
        attempts=_typed(record["attempts"], int, "attempts"),
        last_attempt=None if last is None else _number(last, "last attempt"),
        held=_typed(record["held"], bool, "held"),
        ret=None if ret is None else DsnReturn(ret),
        envid=envid,
        auth_identity=auth,
        hop=hop,
        body=BodyType(record["body"]),
        smtputf8=_typed(record["utf8"], bool, "utf8"),
        kind=EntryKind(record["kind"]),
        delay_notified=_typed(record["delayed"], bool, "delayed"),
        extra={k: v for k, v in record.items() if k not in _KNOWN_KEYS},
    )
