"""The selected mailbox as one session sees it, and how it catches up with the store.

A session's view of its selected folder is the list of UIDs it has announced (sequence
number n is position n - 1), the highest MODSEQ it has reported, its \\Recent UIDs, and the
expunges it has learnt of but not yet been allowed to announce. Nothing else is kept: flags,
sizes and dates are read from a fresh store snapshot whenever a command needs them, so an
idle session on a 100,000-message folder holds 400 KB of UIDs and no more.

Catching up (RFC 3501 5.2, 7.4.1; RFC 7162 3.2.10) is driven by the change bus: the folder's
subscription only marks the view dirty; at the next point where untagged responses may be
sent, :meth:`SelectedFolder.compute_delta` asks the store what changed since the reported
MODSEQ (``Folder.changes_since``; a full snapshot comparison when the store no longer
remembers that far back or the bus overflowed), and :meth:`SelectedFolder.apply` turns the
answer into EXPUNGE/VANISHED, EXISTS, RECENT and FETCH FLAGS responses.

RFC 3501 7.4.1: EXPUNGE must not be sent while answering FETCH, STORE or SEARCH (sequence
numbers would shift under the client); those commands sync with ``allow_expunge=False`` and
the expunges wait in ``pending_expunge`` until a command that may carry them (NOOP, IDLE,
CHECK, UID commands, ...). A message that is gone but not yet announced is simply skipped by
FETCH (its data cannot be read any more).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from store import Changes, Folder, FolderSnapshot, MessageSummary

from . import responses as r
from . import storemap
from .shared import FolderKey, ImapShared

__all__ = ["Delta", "SelectedFolder", "ViewOptions", "format_ranges", "missing_ranges"]


@dataclass(frozen=True, slots=True)
class ViewOptions:
    """Session switches that change how updates are rendered."""

    condstore: bool = False  # RFC 7162 3.1: MODSEQ in unsolicited FETCH
    qresync: bool = False  # RFC 7162 3.2.10: VANISHED instead of EXPUNGE, UID in FETCH
    rev2: bool = False  # RFC 9051: no \Recent, no RECENT response
    utf8: bool = False


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed in the folder since the view's MODSEQ."""

    vanished: tuple[int, ...]
    added: tuple[MessageSummary, ...]
    changed: tuple[MessageSummary, ...]
    highestmodseq: int


def format_ranges(ranges: Iterable[tuple[int, int]]) -> bytes:
    return b",".join(str(a).encode() if a == b else f"{a}:{b}".encode() for a, b in ranges)


def missing_ranges(present: Sequence[int], first: int, last: int) -> list[tuple[int, int]]:
    """UID ranges in ``first..last`` not in ``present`` (ascending), as ranges."""
    out: list[tuple[int, int]] = []
    expected = first
    i = bisect.bisect_left(present, first)
    while i < len(present) and present[i] <= last:
        uid = present[i]
        if uid > expected:
            out.append((expected, uid - 1))
        expected = uid + 1
        i += 1
    if expected <= last:
        out.append((expected, last))
    return out


class SelectedFolder:
    """One session's view of its selected folder (see the module docstring)."""

    __slots__ = (
        "folder",
        "key",
        "modseq",
        "name",
        "pending_expunge",
        "readonly",
        "recent",
        "recent_epoch",
        "reported",
        "saved",
        "uids",
    )

    def __init__(
        self, folder: Folder, name: str, key: FolderKey, snapshot: FolderSnapshot, readonly: bool
    ) -> None:
        self.folder = folder
        self.name = name  # IMAP name, for STATUS of the selected mailbox and CLOSED
        self.key = key
        self.readonly = readonly
        self.uids = array("I", snapshot.uids)
        self.modseq = snapshot.highestmodseq
        self.recent: list[tuple[int, int]] = []  # UID ranges this session claimed
        # The RecentClaims epoch in which max_uid is a valid baseline for the next claim.
        self.recent_epoch = -1
        self.pending_expunge: set[int] = set()
        self.reported: dict[int, int] = {}  # uid -> modseq already sent by our own STORE
        self.saved: tuple[int, ...] = ()  # SEARCHRES "$" (RFC 5182), as UIDs

    @property
    def uidvalidity(self) -> int:
        return self.key[2]

    @property
    def exists(self) -> int:
        return len(self.uids)

    @property
    def max_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def seq_of(self, uid: int) -> int | None:
        pos = bisect.bisect_left(self.uids, uid)
        if pos < len(self.uids) and self.uids[pos] == uid:
            return pos + 1
        return None

    # --- \Recent --------------------------------------------------------------------------

    def claim_recent(self, shared: ImapShared, baseline: int, epoch: int) -> None:
        """Claim every UID above the folder's last claim (RFC 3501 2.3.2). EXAMINE shows
        them as recent but claims nothing (RFC 3501 6.3.2: no change to \\Recent).
        ``baseline`` is the last claim as known in RecentClaims ``epoch``."""
        if self.readonly:
            last = shared.recent.last_claim(self.key)
            first = (baseline if last is None else last) + 1
            if first <= self.max_uid:
                self.recent.append((first, self.max_uid))
            return
        claimed = shared.recent.claim(self.key, self.max_uid, baseline, epoch)
        self.recent_epoch = claimed.epoch
        if claimed.uids is not None:
            self.recent.append(claimed.uids)

    def is_recent(self, uid: int) -> bool:
        return any(lo <= uid <= hi for lo, hi in self.recent)

    def recent_count(self) -> int:
        total = 0
        for lo, hi in self.recent:
            total += bisect.bisect_right(self.uids, hi) - bisect.bisect_left(self.uids, lo)
        return total

    def flags_of(self, summary: MessageSummary, rev2: bool) -> tuple[str, ...]:
        names = storemap.flag_names(summary.flags, summary.keywords)
        if not rev2 and self.recent and self.is_recent(summary.uid):
            return (*names, "\\Recent")  # RFC 3501 2.3.2; removed in RFC 9051
        return names

    # --- catching up ----------------------------------------------------------------------

    def compute_delta(self, *, full: bool = False) -> Delta:
        """What changed since ``self.modseq`` (blocking: runs in a worker thread)."""
        changes: Changes | None = None
        if not full:
            changes = self.folder.changes_since(self.modseq)
            if not changes.complete:
                changes = None
        if changes is not None:
            top = self.max_uid
            added = tuple(sorted((s for s in changes.changed if s.uid > top), key=_uid))
            changed = tuple(s for s in changes.changed if s.uid <= top)
            view = self.uids
            vanished = tuple(u for u in changes.vanished if _contains(view, u))
            return Delta(vanished, added, changed, changes.highestmodseq)
        snap = self.folder.snapshot()
        top = self.max_uid
        vanished = tuple(u for u in self.uids if u not in snap)
        added_list: list[MessageSummary] = []
        changed_list: list[MessageSummary] = []
        for pos in range(len(snap)):
            uid = snap.uids[pos]
            if uid > top:
                added_list.append(snap.summary_at(pos))
            elif snap.modseq(uid) > self.modseq:
                changed_list.append(snap.summary_at(pos))
        return Delta(vanished, tuple(added_list), tuple(changed_list), snap.highestmodseq)

    def apply(
        self, delta: Delta, opts: ViewOptions, *, allow_expunge: bool, shared: ImapShared
    ) -> list[bytes]:
        """Fold ``delta`` into the view; the untagged responses announcing it."""
        out: list[bytes] = []
        self.pending_expunge.update(delta.vanished)
        if allow_expunge and self.pending_expunge:
            out += self.remove(sorted(self.pending_expunge), opts)
        top = self.max_uid
        new = [s.uid for s in delta.added if s.uid > top]
        if new:
            self.uids.extend(new)
            out.append(r.exists(len(self.uids)))  # RFC 3501 7.3.1
            if not opts.rev2:
                self.claim_recent(shared, top, self.recent_epoch)
                out.append(r.recent(self.recent_count()))  # RFC 3501 7.3.2
        for s in delta.changed:
            if s.uid in self.pending_expunge or self.reported.get(s.uid) == s.modseq:
                continue
            seq = self.seq_of(s.uid)
            if seq is None:
                continue
            out.append(self.flags_fetch(seq, s, opts))
        self.reported.clear()
        if delta.highestmodseq > self.modseq:
            self.modseq = delta.highestmodseq
        return out

    def flags_fetch(self, seq: int, s: MessageSummary, opts: ViewOptions) -> bytes:
        """An unsolicited ``* n FETCH (FLAGS ...)``; RFC 7162 3.2.4 wants UID with QRESYNC,
        3.1.4 MODSEQ with CONDSTORE."""
        items: list[tuple[bytes, bytes]] = []
        if opts.qresync:
            items.append((b"UID", str(s.uid).encode()))
        items.append((b"FLAGS", r.flag_list(self.flags_of(s, opts.rev2))))
        if opts.condstore:
            items.append((b"MODSEQ", b"(" + str(s.modseq).encode() + b")"))
        return r.fetch(seq, items)

    def remove(self, uids: Sequence[int], opts: ViewOptions) -> list[bytes]:
        """Drop expunged UIDs (ascending) from the view; EXPUNGE or VANISHED responses."""
        gone = [u for u in uids if _contains(self.uids, u)]
        self.pending_expunge.difference_update(uids)
        if not gone:
            return []
        if opts.qresync:
            out = [r.vanished(gone)]  # RFC 7162 3.2.10
        else:
            # Highest first: each number is then valid at the moment it is sent.
            positions = [bisect.bisect_left(self.uids, u) for u in gone]
            out = [r.expunge(pos + 1) for pos in reversed(positions)]
        gone_set = set(gone)
        if len(gone) == 1:
            del self.uids[bisect.bisect_left(self.uids, gone[0])]
        else:
            self.uids = array("I", (u for u in self.uids if u not in gone_set))
        return out


def _uid(s: MessageSummary) -> int:
    return s.uid


def _contains(values: Sequence[int], uid: int) -> bool:
    pos = bisect.bisect_left(values, uid)
    return pos < len(values) and values[pos] == uid
