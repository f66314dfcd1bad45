"""One frozen dataclass per IMAP command, grouped by the state that allows it.

The grouping follows pymap: :class:`CommandAny`, :class:`CommandNonAuth`,
:class:`CommandAuth` and :class:`CommandSelect` carry a :class:`Gate`, and
:mod:`protocols.imap.state` decides in one table which gate is open in which connection
state. Commands hold decoded, validated values; the session never re-parses bytes.

Text arguments are ``str`` (mailbox names decoded from modified UTF-7 into
:class:`~protocols.imap.names.MailboxName`), octet payloads are ``bytes`` (passwords,
SASL responses, APPEND message data).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import ClassVar

from .names import MailboxName
from .search import SearchKey
from .sequence import SequenceSet

__all__ = [
    "ALL_COMMANDS",
    "AppendCommand",
    "AppendMessage",
    "AuthenticateCommand",
    "CapabilityCommand",
    "CheckCommand",
    "CloseCommand",
    "Command",
    "CommandAny",
    "CommandAuth",
    "CommandNonAuth",
    "CommandSelect",
    "CompressCommand",
    "CopyCommand",
    "CreateCommand",
    "DeleteCommand",
    "EnableCommand",
    "ExamineCommand",
    "ExpungeCommand",
    "FetchAttribute",
    "FetchCommand",
    "FetchItem",
    "Gate",
    "GetQuotaCommand",
    "GetQuotaRootCommand",
    "IdCommand",
    "IdleCommand",
    "ListCommand",
    "ListReturn",
    "ListSelect",
    "LoginCommand",
    "LogoutCommand",
    "LsubCommand",
    "MoveCommand",
    "NamespaceCommand",
    "NoopCommand",
    "Partial",
    "QResyncParams",
    "RenameCommand",
    "SearchCommand",
    "SearchReturn",
    "Section",
    "SectionText",
    "SelectCommand",
    "SetQuotaCommand",
    "SortCommand",
    "SortCriterion",
    "SortKey",
    "StartTLSCommand",
    "StatusCommand",
    "StatusItem",
    "StoreCommand",
    "StoreMode",
    "SubscribeCommand",
    "ThreadAlgorithm",
    "ThreadCommand",
    "UnselectCommand",
    "UnsubscribeCommand",
]


class Gate(enum.StrEnum):
    """Which connection states a command belongs to (see :mod:`protocols.imap.state`)."""

    ANY = "any"
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"  # authenticated or selected
    SELECTED = "selected"


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Base of every command. ``name`` is the verb as the RFC spells it."""

    tag: str
    name: ClassVar[str] = ""
    gate: ClassVar[Gate] = Gate.ANY

    @property
    def command_name(self) -> str:
        """The verb as written, with the ``UID`` prefix for UID variants."""
        return ("UID " if getattr(self, "uid", False) else "") + self.name


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAny(Command):
    gate: ClassVar[Gate] = Gate.ANY


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandNonAuth(Command):
    gate: ClassVar[Gate] = Gate.NOT_AUTHENTICATED


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandAuth(Command):
    gate: ClassVar[Gate] = Gate.AUTHENTICATED


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandSelect(Command):
    gate: ClassVar[Gate] = Gate.SELECTED


# --- any state -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CapabilityCommand(CommandAny):
    """See Also: RFC 3501 6.1.1, RFC 9051 6.1.1."""

    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True, kw_only=True)
class NoopCommand(CommandAny):
    """See Also: RFC 3501 6.1.2."""

    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True, kw_only=True)
class LogoutCommand(CommandAny):
    """See Also: RFC 3501 6.1.3."""

    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True, kw_only=True)
class IdCommand(CommandAny):
    """``params`` is ``None`` for ``ID NIL``. See Also: RFC 2971 3.1."""

    name: ClassVar[str] = "ID"
    params: tuple[tuple[str, str | None], ...] | None = None


# --- not authenticated -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLSCommand(CommandNonAuth):
    """See Also: RFC 3501 6.2.1 (and RFC 2595: discard buffered plaintext afterwards)."""

    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthenticateCommand(CommandNonAuth):
    """``initial_response`` is the decoded SASL-IR (RFC 4959); ``b""`` for ``=``.

    See Also: RFC 3501 6.2.2, RFC 4959 3.
    """

    name: ClassVar[str] = "AUTHENTICATE"
    mechanism: str
    initial_response: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginCommand(CommandNonAuth):
    """See Also: RFC 3501 6.2.3."""

    name: ClassVar[str] = "LOGIN"
    username: str
    password: bytes


# --- authenticated (or selected) -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableCommand(CommandAuth):
    """Capability names upper-cased. See Also: RFC 5161 3.1, RFC 9051 6.3.1.

    RFC 9051 6.3.1 lets servers accept ENABLE after SELECT ("don't have to check"), so it is
    gated like any authenticated command.
    """

    name: ClassVar[str] = "ENABLE"
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CompressCommand(CommandAuth):
    """See Also: RFC 4978 3 (``command-auth =/ compress``)."""

    name: ClassVar[str] = "COMPRESS"
    mechanism: str


@dataclass(frozen=True, slots=True, kw_only=True)
class QResyncParams:
    """The QRESYNC select parameter (RFC 7162 3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None  # (sequence numbers, UIDs)


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectCommand(CommandAuth):
    """See Also: RFC 3501 6.3.1, RFC 7162 3.1.8 (CONDSTORE) and 3.2.5 (QRESYNC)."""

    name: ClassVar[str] = "SELECT"
    mailbox: MailboxName
    condstore: bool = False
    qresync: QResyncParams | None = None

    @property
    def readonly(self) -> bool:
        return False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExamineCommand(CommandAuth):
    """SELECT, read-only. See Also: RFC 3501 6.3.2."""

    name: ClassVar[str] = "EXAMINE"
    mailbox: MailboxName
    condstore: bool = False
    qresync: QResyncParams | None = None

    @property
    def readonly(self) -> bool:
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateCommand(CommandAuth):
    """``special_use`` from ``(USE (...))`` (RFC 6154 3). See Also: RFC 3501 6.3.3."""

    name: ClassVar[str] = "CREATE"
    mailbox: MailboxName
    special_use: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteCommand(CommandAuth):
    """See Also: RFC 3501 6.3.4."""

    name: ClassVar[str] = "DELETE"
    mailbox: MailboxName


@dataclass(frozen=True, slots=True, kw_only=True)
class RenameCommand(CommandAuth):
    """See Also: RFC 3501 6.3.5."""

    name: ClassVar[str] = "RENAME"
    mailbox: MailboxName
    new_mailbox: MailboxName


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscribeCommand(CommandAuth):
    """See Also: RFC 3501 6.3.6."""

    name: ClassVar[str] = "SUBSCRIBE"
    mailbox: MailboxName


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsubscribeCommand(CommandAuth):
    """See Also: RFC 3501 6.3.7."""

    name: ClassVar[str] = "UNSUBSCRIBE"
    mailbox: MailboxName


class ListSelect(enum.StrEnum):
    """LIST selection options (RFC 5258 3.1, RFC 6154 5.2)."""

    SUBSCRIBED = "SUBSCRIBED"
    REMOTE = "REMOTE"
    RECURSIVEMATCH = "RECURSIVEMATCH"
    SPECIAL_USE = "SPECIAL-USE"


class ListReturn(enum.StrEnum):
    """LIST return options (RFC 5258 3.2, RFC 6154 5.1, RFC 5819 STATUS)."""

    SUBSCRIBED = "SUBSCRIBED"
    CHILDREN = "CHILDREN"
    SPECIAL_USE = "SPECIAL-USE"
    STATUS = "STATUS"


class StatusItem(enum.StrEnum):
    """STATUS data items (RFC 3501 6.3.10, RFC 9051 6.3.11, RFC 7162, RFC 8438, RFC 7889)."""

    MESSAGES = "MESSAGES"
    RECENT = "RECENT"
    UIDNEXT = "UIDNEXT"
    UIDVALIDITY = "UIDVALIDITY"
    UNSEEN = "UNSEEN"
    DELETED = "DELETED"
    SIZE = "SIZE"
    HIGHESTMODSEQ = "HIGHESTMODSEQ"
    APPENDLIMIT = "APPENDLIMIT"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListCommand(CommandAuth):
    """LIST, LIST-EXTENDED (RFC 5258), SPECIAL-USE (RFC 6154), LIST-STATUS (RFC 5819).

    ``patterns`` are decoded (modified UTF-7 or UTF-8) with ``%`` and ``*`` kept. ``extended``
    records whether the client used extended syntax (selection options, several patterns
    or return options): RFC 5258 3 then asks for extended response data.
    """

    name: ClassVar[str] = "LIST"
    reference: str
    patterns: tuple[str, ...]
    selection: frozenset[ListSelect] = frozenset()
    returns: frozenset[ListReturn] = frozenset()
    status_items: tuple[StatusItem, ...] = ()
    extended: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LsubCommand(CommandAuth):
    """See Also: RFC 3501 6.3.9 (deprecated by RFC 9051 but still served)."""

    name: ClassVar[str] = "LSUB"
    reference: str
    pattern: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceCommand(CommandAuth):
    """See Also: RFC 2342, RFC 9051 6.3.10."""

    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusCommand(CommandAuth):
    """See Also: RFC 3501 6.3.10."""

    name: ClassVar[str] = "STATUS"
    mailbox: MailboxName
    items: tuple[StatusItem, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendMessage:
    """One message of an APPEND (several with MULTIAPPEND, RFC 3502).

    ``binary`` when sent as literal8 (RFC 3516 4.4), ``utf8`` when wrapped in ``UTF8 (...)``
    (RFC 6855 4). Flags never include ``\\Recent``.
    """

    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: dt.datetime | None = None
    binary: bool = False
    utf8: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendCommand(CommandAuth):
    """See Also: RFC 3501 6.3.11, RFC 3502 (MULTIAPPEND), RFC 4315 (APPENDUID)."""

    name: ClassVar[str] = "APPEND"
    mailbox: MailboxName
    messages: tuple[AppendMessage, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleCommand(CommandAuth):
    """After ``+ idling`` the session calls ``reader.expect_continuation()`` for DONE.

    See Also: RFC 2177.
    """

    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True, kw_only=True)
class GetQuotaCommand(CommandAuth):
    """See Also: RFC 9208 4.2."""

    name: ClassVar[str] = "GETQUOTA"
    root: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GetQuotaRootCommand(CommandAuth):
    """See Also: RFC 9208 4.3."""

    name: ClassVar[str] = "GETQUOTAROOT"
    mailbox: MailboxName


@dataclass(frozen=True, slots=True, kw_only=True)
class SetQuotaCommand(CommandAuth):
    """Parsed so it can be refused politely (quotas are set by the administrator).

    See Also: RFC 9208 4.1.
    """

    name: ClassVar[str] = "SETQUOTA"
    root: str
    limits: tuple[tuple[str, int], ...]


# --- selected --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckCommand(CommandSelect):
    """IMAP4rev1 only (RFC 9051 removed it; treat as NOOP). See Also: RFC 3501 6.4.1."""

    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseCommand(CommandSelect):
    """See Also: RFC 3501 6.4.2."""

    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True, kw_only=True)
class UnselectCommand(CommandSelect):
    """See Also: RFC 3691."""

    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpungeCommand(CommandSelect):
    """EXPUNGE, or UID EXPUNGE when ``uids`` is set. See Also: RFC 3501 6.4.3, RFC 4315 2.1."""

    name: ClassVar[str] = "EXPUNGE"
    uids: SequenceSet | None = None

    @property
    def uid(self) -> bool:
        return self.uids is not None


class SearchReturn(enum.StrEnum):
    """ESEARCH return options (RFC 4731 3.1) and SAVE (RFC 5182 2.1)."""

    MIN = "MIN"
    MAX = "MAX"
    ALL = "ALL"
    COUNT = "COUNT"
    SAVE = "SAVE"


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchCommand(CommandSelect):
    """``returns`` is ``None`` for a plain SEARCH, a set for ``RETURN (...)`` (ESEARCH);
    ``RETURN ()`` means ``{ALL}`` (RFC 4731 3.1). String values in ``key`` are already
    decoded from ``charset``.

    See Also: RFC 3501 6.4.4, RFC 9051 6.4.4, RFC 4731, RFC 5182.
    """

    name: ClassVar[str] = "SEARCH"
    uid: bool = False
    charset: str | None = None
    key: SearchKey
    returns: frozenset[SearchReturn] | None = None


class SectionText(enum.StrEnum):
    HEADER = "HEADER"
    HEADER_FIELDS = "HEADER.FIELDS"
    HEADER_FIELDS_NOT = "HEADER.FIELDS.NOT"
    TEXT = "TEXT"
    MIME = "MIME"


@dataclass(frozen=True, slots=True, kw_only=True)
class Section:
    """``[1.2.HEADER.FIELDS (From To)]``: part path, text specifier, header field names.

    ``fields`` keep the client's spelling (the response echoes it); matching is
    case-insensitive.
    """

    part: tuple[int, ...] = ()
    text: SectionText | None = None
    fields: tuple[str, ...] = ()

    def render(self) -> bytes:
        items = [str(p).encode() for p in self.part]
        if self.text is not None:
            items.append(self.text.value.encode())
        spec = b".".join(items)
        if self.text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
            spec += b" (" + b" ".join(_astring(f) for f in self.fields) + b")"
        return spec


def _astring(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    if raw and all(0x21 <= b <= 0x7E and b not in b'(){%*"\\' for b in raw):
        return raw
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


@dataclass(frozen=True, slots=True, kw_only=True)
class Partial:
    """``<origin.count>`` (RFC 3501 6.4.5)."""

    origin: int
    count: int


class FetchItem(enum.StrEnum):
    """FETCH data items (RFC 3501 6.4.5, RFC 3516, RFC 7162, RFC 8514)."""

    FLAGS = "FLAGS"
    UID = "UID"
    INTERNALDATE = "INTERNALDATE"
    RFC822_SIZE = "RFC822.SIZE"
    ENVELOPE = "ENVELOPE"
    BODY = "BODY"  # the non-extensible BODYSTRUCTURE
    BODYSTRUCTURE = "BODYSTRUCTURE"
    BODY_SECTION = "BODY[]"  # BODY[section]<partial> and BODY.PEEK[...]
    BINARY = "BINARY[]"  # BINARY[section]<partial> and BINARY.PEEK[...] (RFC 3516)
    BINARY_SIZE = "BINARY.SIZE"
    RFC822 = "RFC822"
    RFC822_HEADER = "RFC822.HEADER"
    RFC822_TEXT = "RFC822.TEXT"
    MODSEQ = "MODSEQ"
    SAVEDATE = "SAVEDATE"


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchAttribute:
    """One FETCH item. ``section``/``partial``/``peek`` only for BODY[]/BINARY[] forms."""

    item: FetchItem
    section: Section | None = None
    partial: Partial | None = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """RFC 3501 6.4.5: BODY[...], BINARY[...], RFC822 and RFC822.TEXT set \\Seen."""
        if self.item in (FetchItem.BODY_SECTION, FetchItem.BINARY):
            return not self.peek
        return self.item in (FetchItem.RFC822, FetchItem.RFC822_TEXT)

    def response_name(self) -> bytes:
        """The name this item has in the FETCH response (``BODY[1]<0>``, never ``.PEEK``)."""
        if self.item is FetchItem.BODY_SECTION or self.item is FetchItem.BINARY:
            base = b"BODY" if self.item is FetchItem.BODY_SECTION else b"BINARY"
            sec = self.section.render() if self.section else b""
            out = base + b"[" + sec + b"]"
            if self.partial is not None:
                out += b"<" + str(self.partial.origin).encode() + b">"  # RFC 3501 7.4.2
            return out
        if self.item is FetchItem.BINARY_SIZE:
            sec = self.section.render() if self.section else b""
            return b"BINARY.SIZE[" + sec + b"]"
        return self.item.value.encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchCommand(CommandSelect):
    """``attributes`` with macros (ALL/FAST/FULL) expanded.

    The session adds UID to UID FETCH responses (RFC 3501 6.4.8) and MODSEQ when
    CHANGEDSINCE is given (RFC 7162 3.1.4.1); ``vanished`` requires ``uid`` and
    ``changedsince`` (RFC 7162 3.2.6, checked by the parser).

    See Also: RFC 3501 6.4.5, RFC 7162 3.1.4 and 3.2.6.
    """

    name: ClassVar[str] = "FETCH"
    uid: bool = False
    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    changedsince: int | None = None
    vanished: bool = False


class StoreMode(enum.StrEnum):
    REPLACE = "FLAGS"
    ADD = "+FLAGS"
    REMOVE = "-FLAGS"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreCommand(CommandSelect):
    """See Also: RFC 3501 6.4.6, RFC 7162 3.1.3 (UNCHANGEDSINCE)."""

    name: ClassVar[str] = "STORE"
    uid: bool = False
    sequence: SequenceSet
    mode: StoreMode
    silent: bool = False
    flags: tuple[str, ...]
    unchangedsince: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyCommand(CommandSelect):
    """See Also: RFC 3501 6.4.7, RFC 4315 3 (COPYUID)."""

    name: ClassVar[str] = "COPY"
    uid: bool = False
    sequence: SequenceSet
    mailbox: MailboxName


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveCommand(CommandSelect):
    """See Also: RFC 6851."""

    name: ClassVar[str] = "MOVE"
    uid: bool = False
    sequence: SequenceSet
    mailbox: MailboxName


class SortKey(enum.StrEnum):
    """RFC 5256 3 sort keys."""

    ARRIVAL = "ARRIVAL"
    CC = "CC"
    DATE = "DATE"
    FROM = "FROM"
    SIZE = "SIZE"
    SUBJECT = "SUBJECT"
    TO = "TO"


@dataclass(frozen=True, slots=True, kw_only=True)
class SortCriterion:
    key: SortKey
    reverse: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SortCommand(CommandSelect):
    """See Also: RFC 5256 3."""

    name: ClassVar[str] = "SORT"
    uid: bool = False
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey


class ThreadAlgorithm(enum.StrEnum):
    ORDEREDSUBJECT = "ORDEREDSUBJECT"
    REFERENCES = "REFERENCES"


@dataclass(frozen=True, slots=True, kw_only=True)
class ThreadCommand(CommandSelect):
    """See Also: RFC 5256 3."""

    name: ClassVar[str] = "THREAD"
    uid: bool = False
    algorithm: ThreadAlgorithm
    charset: str
    key: SearchKey


# Every concrete command, for tables keyed by verb (see protocols.imap.state.verb_gate).
ALL_COMMANDS: tuple[type[Command], ...] = (
    CapabilityCommand,
    NoopCommand,
    LogoutCommand,
    IdCommand,
    StartTLSCommand,
    AuthenticateCommand,
    LoginCommand,
    EnableCommand,
    CompressCommand,
    SelectCommand,
    ExamineCommand,
    CreateCommand,
    DeleteCommand,
    RenameCommand,
    SubscribeCommand,
    UnsubscribeCommand,
    ListCommand,
    LsubCommand,
    NamespaceCommand,
    StatusCommand,
    AppendCommand,
    IdleCommand,
    GetQuotaCommand,
    GetQuotaRootCommand,
    SetQuotaCommand,
    CheckCommand,
    CloseCommand,
    UnselectCommand,
    ExpungeCommand,
    SearchCommand,
    FetchCommand,
    StoreCommand,
    CopyCommand,
    MoveCommand,
    SortCommand,
    ThreadCommand,
)
