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
from typing import Final

from store import Folder, MessageMetadata, Store, decode_words
from store.mime import Envelope

from . import responses as r
from . import storemap

__all__ = [
    "DEFAULT_METADATA_CACHE_BYTES",
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
        for start in range(0, len(missing), _FILL_BATCH):
            batch = missing[start : start + _FILL_BATCH]
            added = 0
            for uid, (envelope, subject) in folder.envelopes(batch).items():
                if search:
                    fields = SearchFields.from_envelope(envelope, subject).text
                    if uid not in entries.search:
                        added += len(fields) + _ENTRY_OVERHEAD
                    entries.search[uid] = fields
                else:
                    env = r.envelope(storemap.envelope(envelope), utf8=utf8)
                    if uid not in entries.envelopes:
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


class RecentClaims:
    """Which UIDs have been claimed as \\Recent by some session (see module docstring)."""

    def __init__(self, started: float) -> None:
        self.started_ms = int(started * 1000)
        self._lock = threading.Lock()
        self._claimed: dict[FolderKey, int] = {}

    def known(self, key: FolderKey) -> bool:
        with self._lock:
            return key in self._claimed

    def last_claim(self, key: FolderKey) -> int | None:
        with self._lock:
            return self._claimed.get(key)

    def claim(self, key: FolderKey, highest_uid: int, baseline: int) -> tuple[int, int] | None:
        """Claim the UIDs above the last claim up to ``highest_uid``; returns the claimed
        range, or None. ``baseline`` is the last claim when this process has none yet (the
        highest UID older than the process)."""
        with self._lock:
            current = self._claimed.get(key, baseline)
            if highest_uid > current:
                self._claimed[key] = highest_uid
                return (current + 1, highest_uid)
            self._claimed[key] = current
            return None


class ImapShared:
    """The process-wide IMAP state: one per store."""

    def __init__(self, *, started: float, metadata_cache_bytes: int) -> None:
        self.recent = RecentClaims(started)
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
