"""The search key tree (RFC 3501 6.4.4, RFC 9051 6.4.4 and the extensions we serve).

The parser builds these; :mod:`protocols.imap.evaluate` runs them over neutral message
records; the serializer writes them back. Keys the RFC defines as shorthands keep their
own node when the meaning differs per protocol revision (RECENT, NEW, OLD exist only in
IMAP4rev1) so the session can decide, and are otherwise mapped onto a few general nodes:
``SEEN``/``UNSEEN`` become :class:`FlagKey`, ``FROM``/``TO``/... become :class:`HeaderKey`.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from .sequence import SequenceSet

__all__ = [
    "AllKey",
    "AndKey",
    "BodyKey",
    "DateField",
    "DateKey",
    "DateOp",
    "FlagKey",
    "HeaderKey",
    "ModSeqKey",
    "NewKey",
    "NotKey",
    "OldKey",
    "OrKey",
    "RecentKey",
    "SaveDateSupportedKey",
    "SearchKey",
    "SequenceKey",
    "SizeKey",
    "TextKey",
    "iter_keys",
    "uses_modseq",
]


class DateField(enum.StrEnum):
    INTERNAL = "internal"  # BEFORE/ON/SINCE: the internal date
    SENT = "sent"  # SENTBEFORE/SENTON/SENTSINCE: the Date: header
    SAVED = "saved"  # SAVEDBEFORE/SAVEDON/SAVEDSINCE (RFC 8514)


class DateOp(enum.StrEnum):
    BEFORE = "before"
    ON = "on"
    SINCE = "since"


@dataclass(frozen=True, slots=True)
class AllKey:
    """ALL: every message."""


@dataclass(frozen=True, slots=True)
class FlagKey:
    """A flag or keyword is set (``present``) or not. ``flag`` is ``\\Seen`` or a keyword.

    ANSWERED/UNANSWERED, DELETED/UNDELETED, DRAFT/UNDRAFT, FLAGGED/UNFLAGGED, SEEN/UNSEEN,
    KEYWORD/UNKEYWORD.
    """

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class RecentKey:
    """RECENT (IMAP4rev1 only; RFC 9051 removed \\Recent)."""


@dataclass(frozen=True, slots=True)
class NewKey:
    """NEW = RECENT UNSEEN (IMAP4rev1 only)."""


@dataclass(frozen=True, slots=True)
class OldKey:
    """OLD = NOT RECENT (IMAP4rev1 only)."""


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """``field`` contains ``value`` (case-insensitive substring).

    BCC, CC, FROM, SUBJECT, TO and HEADER. ``field`` is kept lower-case. An empty value
    matches every message that has the field (RFC 3501 6.4.4 HEADER).
    """

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class BodyKey:
    """BODY: the body (not the header) contains ``value``."""

    value: str


@dataclass(frozen=True, slots=True)
class TextKey:
    """TEXT: the header or the body contains ``value``."""

    value: str


@dataclass(frozen=True, slots=True)
class DateKey:
    """Date comparisons, disregarding time and time zone (RFC 3501 6.4.4)."""

    field: DateField
    op: DateOp
    date: dt.date


@dataclass(frozen=True, slots=True)
class SizeKey:
    """LARGER n (``larger=True``) or SMALLER n, on RFC822.SIZE."""

    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SequenceKey:
    """A bare sequence set (message numbers) or ``UID set``; may be ``$`` (RFC 5182)."""

    sequence: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """MODSEQ [entry type] n (RFC 7162 3.1.5): messages with mod-sequence >= ``modseq``.

    The entry name and type are kept for the serializer; per-flag mod-sequences are not
    tracked, so evaluation uses the message's mod-sequence (as Dovecot does).
    """

    modseq: int
    entry_name: str | None = None
    entry_type: str | None = None


@dataclass(frozen=True, slots=True)
class SaveDateSupportedKey:
    """SAVEDATESUPPORTED (RFC 8514 4.2): the mailbox keeps save dates."""


@dataclass(frozen=True, slots=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class AndKey:
    """A parenthesised group, and the implicit AND of the top-level key list."""

    keys: tuple[SearchKey, ...]


SearchKey = (
    AllKey
    | FlagKey
    | RecentKey
    | NewKey
    | OldKey
    | HeaderKey
    | BodyKey
    | TextKey
    | DateKey
    | SizeKey
    | SequenceKey
    | ModSeqKey
    | SaveDateSupportedKey
    | NotKey
    | OrKey
    | AndKey
)


def iter_keys(key: SearchKey) -> list[SearchKey]:
    """Every node of the tree, parents first (iterative: trees may be deep)."""
    out: list[SearchKey] = []
    stack: list[SearchKey] = [key]
    while stack:
        node = stack.pop()
        out.append(node)
        if isinstance(node, NotKey):
            stack.append(node.key)
        elif isinstance(node, OrKey):
            stack.extend((node.right, node.left))
        elif isinstance(node, AndKey):
            stack.extend(reversed(node.keys))
    return out


def uses_modseq(key: SearchKey) -> bool:
    """RFC 7162 3.1.5: a SEARCH using MODSEQ answers with ``(MODSEQ n)``."""
    return any(isinstance(k, ModSeqKey) for k in iter_keys(key))
