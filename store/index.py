"""One folder's index: the hot state in columns, a journal of changes, a metadata cache.

Files in the folder's maildir directory (Inbox: the mailbox directory itself)::

    cur/ new/ tmp/          the messages (maildir); the truth
    mailhost.folder         folder id, UIDVALIDITY, UIDNEXT/MODSEQ floors (rarely written)
    mailhost.index          compacted hot state: UIDs, flags, keywords, MODSEQs, sizes,
                            internal dates, expunge history (one msgpack map, crc32)
    mailhost.journal        transactions since that index, appended and fsynced
    mailhost.cache          per-message metadata records, appended, never fsynced
    mailhost.lock           flock(2) target serialising writers across processes
    dovecot-keywords        keyword letters a-z used in file names (Dovecot's format)

Message files are named ``<unique>,S=<size>,U=<uid>`` in new/ and
``<unique>,S=<size>,U=<uid>:2,<flags>`` in cur/ (flags: maildir letters DFPRST, then keyword
letters). Carrying the UID in the name means a lost or damaged index is rebuilt with the
same UIDs and the same UIDVALIDITY; only when ``mailhost.folder`` is lost too does the
folder get a new UIDVALIDITY.

Opening a folder reads ``mailhost.index`` (arrays loaded with one ``frombytes`` each; a
100k-message folder opens in tens of milliseconds) and replays the journal. Per-message
metadata is in the separate cache file, read only for the UIDs asked for, like Dovecot's
dovecot.index vs dovecot.index.cache.

A change is one journal record (O(1)): a transaction with its MODSEQ, its operations, and
the mtimes of new/ and cur/ after it. A reader that sees the journal grow replays the new
records; one that sees it replaced (compaction by anyone) reloads. If the directories'
mtimes differ from the last recorded ones, another program touched the maildir and the
directories are scanned: unknown files are adopted (keeping a U= UID when it is above
every UID handed out), missing ones expunged, renamed ones' flags taken over. Because
directory mtimes tick coarsely, a foreign change in the same tick as one of ours can go
unnoticed until the next change of that directory or an explicit full sync
(`FolderIndex.rebuild` / `reindex`).

Durability: for a delivery the file is linked, the directory fsynced, then the journal
record written and fsynced; only then does the call return. A flag change renames the file
and then fsyncs the journal; on ext4 and XFS that fsync commits the rename as well (one
journal transaction), elsewhere a power failure may revert the file name, and the next
scan would take the old flags from it. An expunge unlinks, fsyncs the directory, then
writes the journal. A crash between file and journal leaves a state the next scan repairs.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import mmap
import os
import re
import struct
import sys
import threading
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from . import faults
from .clock import Clock
from .errors import (
    FolderNotFound,
    InvalidKeyword,
    MessageNotFound,
    PermanentFailure,
    StoreError,
    TemporaryFailure,
)
from .flags import (
    ALL_FLAG_BITS,
    SEEN_BIT,
    FlagBits,
    FlagMode,
    bits_to_flags,
    bits_to_letters,
    letters_to_bits,
)
from .fsutil import fsync_dir, link_or_copy, unique_name, unlink_quietly, write_atomically
from .limits import (
    JOURNAL_COMPACT_MIN_BYTES,
    MAILDIR_KEYWORD_LETTERS,
    MAX_EXPUNGE_HISTORY,
    MAX_KEYWORDS_PER_FOLDER,
    MAX_UID,
)
from .metadata import (
    MessageMetadata,
    build_metadata,
    envelope_from_record,
    from_record,
    to_record,
)
from .mime import Envelope
from .model import (
    Changes,
    FlagUpdate,
    FolderSnapshot,
    FolderStatus,
    MessageSummary,
)
from .records import HEADER, RecordError, decode_one, frame_obj, pack, scan, unpack

_T = TypeVar("_T")

INDEX_FILE = "mailhost.index"
JOURNAL_FILE = "mailhost.journal"
CACHE_FILE = "mailhost.cache"
LOCK_FILE = "mailhost.lock"
FOLDER_FILE = "mailhost.folder"
KEYWORDS_FILE = "dovecot-keywords"
MAILDIR_MARKER = "maildirfolder"  # maildir++: marks a subfolder directory

SCHEMA_VERSION = 1
_INDEX_MAGIC = b"MHINDEX1"
_CRC = struct.Struct("<I")
IN_NEW = 0x80  # flag-byte bit: the file is in new/ (no info suffix)
# mailhost.folder keeps UIDNEXT/HIGHESTMODSEQ floors that are always *ahead* of the truth:
# before a commit would pass them they are rewritten this far ahead. So even with index and
# journal both lost, a rebuild never hands out a UID or MODSEQ again (it may skip some).
HINT_UID_HEADROOM = 1000
HINT_MODSEQ_HEADROOM = 10_000
_NAME = re.compile(r"([^,:]+)((?:,[^,:]*)*)(?::2,([^:]*))?")
_UNSEEN_TABLE = bytes(0 if b & SEEN_BIT else 1 for b in range(256))

# A change as the index reports it: (kind, uids, modseq) with kind "added", "flags",
# "expunged", or ("resync", (), 0) when another process replaced the index wholesale.
Change = tuple[str, tuple[int, ...], int]


class IndexCorrupt(Exception):
    """The index file cannot be used; the folder is rebuilt from its maildir files."""


@dataclass(frozen=True, slots=True)
class ParsedName:
    key: str
    uid: int | None
    size: int | None
    info: str | None  # maildir "2," info letters; None for a name without info


def parse_file_name(name: str) -> ParsedName | None:
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    key, fields, info = match.groups()
    uid = size = None
    for item in fields.split(",")[1:]:
        tag, _, value = item.partition("=")
        if tag == "U" and value.isdigit() and len(value) <= 10:
            uid = int(value)
        elif tag == "S" and value.isdigit() and len(value) <= 15:
            size = int(value)
    return ParsedName(key, uid, size, info)


def file_name(key: str, size: int, uid: int, info: str | None) -> str:
    base = f"{key},S={size},U={uid}"
    return base if info is None else f"{base}:2,{info}"


@dataclass(slots=True)
class Prepared:
    """A message ready to be linked into a folder: its file (fsynced) and parsed metadata."""

    source: str | Path
    size: int
    metadata: dict[str, Any]
    flags: FlagBits
    keywords: tuple[str, ...]
    internal_date_ms: int


@dataclass(slots=True)
class Exported:
    """A message as copied out of a folder (see `FolderIndex.export`)."""

    uid: int
    path: Path
    size: int
    flags: FlagBits
    keywords: tuple[str, ...]
    internal_date_ms: int
    metadata: dict[str, Any] | None


class _State:
    """The hot index in memory, as columns sorted by UID."""

    __slots__ = (
        "cache",
        "cache_records",
        "dates",
        "exp_modseqs",
        "exp_uids",
        "flags",
        "highestmodseq",
        "keys",
        "keyword_ids",
        "keyword_table",
        "keywords",
        "modseqs",
        "mtimes",
        "saved",
        "sizes",
        "total_size",
        "uidnext",
        "uids",
        "uidvalidity",
        "unseen",
        "vanished_floor",
    )

    def __init__(self, uidvalidity: int) -> None:
        self.uidvalidity = uidvalidity
        self.uidnext = 1
        self.highestmodseq = 1
        self.vanished_floor = 0
        self.uids: array[int] = array("Q")
        self.modseqs: array[int] = array("Q")
        self.flags: array[int] = array("B")
        self.sizes: array[int] = array("Q")
        self.dates: array[int] = array("q")
        # When each message was saved into this folder (RFC 8514 SAVEDATE), ms since epoch.
        self.saved: array[int] = array("q")
        self.cache: array[int] = array("q")
        self.keys: list[str] = []
        self.keywords: dict[int, frozenset[str]] = {}
        self.keyword_table: list[str] = []
        self.keyword_ids: dict[str, int] = {}
        self.exp_uids: array[int] = array("Q")
        self.exp_modseqs: array[int] = array("Q")
        self.total_size = 0
        self.unseen = 0
        self.mtimes: tuple[int, int] = (0, 0)
        self.cache_records = 0

    def find(self, uid: int) -> int | None:
        pos = bisect.bisect_left(self.uids, uid)
        if pos < len(self.uids) and self.uids[pos] == uid:
            return pos
        return None

    def add_keyword_names(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.keyword_ids:
                self.keyword_ids[name] = len(self.keyword_table)
                self.keyword_table.append(name)

    # --- transactions -------------------------------------------------------------------

    def apply(self, txn: dict[str, Any]) -> list[Change]:
        ms: int = txn.get("ms") or 0
        added: list[int] = []
        changed: list[int] = []
        expunged: list[int] = []
        for op in txn["ops"]:
            kind = op["op"]
            if kind == "add":
                if self._add(op, ms):
                    added.append(op["uid"])
            elif kind == "flags":
                if self._set_flags(op, ms):
                    changed.append(op["uid"])
            elif kind == "expunge":
                expunged.extend(self._expunge(op["uids"], ms))
            elif kind == "loc":
                pos = self.find(op["uid"])
                if pos is not None:
                    self.flags[pos] = (self.flags[pos] & ALL_FLAG_BITS) | (
                        IN_NEW if op["new"] else 0
                    )
            elif kind == "kwdef":
                self.add_keyword_names(op["names"])
            elif kind == "cache":
                pos = self.find(op["uid"])
                if pos is not None:
                    self.cache[pos] = op["co"]
        if ms:
            self.highestmodseq = max(self.highestmodseq, ms)
        if "mt" in txn:
            self.mtimes = (txn["mt"][0], txn["mt"][1])
        self.cache_records += txn.get("cr", 0)
        out: list[Change] = []
        if added:
            out.append(("added", tuple(added), ms))
        if changed:
            out.append(("flags", tuple(changed), ms))
        if expunged:
            out.append(("expunged", tuple(expunged), ms))
        return out

    def _add(self, op: dict[str, Any], ms: int) -> bool:
        uid: int = op["uid"]
        self.uidnext = max(self.uidnext, uid + 1)
        pos = bisect.bisect_left(self.uids, uid)
        if pos < len(self.uids) and self.uids[pos] == uid:
            return False  # already there (a replayed record); keep the first
        bits = letters_to_bits(op["flags"]) | (IN_NEW if op.get("new") else 0)
        kws: list[str] = op.get("kw") or []
        self.add_keyword_names(kws)
        if pos == len(self.uids):
            self.uids.append(uid)
            self.modseqs.append(ms)
            self.flags.append(bits)
            self.sizes.append(op["size"])
            self.dates.append(op["date"])
            self.saved.append(op.get("saved", op["date"]))
            self.cache.append(op.get("co", -1))
            self.keys.append(op["key"])
        else:
            self.uids.insert(pos, uid)
            self.modseqs.insert(pos, ms)
            self.flags.insert(pos, bits)
            self.sizes.insert(pos, op["size"])
            self.dates.insert(pos, op["date"])
            self.saved.insert(pos, op.get("saved", op["date"]))
            self.cache.insert(pos, op.get("co", -1))
            self.keys.insert(pos, op["key"])
        if kws:
            self.keywords[uid] = frozenset(kws)
        self.total_size += op["size"]
        if not bits & SEEN_BIT:
            self.unseen += 1
        return True

    def _set_flags(self, op: dict[str, Any], ms: int) -> bool:
        uid: int = op["uid"]
        pos = self.find(uid)
        if pos is None:
            return False
        old = self.flags[pos]
        bits = letters_to_bits(op["flags"]) | (IN_NEW if op.get("new") else 0)
        self.unseen += (0 if old & SEEN_BIT else -1) + (0 if bits & SEEN_BIT else 1)
        self.flags[pos] = bits
        kws: list[str] = op.get("kw") or []
        self.add_keyword_names(kws)
        if kws:
            self.keywords[uid] = frozenset(kws)
        else:
            self.keywords.pop(uid, None)
        if ms:
            self.modseqs[pos] = ms
        return True

    def _expunge(self, uids: Sequence[int], ms: int) -> list[int]:
        positions = sorted(p for p in (self.find(u) for u in set(uids)) if p is not None)
        if not positions:
            return []
        gone = [self.uids[p] for p in positions]
        for p in positions:
            self.total_size -= self.sizes[p]
            if not self.flags[p] & SEEN_BIT:
                self.unseen -= 1
        if len(positions) < 32:
            for p in reversed(positions):
                for column in (
                    self.uids,
                    self.modseqs,
                    self.flags,
                    self.sizes,
                    self.dates,
                    self.saved,
                ):
                    del column[p]
                del self.cache[p]
                del self.keys[p]
        else:
            drop = set(positions)
            keep = [i for i in range(len(self.uids)) if i not in drop]
            self.uids = array("Q", (self.uids[i] for i in keep))
            self.modseqs = array("Q", (self.modseqs[i] for i in keep))
            self.flags = array("B", (self.flags[i] for i in keep))
            self.sizes = array("Q", (self.sizes[i] for i in keep))
            self.dates = array("q", (self.dates[i] for i in keep))
            self.saved = array("q", (self.saved[i] for i in keep))
            self.cache = array("q", (self.cache[i] for i in keep))
            self.keys = [self.keys[i] for i in keep]
        for uid in gone:
            self.keywords.pop(uid, None)
            self.exp_uids.append(uid)
            self.exp_modseqs.append(ms)
        if len(self.exp_uids) > MAX_EXPUNGE_HISTORY:
            cut = len(self.exp_uids) - MAX_EXPUNGE_HISTORY // 2
            self.vanished_floor = max(self.vanished_floor, self.exp_modseqs[cut - 1])
            del self.exp_uids[:cut]
            del self.exp_modseqs[:cut]
        return gone

    # --- serialisation ------------------------------------------------------------------

    def encode(self, generation: int) -> bytes:
        kw_ids = self.keyword_ids
        payload = pack(
            {
                "v": SCHEMA_VERSION,
                "gen": generation,
                "byteorder": sys.byteorder,
                "uidvalidity": self.uidvalidity,
                "uidnext": self.uidnext,
                "hms": self.highestmodseq,
                "vfloor": self.vanished_floor,
                "mt": list(self.mtimes),
                "cr": self.cache_records,
                "uids": self.uids.tobytes(),
                "modseqs": self.modseqs.tobytes(),
                "flags": self.flags.tobytes(),
                "sizes": self.sizes.tobytes(),
                "dates": self.dates.tobytes(),
                "saved": self.saved.tobytes(),
                "cache": self.cache.tobytes(),
                "keys": self.keys,
                "kwtable": self.keyword_table,
                "kw": [[uid, sorted(kw_ids[k] for k in kws)] for uid, kws in self.keywords.items()],
                "exp_uids": self.exp_uids.tobytes(),
                "exp_modseqs": self.exp_modseqs.tobytes(),
            }
        )
        return _INDEX_MAGIC + _CRC.pack(zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, data: bytes) -> tuple[_State, int]:
        if len(data) < len(_INDEX_MAGIC) + _CRC.size or not data.startswith(_INDEX_MAGIC):
            raise IndexCorrupt("not an index file")
        (crc,) = _CRC.unpack_from(data, len(_INDEX_MAGIC))
        payload = memoryview(data)[len(_INDEX_MAGIC) + _CRC.size :]
        if zlib.crc32(payload) != crc:
            raise IndexCorrupt("index checksum mismatch")
        try:
            d = unpack(payload)
            if d["v"] != SCHEMA_VERSION:
                raise IndexCorrupt(f"index schema {d['v']} is not {SCHEMA_VERSION}")
            s = cls(d["uidvalidity"])
            s.uidnext = d["uidnext"]
            s.highestmodseq = d["hms"]
            s.vanished_floor = d["vfloor"]
            s.mtimes = (d["mt"][0], d["mt"][1])
            s.cache_records = d["cr"]
            for name in ("uids", "modseqs", "flags", "sizes", "dates", "cache"):
                getattr(s, name).frombytes(d[name])
            if "saved" in d:
                s.saved.frombytes(d["saved"])
            else:  # an index written before save dates were kept: the internal date
                s.saved = array("q", s.dates)
            s.exp_uids.frombytes(d["exp_uids"])
            s.exp_modseqs.frombytes(d["exp_modseqs"])
            if d["byteorder"] != sys.byteorder:
                for column in (s.uids, s.modseqs, s.sizes, s.dates, s.saved, s.cache):
                    column.byteswap()
                s.exp_uids.byteswap()
                s.exp_modseqs.byteswap()
            s.keys = d["keys"]
            s.keyword_table = d["kwtable"]
            s.keyword_ids = {name: i for i, name in enumerate(s.keyword_table)}
            table = s.keyword_table
            s.keywords = {uid: frozenset(table[i] for i in ids) for uid, ids in d["kw"]}
            n = len(s.uids)
            if not all(
                len(c) == n
                for c in (s.modseqs, s.flags, s.sizes, s.dates, s.saved, s.cache, s.keys)
            ) or (n and s.uids[-1] >= s.uidnext):
                raise IndexCorrupt("index columns disagree")
            s.total_size = sum(s.sizes)
            s.unseen = s.flags.tobytes().translate(_UNSEEN_TABLE).count(1)
            return s, d["gen"]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise IndexCorrupt(f"index unreadable: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _FolderFile:
    folder_id: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "id": self.folder_id,
                "uidvalidity": self.uidvalidity,
                "uidnext": self.uidnext,
                "hms": self.highestmodseq,
            }
        )


def read_folder_file(path: Path) -> _FolderFile | None:
    try:
        d = unpack((path / FOLDER_FILE).read_bytes())
        return _FolderFile(d["id"], d["uidvalidity"], d["uidnext"], d["hms"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        del exc
        return None


def read_keywords_file(path: Path) -> list[str]:
    """The keyword table prefix from dovecot-keywords ("<id> <name>" lines, ids from 0)."""
    try:
        text = (path / KEYWORDS_FILE).read_text("utf-8", errors="replace")
    except OSError:
        return []
    by_id: dict[int, str] = {}
    for line in text.splitlines():
        number, _, name = line.partition(" ")
        if number.isdigit() and name and int(number) < MAILDIR_KEYWORD_LETTERS:
            by_id[int(number)] = name
    table: list[str] = []
    while len(table) in by_id:
        table.append(by_id[len(table)])
    return table


def write_folder_file(
    path: Path, folder_id: str, uidvalidity: int, *, fsync: bool, uidnext: int = 1, hms: int = 1
) -> None:
    write_atomically(
        path / FOLDER_FILE,
        _FolderFile(folder_id, uidvalidity, uidnext, hms).encode(),
        fsync=fsync,
    )


def create_maildir(path: Path, *, subfolder: bool, fsync: bool) -> None:
    """mkdir the maildir (and cur/new/tmp) if missing."""
    path.mkdir(mode=0o700, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(mode=0o700, exist_ok=True)
    if subfolder:
        (path / MAILDIR_MARKER).touch(exist_ok=True)
    if fsync:
        fsync_dir(path)
        fsync_dir(path.parent)


# What an add returns per message: (uid, modseq, uidvalidity), all of the commit itself,
# so the caller needs no further read of the index (which could fail after the message is
# durable, and turn a stored message into an error the client retries).
Added = tuple[int, int, int]


class _AddRequest:
    """One caller's messages waiting in a group commit."""

    __slots__ = ("done", "error", "items", "leads", "result")

    def __init__(self, items: Sequence[Prepared]) -> None:
        self.items = items
        self.done = threading.Event()
        self.leads = False
        self.result: list[Added] | None = None
        self.error: BaseException | None = None

    def finish(self, result: list[Added] | None, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.done.set()

    def outcome(self) -> list[Added]:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class FolderIndex:
    """The index of one folder, shared by all users of that folder in this process.

    Thread-safe (an RLock) and process-safe (flock on ``mailhost.lock`` around every
    operation). All methods block on file I/O; async callers use ``trio.to_thread``.
    """

    def __init__(
        self,
        path: Path,
        *,
        folder_id: str,
        clock: Clock,
        host: str,
        fsync: bool,
        new_uidvalidity: Callable[[], int],
        resolve_path: Callable[[], Path],
        listener: Callable[[list[Change]], None] | None = None,
        compact_bytes: int = JOURNAL_COMPACT_MIN_BYTES,
    ) -> None:
        self.path = path
        self.folder_id = folder_id
        self._clock = clock
        self._host = host
        self._fsync = fsync
        self._new_uidvalidity = new_uidvalidity
        self._resolve_path = resolve_path
        self.listener = listener
        self._compact_bytes = compact_bytes
        self._tlock = threading.RLock()
        self._lock_fd: int | None = None
        self._lock_depth = 0
        self._state: _State | None = None
        self._generation = 0
        self._journal_fd: int | None = None
        self._journal_ino = 0
        self._journal_offset = 0
        self._index_size = 0
        self._cache_fd: int | None = None
        self._broken = False
        self._pending: list[Change] = []
        # Group commit of additions: requests that arrive while another thread commits
        # wait and are then committed together (one directory fsync, one journal fsync).
        self._adds_lock = threading.Lock()
        self._adds: list[_AddRequest] = []
        self._adds_leader = False
        self._hint = (1, 1)  # (UIDNEXT, HIGHESTMODSEQ) floors as last written

    # --- locking --------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[_State]:
        """Hold the folder (thread and file lock), caught up with disk; yields the state."""
        with self._tlock:
            outer = self._lock_depth == 0
            try:
                if outer:
                    self._acquire_file_lock()
                self._lock_depth += 1
                try:
                    state = self._catch_up()
                    yield state
                finally:
                    self._lock_depth -= 1
                    if outer and self._lock_fd is not None:
                        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                if outer and self._pending:
                    pending, self._pending = self._pending, []
                    if self.listener is not None:
                        self.listener(pending)

    def _acquire_file_lock(self) -> None:
        for _ in range(10):
            if self._lock_fd is None:
                try:
                    self._lock_fd = os.open(
                        self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                    )
                except FileNotFoundError:
                    self._relocate()
                    continue
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(self._lock_fd).st_ino == os.stat(f"{self.path}/{LOCK_FILE}").st_ino
            except FileNotFoundError:
                same = False
            if same:
                return
            # The folder was renamed or deleted while we waited: find it again.
            self._relocate()
        raise TemporaryFailure("folder keeps moving; try again")

    def _relocate(self) -> None:
        self._close_fds()
        self._state = None
        new_path = self._resolve_path()  # raises FolderNotFound if it is gone
        if not new_path.is_dir():
            raise FolderNotFound("folder directory is missing")
        self.path = new_path

    def _close_fds(self) -> None:
        for name in ("_lock_fd", "_journal_fd", "_cache_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    def __del__(self) -> None:
        # A folder deleted or renamed away is dropped by its mailbox without a close().
        with contextlib.suppress(Exception):
            self._close_fds()

    def set_path(self, path: Path) -> None:
        """The folder was renamed (by this process): point at its new directory."""
        with self._tlock:
            self.path = path

    def close(self) -> None:
        with self._tlock:
            self._close_fds()
            self._state = None

    # --- loading --------------------------------------------------------------------------

    def _catch_up(self) -> _State:
        state = self._state
        if state is None or self._broken or self._journal_fd is None:
            return self._load_full()
        try:
            st = os.stat(f"{self.path}/{JOURNAL_FILE}")
        except FileNotFoundError:
            return self._load_full()
        if st.st_ino != self._journal_ino or st.st_size < self._journal_offset:
            return self._load_full()
        if st.st_size > self._journal_offset:
            self._replay(state, st.st_size)
        if self._dir_mtimes() != state.mtimes:
            self._scan(state)
        return state

    def _replay(self, state: _State, size: int) -> None:
        assert self._journal_fd is not None
        data = os.pread(self._journal_fd, size - self._journal_offset, self._journal_offset)
        end = 0
        for _, record_end, payload in scan(data):
            try:
                txn = unpack(payload)
                changes = state.apply(txn)
            except (ValueError, KeyError, TypeError, IndexError):
                break
            self._pending.extend(changes)
            end = record_end
        if end < len(data):
            # A torn tail (a writer died mid-append): we hold the lock, so nobody is writing.
            os.ftruncate(self._journal_fd, self._journal_offset + end)
            if self._fsync:
                os.fsync(self._journal_fd)
            state.mtimes = (0, 0)  # lost records: let the directory scan repair what it can
        self._journal_offset += end

    def _load_full(self) -> _State:
        previous = self._state
        self._state = None
        for fd_name in ("_journal_fd", "_cache_fd"):
            fd = getattr(self, fd_name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, fd_name, None)
        self._broken = False
        self._cleanup_tmp()
        self._open_cache()
        info = read_folder_file(self.path)
        if info is not None:
            self._hint = (info.uidnext, info.highestmodseq)
        try:
            data = (self.path / INDEX_FILE).read_bytes()
            state, generation = _State.decode(data)
            self._index_size = len(data)
        except FileNotFoundError:
            state, generation = self._rebuild_state(), -1
        except IndexCorrupt:
            state, generation = self._rebuild_state(), -1
        if generation >= 0 and not self._open_journal(state, generation):
            state, generation = self._rebuild_state(), -1
        if generation < 0:
            self._write_fresh(state)
        self._state = state
        if self._dir_mtimes() != state.mtimes:
            self._scan(state)
        if previous is not None:
            self._pending.extend(_diff(previous, state))
        return state

    def _open_journal(self, state: _State, generation: int) -> bool:
        """Open and replay the journal of `generation`; False if the index must be rebuilt."""
        path = self.path / JOURNAL_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            self._reset_journal(generation)
            state.mtimes = (0, 0)
            return True
        st = os.fstat(fd)
        data = os.pread(fd, st.st_size, 0)
        records = scan(data)
        header = next(records, None)
        try:
            header_gen = unpack(header[2])["gen"] if header is not None else None
        except (ValueError, KeyError, TypeError):
            header_gen = None
        if header is None or header_gen is None:
            os.close(fd)
            self._reset_journal(generation)
            state.mtimes = (0, 0)
            return True
        if header_gen < generation:
            # A compaction wrote the index and died before replacing the journal: every
            # record in it is already in the index.
            os.close(fd)
            self._reset_journal(generation)
            return True
        if header_gen > generation:
            os.close(fd)
            return False
        end = header[1]
        for _, record_end, payload in records:
            try:
                state.apply(unpack(payload))
            except (ValueError, KeyError, TypeError, IndexError):
                break
            end = record_end
        if end < len(data):
            os.ftruncate(fd, end)
            if self._fsync:
                os.fsync(fd)
            state.mtimes = (0, 0)
        self._journal_fd = fd
        self._journal_ino = st.st_ino
        self._journal_offset = end
        self._generation = generation
        return True

    def _reset_journal(self, generation: int) -> None:
        write_atomically(
            self.path / JOURNAL_FILE,
            frame_obj({"v": SCHEMA_VERSION, "gen": generation}),
            fsync=self._fsync,
        )
        fd = os.open(self.path / JOURNAL_FILE, os.O_RDWR | os.O_CLOEXEC)
        st = os.fstat(fd)
        self._journal_fd = fd
        self._journal_ino = st.st_ino
        self._journal_offset = st.st_size
        self._generation = generation

    def _write_fresh(self, state: _State) -> None:
        """Persist a rebuilt or new state as index generation 1 + a fresh journal."""
        self._generation = max(self._generation, 0)
        self._compact(state, force_generation=self._generation + 1)

    def _open_cache(self) -> None:
        self._cache_fd = os.open(
            self.path / CACHE_FILE, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600
        )

    def _cleanup_tmp(self) -> None:
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.path):
                if ".tmp." in entry.name and entry.name.startswith("mailhost."):
                    unlink_quietly(Path(entry.path))

    def _dir_mtimes(self) -> tuple[int, int]:
        return (
            os.stat(f"{self.path}/new").st_mtime_ns,  # str paths: a commit makes four
            os.stat(f"{self.path}/cur").st_mtime_ns,
        )

    # --- rebuilding -----------------------------------------------------------------------

    def _rebuild_state(self) -> _State:
        """A state from the maildir files alone (plus the floors that survive elsewhere).

        UIDs come from the U= field of file names, UIDVALIDITY from mailhost.folder; only
        if that is gone does the folder get a new UIDVALIDITY (and every message a new UID).
        UIDNEXT and HIGHESTMODSEQ never go below what mailhost.folder or any readable
        journal record says, so no UID is ever handed out twice.
        """
        create_maildir(self.path, subfolder=False, fsync=False)
        info = read_folder_file(self.path)
        floor_uid, floor_ms = self._journal_floors()
        if info is None or info.folder_id != self.folder_id:
            uidvalidity = self._new_uidvalidity()
            write_folder_file(self.path, self.folder_id, uidvalidity, fsync=self._fsync)
            state = _State(uidvalidity)
            keep_uids = "none"
        else:
            state = _State(info.uidvalidity)
            state.uidnext = max(info.uidnext, floor_uid)
            keep_uids = "all"
        state.highestmodseq = max(info.highestmodseq if info else 1, floor_ms) + 1
        self._hint = (state.uidnext, state.highestmodseq)
        state.add_keyword_names(read_keywords_file(self.path))
        self._state = state
        self._scan(state, keep_uids=keep_uids, record=False)
        if state.uidnext > 1:
            # Expunges before now are forgotten: CONDSTORE/QRESYNC callers must resync.
            state.vanished_floor = state.highestmodseq
        return state

    def _journal_floors(self) -> tuple[int, int]:
        """Highest UID + 1 and highest MODSEQ in any readable journal record."""
        try:
            data = (self.path / JOURNAL_FILE).read_bytes()
        except OSError:
            return 1, 1
        uid_floor, ms_floor = 1, 1
        for _, _, payload in scan(data):
            try:
                txn = unpack(payload)
                ms_floor = max(ms_floor, txn.get("ms") or 0)
                for op in txn.get("ops", ()):
                    for uid in [op.get("uid", 0), *op.get("uids", ())]:
                        uid_floor = max(uid_floor, uid + 1)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
        return uid_floor, ms_floor

    def rebuild(self) -> None:
        """Forget the index and rebuild it from the maildir files (reindex)."""
        with self._tlock:
            self._acquire_file_lock()
            try:
                previous = self._state
                self._close_fds_keep_lock()
                for name in (INDEX_FILE, CACHE_FILE):
                    unlink_quietly(self.path / name)
                self._state = None
                self._open_cache()
                state = self._rebuild_state()
                self._write_fresh(state)
                self._state = state
                if previous is not None:
                    self._pending.extend(_diff(previous, state))
            finally:
                if self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                pending, self._pending = self._pending, []
                if pending and self.listener is not None:
                    self.listener(pending)

    def _close_fds_keep_lock(self) -> None:
        for name in ("_journal_fd", "_cache_fd"):
            fd = getattr(self, name)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, None)

    # --- directory scan -------------------------------------------------------------------

    def _scan(self, state: _State, *, keep_uids: str = "above", record: bool = True) -> None:
        """Reconcile the index with new/ and cur/ (see the module docstring)."""
        claimed: set[int] = set()
        unknown: list[tuple[Path, ParsedName, bool]] = []
        ops: list[dict[str, Any]] = []
        on_disk = read_keywords_file(self.path)
        known = state.keyword_table
        if len(on_disk) > len(known) and on_disk[: len(known)] == known[: len(on_disk)]:
            # Letters written by a transaction whose record was lost: learn them first,
            # in dovecot-keywords order, so ids and letters stay the same everywhere.
            ops.append({"op": "kwdef", "names": on_disk[len(known) :]})
            letters = on_disk
        else:
            letters = known[:MAILDIR_KEYWORD_LETTERS]
        for sub in ("new", "cur"):
            directory = self.path / sub
            for entry in os.scandir(directory):
                if entry.name.startswith("."):
                    continue
                parsed = parse_file_name(entry.name)
                if parsed is None:
                    continue
                in_new = sub == "new"
                pos = state.find(parsed.uid) if parsed.uid is not None else None
                if pos is not None and parsed.uid not in claimed and state.keys[pos] == parsed.key:
                    assert parsed.uid is not None
                    claimed.add(parsed.uid)
                    op = self._reconcile(state, pos, parsed, in_new, letters)
                    if op is not None:
                        ops.append(op)
                else:
                    unknown.append((Path(entry.path), parsed, in_new))
        missing = [uid for uid in state.uids if uid not in claimed]
        if missing:
            ops.append({"op": "expunge", "uids": missing})
        if unknown:
            ops.extend(self._adopt(state, unknown, keep_uids, letters))
        mtimes = self._dir_mtimes()
        if not ops:
            state.mtimes = mtimes
            return
        txn = {
            "v": SCHEMA_VERSION,
            "ms": state.highestmodseq + 1,
            "ops": ops,
            "mt": list(mtimes),
            "cr": sum(1 for op in ops if op["op"] == "add"),
        }
        if record:
            self._commit(state, txn)
        else:
            self._pending.extend(state.apply(txn))

    def _reconcile(
        self,
        state: _State,
        pos: int,
        parsed: ParsedName,
        in_new: bool,
        letters: list[str],
    ) -> dict[str, Any] | None:
        """An op taking over flags another program set by renaming, or None."""
        uid = state.uids[pos]
        current = state.flags[pos]
        if in_new:
            file_bits, file_letters = 0, ""
        else:
            info = parsed.info or ""
            file_bits = letters_to_bits(info)
            file_letters = "".join(c for c in info if "a" <= c <= "z")
        kws = state.keywords.get(uid, frozenset())
        index_letter_kws = {k for k in kws if state.keyword_ids[k] < MAILDIR_KEYWORD_LETTERS}
        file_kws = {
            letters[ord(c) - ord("a")] for c in file_letters if ord(c) - ord("a") < len(letters)
        }
        if file_bits == current & ALL_FLAG_BITS and file_kws == index_letter_kws:
            if bool(current & IN_NEW) != in_new:
                return {"op": "loc", "uid": uid, "new": in_new}
            return None
        new_kws = (set(kws) - index_letter_kws) | file_kws
        return {
            "op": "flags",
            "uid": uid,
            "flags": bits_to_letters(file_bits),
            "kw": sorted(new_kws),
            "new": in_new,
        }

    def _adopt(
        self,
        state: _State,
        unknown: list[tuple[Path, ParsedName, bool]],
        keep_uids: str,
        letters: list[str],
    ) -> list[dict[str, Any]]:
        """Give files nobody indexed a UID and our name format.

        `keep_uids`: "all" (a rebuild: the U= in names are the only record of the UIDs, keep
        every unique one), "above" (a live folder: keep U= only above every UID handed out,
        as left by a delivery whose journal record was lost), "none" (new UIDVALIDITY).
        """
        ops: list[dict[str, Any]] = []
        taken: set[int] = set()
        first_free = state.uidnext
        floor = 1 if keep_uids == "all" else first_free
        keepable = sorted(
            (
                p
                for p in unknown
                if keep_uids != "none" and p[1].uid is not None and p[1].uid >= floor
            ),
            key=lambda p: p[1].uid or 0,
        )
        rest = [p for p in unknown if p not in keepable]
        assignments: list[tuple[Path, ParsedName, bool, int]] = []
        for path, parsed, in_new in keepable:
            assert parsed.uid is not None
            if parsed.uid in taken or parsed.uid > MAX_UID:
                rest.append((path, parsed, in_new))
                continue
            taken.add(parsed.uid)
            assignments.append((path, parsed, in_new, parsed.uid))
        next_uid = max([first_free, *(u + 1 for u in taken)])
        for path, parsed, in_new in sorted(rest, key=lambda p: p[0].name):
            if next_uid > MAX_UID:
                break
            assignments.append((path, parsed, in_new, next_uid))
            next_uid += 1
        assignments.sort(key=lambda a: a[3])
        cache_items: list[tuple[int, dict[str, Any]]] = []
        staged: list[dict[str, Any]] = []
        for path, parsed, in_new, uid in assignments:
            try:
                st = os.stat(path)
                metadata = _parse_file(path)
            except OSError:
                continue
            info = None if in_new else (parsed.info or "")
            bits = letters_to_bits(info or "")
            file_letters = "".join(c for c in (info or "") if "a" <= c <= "z")
            table = letters
            kws = sorted(
                {table[ord(c) - ord("a")] for c in file_letters if ord(c) - ord("a") < len(table)}
            )
            key = parsed.key if parsed.uid == uid and ".." not in parsed.key else None
            key = key or unique_name(self._clock, self._host)
            target_info = None if in_new else bits_to_letters(bits) + file_letters
            target = path.parent / file_name(key, st.st_size, uid, target_info)
            if target != path:
                try:
                    os.link(path, target)
                except FileExistsError:
                    continue
                except OSError:
                    continue
                unlink_quietly(path)
            cache_items.append((uid, metadata))
            staged.append(
                {
                    "op": "add",
                    "uid": uid,
                    "key": key,
                    "size": st.st_size,
                    "date": int(st.st_mtime * 1000),
                    "saved": int(st.st_ctime * 1000),  # when it was linked in, as near as known
                    "flags": bits_to_letters(bits),
                    "kw": kws,
                    "new": in_new,
                }
            )
        if self._fsync and staged:
            fsync_dir(self.path / "new")
            fsync_dir(self.path / "cur")
        offsets = self._cache_append(cache_items) if self._cache_fd is not None else []
        for op, offset in zip(staged, offsets or [-1] * len(staged), strict=True):
            op["co"] = offset
            ops.append(op)
        return ops

    # --- writing --------------------------------------------------------------------------

    def _commit(self, state: _State, txn: dict[str, Any]) -> None:
        """Append one transaction to the journal, fsync, apply it. O(1) in folder size."""
        if self._journal_fd is None:
            raise TemporaryFailure("index journal is not open")
        self._raise_floors(state, txn)
        fd = self._journal_fd
        data = frame_obj(txn)
        offset = self._journal_offset
        try:
            if faults.active and len(data) > 1:
                half = len(data) // 2
                os.pwrite(fd, data[:half], offset)
                faults.reached("journal.torn")
                os.pwrite(fd, data[half:], offset + half)
            else:
                os.pwrite(fd, data, offset)
            faults.reached("journal.written")
            if self._fsync:
                os.fdatasync(fd)  # an append: data and the new size, which fdatasync covers
            faults.reached("journal.synced")
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
            self._broken = True  # reload from disk next time: the journal state is unknown
            raise
        self._journal_offset = offset + len(data)
        self._pending.extend(state.apply(txn))
        faults.reached("index.committed")
        if self._journal_offset > max(self._compact_bytes, self._index_size // 4):
            try:
                self._compact(state)
            except OSError:
                self._broken = True  # the commit stands; the next operation reloads

    def _raise_floors(self, state: _State, txn: dict[str, Any]) -> None:
        """Move the floors in mailhost.folder ahead before this transaction passes them."""
        uidnext = state.uidnext
        for op in txn["ops"]:
            if op["op"] == "add":
                uidnext = max(uidnext, op["uid"] + 1)
        modseq = max(state.highestmodseq, txn.get("ms") or 0)
        if uidnext <= self._hint[0] and modseq <= self._hint[1]:
            return
        self._write_floors(
            state,
            max(self._hint[0], min(uidnext + HINT_UID_HEADROOM, MAX_UID + 1)),
            max(self._hint[1], modseq + HINT_MODSEQ_HEADROOM),
        )

    def _write_floors(self, state: _State, uidnext: int, modseq: int) -> None:
        write_folder_file(
            self.path,
            self.folder_id,
            state.uidvalidity,
            fsync=self._fsync,
            uidnext=uidnext,
            hms=modseq,
        )
        self._hint = (uidnext, modseq)

    def _compact(self, state: _State, force_generation: int | None = None) -> None:
        """Write the whole state as a new index generation and start an empty journal."""
        generation = force_generation or self._generation + 1
        if state.cache_records > 2 * len(state.uids) + 1000 and self._cache_fd is not None:
            self._compact_cache(state)
        data = state.encode(generation)
        index_path = self.path / INDEX_FILE
        tmp = self.path / f"{INDEX_FILE}.tmp.{os.getpid()}"
        unlink_quietly(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        faults.reached("compact.snapshot_written")
        os.rename(tmp, index_path)
        faults.reached("compact.snapshot_renamed")
        if self._fsync:
            fsync_dir(self.path)
        if state.uidnext > self._hint[0] or state.highestmodseq > self._hint[1]:
            self._write_floors(
                state,
                max(self._hint[0], state.uidnext),
                max(self._hint[1], state.highestmodseq),
            )
        old_fd = self._journal_fd
        self._reset_journal(generation)
        if old_fd is not None:
            with contextlib.suppress(OSError):
                os.close(old_fd)
        self._index_size = len(data)
        faults.reached("compact.journal_reset")

    def _compact_cache(self, state: _State) -> None:
        """Rewrite the cache with live records only (offsets go into the next index)."""
        assert self._cache_fd is not None
        out = bytearray()
        offsets = array("q")
        for pos in range(len(state.uids)):
            record = self._cache_read_raw(state.uids[pos], state.cache[pos])
            if record is None:
                offsets.append(-1)
                continue
            offsets.append(len(out))
            out += frame_obj({"uid": state.uids[pos], "m": record})
        write_atomically(self.path / CACHE_FILE, bytes(out), fsync=self._fsync)
        os.close(self._cache_fd)
        self._cache_fd = None
        self._open_cache()
        state.cache = offsets
        state.cache_records = len(state.uids)

    def _cache_append(self, items: list[tuple[int, dict[str, Any]]]) -> list[int]:
        if not items or self._cache_fd is None:
            return [-1] * len(items)
        start = os.lseek(self._cache_fd, 0, os.SEEK_END)
        offsets = []
        chunks = []
        pos = start
        for uid, record in items:
            framed = frame_obj({"uid": uid, "m": record})
            offsets.append(pos)
            chunks.append(framed)
            pos += len(framed)
        os.write(self._cache_fd, b"".join(chunks))
        return offsets

    def _cache_read_raw(
        self, uid: int, offset: int, mapped: mmap.mmap | None = None
    ) -> dict[str, Any] | None:
        """The metadata record at `offset`; from `mapped` (the cache file mapped once for a
        batch of reads: no system call per record) when it reaches that far."""
        if offset < 0 or self._cache_fd is None:
            return None
        try:
            if mapped is not None and offset + HEADER.size <= len(mapped):
                _, length, _ = HEADER.unpack_from(mapped, offset)
                end = offset + HEADER.size + min(length, 1 << 26)
                if end <= len(mapped):
                    record = decode_one(mapped[offset:end])
                    return _metadata_of(record, uid)
            head = os.pread(self._cache_fd, HEADER.size, offset)
            if len(head) < HEADER.size:
                return None
            _, length, _ = HEADER.unpack(head)
            data = head + os.pread(self._cache_fd, min(length, 1 << 26), offset + HEADER.size)
            record = decode_one(data)
        except (OSError, RecordError, struct.error):
            return None
        return _metadata_of(record, uid)

    @contextlib.contextmanager
    def _cache_mapped(self) -> Iterator[mmap.mmap | None]:
        """The cache file mapped read-only, for many reads in a row (None: read per record)."""
        mapped = None
        if self._cache_fd is not None:
            with contextlib.suppress(OSError, ValueError):
                if os.fstat(self._cache_fd).st_size > 0:
                    mapped = mmap.mmap(self._cache_fd, 0, access=mmap.ACCESS_READ)
        try:
            yield mapped
        finally:
            if mapped is not None:
                mapped.close()

    # --- operations -----------------------------------------------------------------------

    def _keyword_plan(self, state: _State, names: Iterable[str]) -> dict[str, int]:
        """Keyword ids including new names (in the order `apply` will meet them).

        Checks the table has room and writes dovecot-keywords before any file name uses a
        new letter. The state itself is only changed by applying the committed record.
        """
        ids = dict(state.keyword_ids)
        new = []
        for name in names:
            if name not in ids:
                ids[name] = len(ids)
                new.append(name)
        if not new:
            return ids
        if len(ids) > MAX_KEYWORDS_PER_FOLDER:
            raise InvalidKeyword(f"a folder holds at most {MAX_KEYWORDS_PER_FOLDER} keywords")
        if len(state.keyword_table) < MAILDIR_KEYWORD_LETTERS:
            table = state.keyword_table + new
            lines = "".join(
                f"{i} {name}\n" for i, name in enumerate(table[:MAILDIR_KEYWORD_LETTERS])
            )
            write_atomically(self.path / KEYWORDS_FILE, lines.encode(), fsync=self._fsync)
        return ids

    def _info(
        self,
        state: _State,
        bits: FlagBits,
        keywords: Iterable[str],
        ids: dict[str, int] | None = None,
    ) -> str:
        table = state.keyword_ids if ids is None else ids
        letters = "".join(
            sorted(
                chr(ord("a") + table[k])
                for k in keywords
                if table.get(k, MAILDIR_KEYWORD_LETTERS) < MAILDIR_KEYWORD_LETTERS
            )
        )
        return bits_to_letters(bits) + letters

    def _path_at(self, state: _State, pos: int) -> Path:
        return Path(self._name_at(state, pos, f"{self.path}{os.sep}"))

    def _name_at(self, state: _State, pos: int, folder: str) -> str:
        """The file's path as a string under `folder` (which ends with a separator)."""
        uid = state.uids[pos]
        bits = state.flags[pos]
        key = state.keys[pos]
        size = state.sizes[pos]
        if bits & IN_NEW:
            return f"{folder}new{os.sep}{file_name(key, size, uid, None)}"
        info = self._info(state, bits & ALL_FLAG_BITS, state.keywords.get(uid, ()))
        return f"{folder}cur{os.sep}{file_name(key, size, uid, info)}"

    def add(self, items: Sequence[Prepared]) -> list[Added]:
        """Link prepared files in as new messages; [(uid, modseq, uidvalidity)] once durable.

        Concurrent callers are committed in groups: the first to arrive leads and commits
        everything queued by then in one transaction; the others wait for its result, and
        leadership passes to the next waiter. Each caller still returns only after its
        own messages are durable. A failing group is retried one request at a time, so
        one bad request cannot fail the others.
        """
        request = _AddRequest(items)
        with self._adds_lock:
            self._adds.append(request)
            leads = not self._adds_leader
            if leads:
                self._adds_leader = True
        if not leads:
            request.done.wait()
            if not request.leads:
                return request.outcome()
        while True:
            with self._adds_lock:
                group, self._adds = self._adds, []
            try:
                self._commit_group(group)
            except BaseException as exc:
                # Not an error of the messages (e.g. interpreter shutdown): nobody may be
                # left waiting for a leader that is gone.
                with self._adds_lock:
                    stranded, self._adds = group + self._adds, []
                    self._adds_leader = False
                for r in stranded:
                    if not r.done.is_set() or r.leads:
                        r.finish(None, exc)
                raise
            with self._adds_lock:
                if not self._adds:
                    self._adds_leader = False
                    break
                if request.done.is_set():
                    # Hand over: the next waiter leads; this caller returns now.
                    successor = self._adds[0]
                    successor.leads = True
                    successor.done.set()
                    break
        return request.outcome()

    def _commit_group(self, group: list[_AddRequest]) -> None:
        if len(group) > 1:
            results: list[Added] | None
            try:
                results = self._add_now([item for r in group for item in r.items])
            except Exception:
                results = None  # retried one request at a time below
            if results is not None:
                start = 0
                for r in group:
                    r.finish(results[start : start + len(r.items)], None)
                    start += len(r.items)
                return
        for r in group:
            try:
                r.finish(self._add_now(r.items), None)
            except BaseException as exc:  # re-raised in the caller's thread
                r.finish(None, exc)

    def _add_now(self, items: Sequence[Prepared]) -> list[Added]:
        with self.locked() as state:
            first = state.uidnext
            if first + len(items) - 1 > MAX_UID:
                raise PermanentFailure("the folder has used up its UIDs")  # RFC 3501 2.3.1.1
            ids = self._keyword_plan(
                state, [k for item in items for k in dict.fromkeys(item.keywords)]
            )
            linked: list[str] = []
            ops: list[dict[str, Any]] = []
            saved_ms = int(self._clock.now() * 1000)
            try:
                for i, item in enumerate(items):
                    uid = first + i
                    in_new = not item.flags and not item.keywords
                    info = None if in_new else self._info(state, item.flags, item.keywords, ids)
                    for _attempt in range(5):
                        key = unique_name(self._clock, self._host)
                        sub = "new" if in_new else "cur"
                        target = f"{self.path}/{sub}/{file_name(key, item.size, uid, info)}"
                        try:
                            link_or_copy(item.source, target, fsync=self._fsync)
                            break
                        except FileExistsError:
                            continue
                    else:
                        raise TemporaryFailure("could not find a unique file name")
                    linked.append(target)
                    faults.reached("index.linked")
                    ops.append(
                        {
                            "op": "add",
                            "uid": uid,
                            "key": key,
                            "size": item.size,
                            "date": item.internal_date_ms,
                            "saved": saved_ms,
                            "flags": bits_to_letters(item.flags),
                            "kw": list(dict.fromkeys(item.keywords)),
                            "new": in_new,
                        }
                    )
                if self._fsync:
                    fsync_dir(f"{self.path}/new")
                    if any(not op["new"] for op in ops):
                        fsync_dir(f"{self.path}/cur")
                faults.reached("index.dir_synced")
                offsets = self._cache_append(
                    [(op["uid"], item.metadata) for op, item in zip(ops, items, strict=True)]
                )
                for op, offset in zip(ops, offsets, strict=True):
                    op["co"] = offset
                faults.reached("index.cache_written")
                ms = state.highestmodseq + 1
                txn = {
                    "v": SCHEMA_VERSION,
                    "ms": ms,
                    "ops": ops,
                    "mt": list(self._dir_mtimes()),
                    "cr": len(ops),
                }
                self._commit(state, txn)
            except BaseException:
                for path in linked:
                    unlink_quietly(path)
                with contextlib.suppress(OSError):
                    if self._fsync and linked:
                        fsync_dir(self.path / "new")
                        fsync_dir(self.path / "cur")
                raise
            return [(op["uid"], ms, state.uidvalidity) for op in ops]

    def store_flags(
        self,
        uids: Iterable[int],
        mode: FlagMode,
        flags: FlagBits,
        keywords: Iterable[str] = (),
        *,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        kw_given = list(dict.fromkeys(keywords))
        with self.locked() as state:
            failed: list[int] = []
            plan: list[tuple[int, int, FlagBits, frozenset[str]]] = []
            for uid in sorted(set(uids)):
                pos = state.find(uid)
                if pos is None:
                    continue
                if unchanged_since is not None and state.modseqs[pos] > unchanged_since:
                    failed.append(uid)  # RFC 7162 3.2: MODIFIED
                    continue
                old_bits = state.flags[pos] & ALL_FLAG_BITS
                old_kws = state.keywords.get(uid, frozenset())
                if mode is FlagMode.ADD:
                    bits, kws = old_bits | flags, old_kws | frozenset(kw_given)
                elif mode is FlagMode.REMOVE:
                    bits, kws = old_bits & ~flags, old_kws - frozenset(kw_given)
                else:
                    bits, kws = flags, frozenset(kw_given)
                if bits == old_bits and kws == old_kws:
                    continue  # RFC 7162 3.2: no change, no new MODSEQ
                plan.append((uid, pos, bits, kws))
            if not plan:
                return FlagUpdate(None, (), tuple(failed))
            ids = self._keyword_plan(state, [k for _, _, _, kws in plan for k in sorted(kws)])
            ops = []
            for uid, pos, bits, kws in plan:
                source = self._path_at(state, pos)
                target = (
                    self.path
                    / "cur"
                    / file_name(
                        state.keys[pos], state.sizes[pos], uid, self._info(state, bits, kws, ids)
                    )
                )
                if source != target:
                    try:
                        os.rename(source, target)
                    except FileNotFoundError:
                        state.mtimes = (0, 0)  # someone else moved it; rescan next time
                faults.reached("flags.renamed")
                ops.append(
                    {
                        "op": "flags",
                        "uid": uid,
                        "flags": bits_to_letters(bits),
                        "kw": sorted(kws),
                        "new": False,
                    }
                )
            ms = state.highestmodseq + 1
            mtimes = self._dir_mtimes() if state.mtimes != (0, 0) else (0, 0)
            self._commit(state, {"v": SCHEMA_VERSION, "ms": ms, "ops": ops, "mt": list(mtimes)})
            changed = tuple(self._summary(state, state.find(uid)) for uid, _, _, _ in plan)
            return FlagUpdate(ms, changed, tuple(failed))

    def expunge(self, uids: Iterable[int]) -> tuple[tuple[int, ...], int | None]:
        with self.locked() as state:
            present = [u for u in sorted(set(uids)) if state.find(u) is not None]
            if not present:
                return (), None
            for uid in present:
                pos = state.find(uid)
                assert pos is not None
                unlink_quietly(self._path_at(state, pos))
            faults.reached("expunge.unlinked")
            if self._fsync:
                fsync_dir(self.path / "cur")
                fsync_dir(self.path / "new")
            ms = state.highestmodseq + 1
            txn = {
                "v": SCHEMA_VERSION,
                "ms": ms,
                "ops": [{"op": "expunge", "uids": present}],
                "mt": list(self._dir_mtimes()),
            }
            self._commit(state, txn)
            return tuple(present), ms

    def export(self, uids: Iterable[int]) -> list[Exported]:
        """What a copy needs of each present UID: file path, flags, metadata."""
        with self.locked() as state:
            out = []
            for uid in sorted(set(uids)):
                pos = state.find(uid)
                if pos is None:
                    continue
                out.append(
                    Exported(
                        uid=uid,
                        path=self._path_at(state, pos),
                        size=state.sizes[pos],
                        flags=state.flags[pos] & ALL_FLAG_BITS,
                        keywords=tuple(sorted(state.keywords.get(uid, ()))),
                        internal_date_ms=state.dates[pos],
                        metadata=self._cache_read_raw(uid, state.cache[pos]),
                    )
                )
            return out

    # --- reading --------------------------------------------------------------------------

    def _summary(self, state: _State, pos: int | None) -> MessageSummary:
        assert pos is not None
        uid = state.uids[pos]
        return MessageSummary(
            uid=uid,
            flags=bits_to_flags(state.flags[pos]),
            keywords=state.keywords.get(uid, frozenset()),
            modseq=state.modseqs[pos],
            size=state.sizes[pos],
            internal_date_ms=state.dates[pos],
        )

    def snapshot(self) -> FolderSnapshot:
        with self.locked() as state:
            return FolderSnapshot(
                folder_id=self.folder_id,
                uidvalidity=state.uidvalidity,
                uidnext=state.uidnext,
                highestmodseq=state.highestmodseq,
                uids=array("Q", state.uids),
                flags=array("B", state.flags),
                modseqs=array("Q", state.modseqs),
                sizes=array("Q", state.sizes),
                dates=array("q", state.dates),
                saved=array("q", state.saved),
                keywords=dict(state.keywords),
            )

    def status(self) -> FolderStatus:
        with self.locked() as state:
            return FolderStatus(
                messages=len(state.uids),
                unseen=state.unseen,
                uidnext=state.uidnext,
                uidvalidity=state.uidvalidity,
                highestmodseq=state.highestmodseq,
                size=state.total_size,
            )

    def total_size(self) -> int:
        with self.locked() as state:
            return state.total_size

    def changes_since(self, modseq: int) -> Changes:
        with self.locked() as state:
            changed = tuple(
                self._summary(state, pos) for pos, ms in enumerate(state.modseqs) if ms > modseq
            )
            start = bisect.bisect_right(state.exp_modseqs, modseq)
            vanished = tuple(sorted(state.exp_uids[start:]))
            return Changes(
                highestmodseq=state.highestmodseq,
                changed=changed,
                vanished=vanished,
                complete=modseq >= state.vanished_floor,
            )

    def message_path(self, uid: int) -> Path:
        with self.locked() as state:
            pos = state.find(uid)
            if pos is None:
                raise MessageNotFound(f"no message with UID {uid}")
            return self._path_at(state, pos)

    def message_paths(self, uids: Iterable[int]) -> dict[int, str]:
        """Where the files of `uids` are now, in one lock (UIDs no longer here left out);
        plain strings, cheap to build for thousands of messages."""
        with self.locked() as state:
            folder = f"{self.path}{os.sep}"
            found = {}
            for uid in uids:
                pos = state.find(uid)
                if pos is not None:
                    found[uid] = self._name_at(state, pos, folder)
            return found

    def open_message(self, uid: int) -> BinaryIO:
        """The message file opened for binary reading (the caller closes it)."""
        for attempt in range(2):
            path = self.message_path(uid)
            try:
                return open(path, "rb")
            except FileNotFoundError:
                if attempt:
                    break
                with self.locked() as state:
                    state.mtimes = (0, 0)  # renamed behind our back: rescan
        # Last resort: the name's flags disagree with the index; find it by its prefix.
        stem = path.name.split(":", 1)[0]
        for sub in ("cur", "new"):
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.path / sub):
                    if entry.name == stem or entry.name.startswith(stem + ":"):
                        return open(entry.path, "rb")
        raise MessageNotFound(f"the file of UID {uid} is gone")

    def metadata(self, uids: Iterable[int]) -> dict[int, MessageMetadata]:
        """Cached metadata for the present UIDs (reparsing files whose record is missing)."""
        return self._records(uids, from_record)

    def envelopes(self, uids: Iterable[int]) -> dict[int, tuple[Envelope, str]]:
        """(envelope, decoded subject) per present UID: the part of the metadata a folder
        listing needs, without building every message's MIME tree."""
        return self._records(uids, envelope_from_record)

    def _records(
        self, uids: Iterable[int], decode: Callable[[dict[str, Any]], _T]
    ) -> dict[int, _T]:
        out: dict[int, _T] = {}
        repaired: list[tuple[int, dict[str, Any]]] = []
        with self.locked() as state, self._cache_mapped() as mapped:
            for uid in uids:
                pos = state.find(uid)
                if pos is None:
                    continue
                record = self._cache_read_raw(uid, state.cache[pos], mapped)
                value: _T | None = None
                if record is not None:
                    try:
                        value = decode(record)
                    except (KeyError, ValueError, TypeError, IndexError):
                        value = None
                if value is None:
                    try:
                        record = _parse_file(self._path_at(state, pos))
                    except OSError:
                        continue
                    value = decode(record)
                    repaired.append((uid, record))
                out[uid] = value
            if repaired:
                # Offsets of repaired records live in memory (and in the next compacted
                # index); the cache is never the only copy of anything.
                offsets = self._cache_append(repaired)
                for (uid, _), offset in zip(repaired, offsets, strict=True):
                    pos = state.find(uid)
                    if pos is not None:
                        state.cache[pos] = offset
                state.cache_records += len(repaired)
        return out

    def uid_exists(self, uid: int) -> bool:
        with self.locked() as state:
            return state.find(uid) is not None


def _metadata_of(record: object, uid: int) -> dict[str, Any] | None:
    if not isinstance(record, dict) or record.get("uid") != uid:
        return None
    metadata = record.get("m")
    return metadata if isinstance(metadata, dict) else None


def _parse_file(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return to_record(build_metadata(b""))
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return to_record(build_metadata(buf))


def parse_bytes(data: bytes) -> dict[str, Any]:
    return to_record(build_metadata(data))


def parse_path(path: Path) -> dict[str, Any]:
    return _parse_file(path)


def _diff(old: _State, new: _State) -> list[Change]:
    """Changes between two states (after another process replaced the index wholesale)."""
    if old.uidvalidity != new.uidvalidity:
        return [("resync", (), new.highestmodseq)]
    old_uids = set(old.uids)
    new_uids = set(new.uids)
    out: list[Change] = []
    added = tuple(sorted(new_uids - old_uids))
    gone = tuple(sorted(old_uids - new_uids))
    if added:
        out.append(("added", added, new.highestmodseq))
    changed = tuple(
        uid
        for uid, ms in zip(new.uids, new.modseqs, strict=True)
        if ms > old.highestmodseq and uid in old_uids
    )
    if changed:
        out.append(("flags", changed, new.highestmodseq))
    if gone:
        out.append(("expunged", gone, new.highestmodseq))
    return out


__all__ = [
    "Change",
    "Exported",
    "FolderIndex",
    "Prepared",
    "StoreError",
    "create_maildir",
    "parse_bytes",
    "parse_file_name",
    "parse_path",
    "read_folder_file",
    "write_folder_file",
]
