"""The values the store hands to its callers (all immutable)."""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from .errors import StoreError
from .flags import SEEN_BIT, Flag, bits_to_flags


class FolderKind(StrEnum):
    """What a folder holds; EAS maps it (with the role) to its folder type numbers."""

    MAIL = "mail"
    CALENDAR = "calendar"
    CONTACTS = "contacts"
    TASKS = "tasks"
    NOTES = "notes"


class SpecialUse(StrEnum):
    """RFC 6154 special-use roles (and INBOX), as IMAP LIST and EAS default folders need."""

    INBOX = "inbox"
    SENT = "sent"
    DRAFTS = "drafts"
    TRASH = "trash"
    JUNK = "junk"
    ARCHIVE = "archive"


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """A folder as listed: its persistent `id` survives renames (EAS ServerId)."""

    id: str
    name: str
    kind: FolderKind
    role: SpecialUse | None
    subscribed: bool
    default: bool  # created with the mailbox; cannot be deleted or renamed

    @property
    def parent(self) -> str | None:
        head, sep, _ = self.name.rpartition("/")
        return head if sep else None

    @property
    def leaf(self) -> str:
        return self.name.rpartition("/")[2]


def _datetime_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class MessageSummary:
    """The hot per-message state: what SELECT, FETCH FLAGS and EAS Sync need."""

    uid: int
    flags: frozenset[Flag]
    keywords: frozenset[str]
    modseq: int
    size: int
    # Milliseconds since the epoch, as the index keeps them: the datetimes are made only
    # when asked for (a FETCH of 1,000 bodies needs neither).
    internal_date_ms: int
    save_date_ms: int | None = None  # RFC 8514: when it was saved into this folder

    @property
    def internal_date(self) -> datetime:
        return _datetime_ms(self.internal_date_ms)

    @property
    def save_date(self) -> datetime | None:
        return None if self.save_date_ms is None else _datetime_ms(self.save_date_ms)


class FolderSnapshot:
    """A folder's UIDs, flags, keywords and MODSEQs at one moment (arrays, cheap to keep).

    Position i (0-based) is IMAP message sequence number i + 1. The snapshot does not
    change when the folder does; take a new one (or apply `Folder.changes_since`).
    """

    __slots__ = (
        "_dates",
        "_flags",
        "_keywords",
        "_modseqs",
        "_saved",
        "_sizes",
        "folder_id",
        "highestmodseq",
        "uidnext",
        "uids",
        "uidvalidity",
    )

    def __init__(
        self,
        *,
        folder_id: str,
        uidvalidity: int,
        uidnext: int,
        highestmodseq: int,
        uids: array[int],
        flags: array[int],
        modseqs: array[int],
        sizes: array[int],
        dates: array[int],
        keywords: dict[int, frozenset[str]],
        saved: array[int] | None = None,
    ) -> None:
        self.folder_id = folder_id
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.highestmodseq = highestmodseq
        self.uids = uids
        self._flags = flags
        self._modseqs = modseqs
        self._sizes = sizes
        self._dates = dates
        self._saved = saved if saved is not None else dates
        self._keywords = keywords

    def __len__(self) -> int:
        return len(self.uids)

    # Read-only columns by position (0-based), for readers that walk a whole folder
    # (IMAP `UID FETCH 1:* (FLAGS)`): a bisect per UID costs more than the answer.
    @property
    def flag_bits(self) -> Sequence[int]:
        """Flag bits per position (store.flags.bits_to_flags decodes them)."""
        return self._flags

    @property
    def modseqs(self) -> Sequence[int]:
        return self._modseqs

    @property
    def sizes(self) -> Sequence[int]:
        return self._sizes

    @property
    def keywords_by_uid(self) -> Mapping[int, frozenset[str]]:
        """Keywords of the messages that have any."""
        return self._keywords

    def __contains__(self, uid: object) -> bool:
        return isinstance(uid, int) and self.index_of(uid) is not None

    def index_of(self, uid: int) -> int | None:
        """0-based position of `uid` (its sequence number minus one), or None."""
        pos = bisect.bisect_left(self.uids, uid)
        if pos < len(self.uids) and self.uids[pos] == uid:
            return pos
        return None

    def _pos(self, uid: int) -> int:
        pos = self.index_of(uid)
        if pos is None:
            raise KeyError(uid)
        return pos

    def flags(self, uid: int) -> frozenset[Flag]:
        return bits_to_flags(self._flags[self._pos(uid)])

    def keywords(self, uid: int) -> frozenset[str]:
        self._pos(uid)
        return self._keywords.get(uid, frozenset())

    def modseq(self, uid: int) -> int:
        return self._modseqs[self._pos(uid)]

    def size(self, uid: int) -> int:
        return self._sizes[self._pos(uid)]

    def summary_at(self, pos: int) -> MessageSummary:
        uid = self.uids[pos]
        return MessageSummary(
            uid=uid,
            flags=bits_to_flags(self._flags[pos]),
            keywords=self._keywords.get(uid, frozenset()),
            modseq=self._modseqs[pos],
            size=self._sizes[pos],
            internal_date_ms=self._dates[pos],
            save_date_ms=self._saved[pos],
        )

    def summary(self, uid: int) -> MessageSummary:
        return self.summary_at(self._pos(uid))

    def __iter__(self) -> Iterator[MessageSummary]:
        for pos in range(len(self.uids)):
            yield self.summary_at(pos)

    @property
    def total_size(self) -> int:
        return sum(self._sizes)

    @property
    def unseen(self) -> int:
        return sum(1 for bits in self._flags if not bits & SEEN_BIT)


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """IMAP STATUS figures (RFC 3501 6.3.10, RFC 7162 HIGHESTMODSEQ, RFC 8438 SIZE)."""

    messages: int
    unseen: int
    uidnext: int
    uidvalidity: int
    highestmodseq: int
    size: int


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a folder after a MODSEQ (CONDSTORE/QRESYNC, EAS Sync).

    `changed` holds every message whose MODSEQ is greater (new ones and ones whose flags
    changed); `vanished` the UIDs expunged since. `complete` is False when `since` is older
    than the oldest expunge the folder still remembers (the caller must then resync fully).
    """

    highestmodseq: int
    changed: tuple[MessageSummary, ...]
    vanished: tuple[int, ...]
    complete: bool


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """The result of `Folder.store_flags`.

    `changed` is the new state of every message whose flags changed (all with MODSEQ
    `modseq`); `failed` the UIDs whose MODSEQ was above `unchanged_since` (RFC 7162 3.2
    MODIFIED); `modseq` is None when nothing changed.
    """

    modseq: int | None
    changed: tuple[MessageSummary, ...]
    failed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AppendResult:
    folder_id: str
    uidvalidity: int
    uid: int
    modseq: int


@dataclass(frozen=True, slots=True)
class CopyResult:
    """UID map of a copy or move (RFC 4315 COPYUID, RFC 6851 MOVE), in source UID order."""

    uidvalidity: int
    mapping: tuple[tuple[int, int], ...]

    @property
    def source_uids(self) -> tuple[int, ...]:
        return tuple(src for src, _ in self.mapping)

    @property
    def dest_uids(self) -> tuple[int, ...]:
        return tuple(dst for _, dst in self.mapping)

    def as_dict(self) -> dict[int, int]:
        return dict(self.mapping)


@dataclass(frozen=True, slots=True)
class ExpungeResult:
    uids: tuple[int, ...]
    modseq: int | None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of a delivery for one mailbox; SMTP replies per recipient from these."""

    mailbox_id: str
    folder_id: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None
    modseq: int | None = None
    error: StoreError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Quota:
    """Storage use of a mailbox in bytes (RFC 9208 STORAGE is in units of 1024 octets)."""

    usage: int
    limit: int | None

    @property
    def exceeded(self) -> bool:
        return self.limit is not None and self.usage > self.limit
