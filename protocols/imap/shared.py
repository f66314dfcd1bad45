"""State every IMAP session of one server process shares: \\Recent claims and the
metadata cache.

Both hang off the :class:`~store.Store` the service hands to each connection (one store
per process), through :func:`shared_state`; nothing here is per session, so an idle session
costs only its own few objects.

\\Recent (RFC 3501 2.3.2): "the first session to be notified of a message" sees it as
recent, and no other. :class:`RecentClaims` keeps, per folder (and UIDVALIDITY), the
highest UID some session has claimed; a session that selects the folder or learns of new
messages claims everything above it. The claim is in memory: messages delivered while the
server was down, or before it started, are not recent (their internal date is older than
the process), which keeps a 100k-message folder from appearing 100k-fold recent after a
restart. IMAP4rev2 sessions never see \\Recent (RFC 9051 removed it) and claim nothing.

The claims are bounded: only a claim that took a message is kept (a folder with nothing
new since the process started needs no entry), one entry per folder (a new UIDVALIDITY
replaces it), an entry goes when its folder is deleted, and at most MAX_RECENT_CLAIMS
folders are remembered, least recently used forgotten first. Forgetting a claim must not
make its messages recent a second time, so an eviction moves the "older than the process"
cutoff to the moment of the eviction (for folders without a claim, what arrived before it
is old) and bumps an epoch: a claim based on what a session knew before the eviction, for
a folder that now has no entry, is refused. Under that pressure some messages are recent
to no session; none is recent to two.

:class:`MetadataCache` keeps, per folder, what FETCH ENVELOPE and header SEARCH read for
every message: the rendered ENVELOPE and the decoded address and subject fields. The store
parses metadata once per message, but decoding its cache record costs tens of
microseconds, which over 100,000 messages is seconds; this cache (bounded in bytes, least
recently used folders evicted first) makes the second and later requests cost a dict
lookup per message, as Dovecot's index cache does.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from store import Folder, MessageMetadata, Store, decode_words
from store.mime import Envelope

from . import responses as r

__all__ = [
    "DEFAULT_METADATA_CACHE_BYTES",
    "MAX_RECENT_CLAIMS",
    "Claim",
    "FolderKey",
    "ImapShared",
    "MetadataCache",
    "RecentClaims",
    "SearchFields",
    "shared_state",
]

# Bytes of rendered envelopes and search fields kept for all folders together. 100,000
# messages take about 60 MB; a mailbox server serving many large folders should raise it.
DEFAULT_METADATA_CACHE_BYTES: Final = 256 * 1024 * 1024
# Per-entry overhead estimate (dict slot, bytes and str object headers).
_ENTRY_OVERHEAD: Final = 200
# Metadata records decoded per store call while filling the cache.
_FILL_BATCH: Final = 2000
# Folders whose \Recent claim is remembered (about 250 bytes each). Folders get an entry
# only once a session claims a message that arrived after the process started, so this
# is the number of such folders in use at once; beyond it the least recently used is
# forgotten (module docstring).
MAX_RECENT_CLAIMS: Final = 50_000

FolderKey = tuple[str, str, int]  # (mailbox id, folder id, UIDVALIDITY)

# The field order inside a cached search string.
SEARCH_FIELDS: Final = ("from", "to", "cc", "bcc", "subject")


def _address_text(addresses: Sequence[object]) -> str:
    """An address header as SEARCH compares it: decoded display names and addr-specs."""
    out: list[str] = []
    for a in addresses:
        name = getattr(a, "name", None)
        mailbox = getattr(a, "mailbox", None)
        host = getattr(a, "host", None)
        if host is None:
            if mailbox is not None:
                out.append(f"{mailbox}:")  # group start
            continue
        spec = f"{mailbox}@{host}" if host else str(mailbox)
        out.append(f"{decode_words(name)} <{spec}>" if name else spec)
    return ", ".join(out)


@dataclass(frozen=True, slots=True)
class SearchFields:
    """Decoded From/To/Cc/Bcc/Subject of one message, case-folded for matching
    (RFC 9051 6.4.4 compares case-insensitively) and newline-joined (one object)."""

    text: str

    def get(self, name: str) -> str | None:
        try:
            index = SEARCH_FIELDS.index(name)
        except ValueError:
            return None
        return self.text.split("\n")[index]

    @classmethod
    def of(cls, meta: MessageMetadata) -> SearchFields:
        return cls.from_envelope(meta.envelope, meta.subject)

    @classmethod
    def from_envelope(cls, env: Envelope, subject: str) -> SearchFields:
        values = [
            _address_text(env.from_),
            _address_text(env.to),
            _address_text(env.cc),
            _address_text(env.bcc),
            subject,
        ]
        joined = "\n".join(v.replace("\n", " ").replace("\r", " ") for v in values)
        return cls(joined.casefold())


class _FolderEntries:
    __slots__ = ("envelopes", "search", "size")

    def __init__(self) -> None:
        self.envelopes: dict[int, bytes] = {}
        self.search: dict[int, str] = {}
        self.size = 0


class MetadataCache:
    """Rendered ENVELOPEs and search fields per folder, bounded in bytes (LRU by folder)."""

    def __init__(self, limit: int = DEFAULT_METADATA_CACHE_BYTES) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._folders: OrderedDict[tuple[FolderKey, bool], _FolderEntries] = OrderedDict()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def _entries(self, key: tuple[FolderKey, bool]) -> _FolderEntries:
        with self._lock:
            entries = self._folders.get(key)
            if entries is None:
                entries = self._folders[key] = _FolderEntries()
            self._folders.move_to_end(key)
            return entries

    def _account(self, entries: _FolderEntries, added: int) -> None:
        with self._lock:
            entries.size += added
            self._size += added
            while self._size > self.limit and len(self._folders) > 1:
                old_key, old = next(iter(self._folders.items()))
                if old is entries:
                    break
                del self._folders[old_key]
                self._size -= old.size

    def _fill(
        self,
        folder: Folder,
        key: FolderKey,
        utf8: bool,
        uids: Iterable[int],
        *,
        search: bool,
    ) -> _FolderEntries:
        """Make sure ``uids`` are cached (blocking: reads store metadata). Envelopes and
        search text are filled separately: a FETCH ENVELOPE need not pay for decoding
        every address for SEARCH, nor a SEARCH for rendering envelopes."""
        entries = self._entries((key, utf8))
        table: dict[int, bytes] | dict[int, str] = entries.search if search else entries.envelopes
        missing = [u for u in uids if u not in table]
        if entries.size > self.limit:
            entries = _FolderEntries()  # too big to keep: serve this request uncached
        memo: r.AddressMemo = {}
        for start in range(0, len(missing), _FILL_BATCH):
            batch = missing[start : start + _FILL_BATCH]
            added = 0
            for uid, (envelope, subject) in folder.envelopes(batch).items():
                # Search text is cheap next to reading the record (a tenth of it), so an
                # envelope fill keeps it too: a SEARCH after a FETCH ENVELOPE (a mail
                # program opening a folder) reads no record again. Not the other way
                # round: rendering envelopes costs as much as reading.
                if uid not in entries.search:
                    fields = SearchFields.from_envelope(envelope, subject).text
                    added += len(fields) + _ENTRY_OVERHEAD
                    entries.search[uid] = fields
                if not search and uid not in entries.envelopes:
                    # The store's envelope renders as it is (RFC 3501 7.4.2 defaults
                    # applied by r.envelope), repeated address lists once per fill.
                    env = r.envelope(envelope, utf8=utf8, memo=memo)
                    added += len(env) + _ENTRY_OVERHEAD
                    entries.envelopes[uid] = env
            self._account(entries, added)
        return entries

    def envelopes(
        self, folder: Folder, key: FolderKey, uids: Sequence[int], *, utf8: bool = False
    ) -> dict[int, bytes]:
        """Rendered ENVELOPEs of the UIDs that still exist (blocking)."""
        return self._fill(folder, key, utf8, uids, search=False).envelopes

    def search_fields(self, folder: Folder, key: FolderKey, uids: Sequence[int]) -> dict[int, str]:
        """Newline-joined decoded From/To/Cc/Bcc/Subject per UID (blocking)."""
        return self._fill(folder, key, False, uids, search=True).search

    def prune(self, key: FolderKey, live: Callable[[int], bool]) -> None:
        """Forget expunged messages of a folder (called after expunges)."""
        for utf8 in (False, True):
            with self._lock:
                entries = self._folders.get((key, utf8))
            if entries is None:
                continue
            gone = {u for u in (*entries.envelopes, *entries.search) if not live(u)}
            removed = 0
            for uid in gone:
                if (env := entries.envelopes.pop(uid, None)) is not None:
                    removed += len(env) + _ENTRY_OVERHEAD
                if (fields := entries.search.pop(uid, None)) is not None:
                    removed += len(fields) + _ENTRY_OVERHEAD
            self._account(entries, -removed)


class Claim(NamedTuple):
    """What :meth:`RecentClaims.claim` took: the UID range (None for nothing) and the
    epoch the caller's knowledge is valid in from now on (-1: none, see the docstring)."""

    uids: tuple[int, int] | None
    epoch: int


class RecentClaims:
    """Which UIDs have been claimed as \\Recent by some session (see module docstring)."""

    def __init__(
        self,
        started: float,
        *,
        limit: int = MAX_RECENT_CLAIMS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.started_ms = int(started * 1000)
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        # (mailbox id, folder id) -> (UIDVALIDITY, highest claimed UID), least recent first.
        self._claimed: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        self._epoch = 0
        self._evicted_ms = 0

    def __len__(self) -> int:
        return len(self._claimed)

    @property
    def epoch(self) -> int:
        """Bumped whenever a claim is forgotten for lack of room."""
        return self._epoch

    @property
    def cutoff_ms(self) -> int:
        """Messages with an internal date before this (ms since the epoch) are not recent
        in a folder without a claim: the process start, or the last eviction."""
        return max(self.started_ms, self._evicted_ms)

    def _entry(self, key: FolderKey) -> tuple[int, int] | None:
        entry = self._claimed.get((key[0], key[1]))
        if entry is None or entry[0] != key[2]:
            return None
        return entry

    def known(self, key: FolderKey) -> bool:
        with self._lock:
            return self._entry(key) is not None

    def last_claim(self, key: FolderKey) -> int | None:
        with self._lock:
            entry = self._entry(key)
            return entry[1] if entry is not None else None

    def claim(self, key: FolderKey, highest_uid: int, baseline: int, epoch: int) -> Claim:
        """Claim the UIDs above the last claim up to ``highest_uid``. ``baseline`` is the
        last claim as the caller knew it in ``epoch`` when this process has none (the
        highest UID older than :attr:`cutoff_ms`, or the caller's own last view)."""
        folder = (key[0], key[1])
        with self._lock:
            entry = self._claimed.get(folder)
            if entry is not None and entry[0] == key[2]:
                current = entry[1]
                self._claimed.move_to_end(folder)
            else:
                if entry is not None:
                    if entry[0] > key[2]:
                        # A session still on the folder's older UIDVALIDITY (RFC 3501
                        # 2.3.1.1 assigns a greater one on rebuild) must not replace the
                        # newer claim and make its UIDs recent again.
                        return Claim(None, -1)
                    del self._claimed[folder]  # a new UIDVALIDITY: the old claim is void
                if epoch != self._epoch:
                    # A claim was forgotten since ``baseline`` was taken: it may be below
                    # what some session already saw as recent.
                    return Claim(None, -1)
                current = baseline
            if highest_uid <= current:
                return Claim(None, self._epoch)
            self._claimed[folder] = (key[2], highest_uid)
            self._claimed.move_to_end(folder)
            while len(self._claimed) > self.limit:
                self._claimed.popitem(last=False)
                self._epoch += 1
                self._evicted_ms = int(self._clock() * 1000)
            return Claim((current + 1, highest_uid), self._epoch)

    def forget(self, mailbox_id: str, folder_id: str) -> None:
        """Drop the claim of a deleted folder (folder ids are never reused)."""
        with self._lock:
            self._claimed.pop((mailbox_id, folder_id), None)


class ImapShared:
    """The process-wide IMAP state: one per store."""

    def __init__(
        self,
        *,
        started: float,
        metadata_cache_bytes: int,
        recent_claims: int = MAX_RECENT_CLAIMS,
    ) -> None:
        self.recent = RecentClaims(started, limit=recent_claims)
        self.metadata = MetadataCache(metadata_cache_bytes)


_PROCESS_START: Final = time.time()
_REGISTRY: weakref.WeakKeyDictionary[Store, ImapShared] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def shared_state(store: Store, *, metadata_cache_bytes: int | None = None) -> ImapShared:
    """The :class:`ImapShared` of ``store`` (created on first use)."""
    with _REGISTRY_LOCK:
        state = _REGISTRY.get(store)
        if state is None:
            state = ImapShared(
                started=_PROCESS_START,
                metadata_cache_bytes=metadata_cache_bytes or DEFAULT_METADATA_CACHE_BYTES,
            )
            _REGISTRY[store] = state
        return state
