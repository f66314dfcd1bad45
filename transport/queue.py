"""The outbound queue: a spool folder of immutable message files and msgpack envelopes.

Layout under the queue folder (all 0700, files 0600):

    msg/<id>      the message, written once and never changed (the per-message lock, too)
    env/<id>      the envelope: MAGIC, length, msgpack record, CRC-32 (self-delimiting and
                  self-validating, the Postfix END-record lesson); its presence publishes
    tmp/          envelopes being written
    corrupt/      quarantined files, for an administrator to look at
    wakeup        a FIFO: other processes (the CLI) write a byte to wake the runner

Durability (RFC 5321 6.1; the receive path replies 250 only after `enqueue` returns):
the message is written (or hard-linked) into msg/ and fsynced, msg/ is fsynced, the
envelope is written in tmp/, fsynced, renamed into env/, and env/ is fsynced. A crash
before the rename leaves a message without an envelope, which was never acknowledged
and is removed by a later scan. Envelope updates write a new file and rename it over
the old one, so a reader sees the old or the new envelope, never a mix.

Several processes may touch the spool (the server's runner, `mailhost queue ...`):
every read-modify-write of an envelope holds flock() on the message file, so the two
never lose each other's changes. Symlinks are never followed (O_NOFOLLOW, lstat).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import logging
import os
import re
import secrets
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Container, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack

from store.clock import SYSTEM_CLOCK, Clock
from store.fsutil import fsync_dir, link_or_copy

from .envelope import (
    MAX_AUTH_IDENTITY,
    MAX_ENVID,
    MAX_RECIPIENTS,
    BodyType,
    CorruptEntry,
    Diagnostic,
    DsnReturn,
    EntryKind,
    InvalidEnvelope,
    QueueEntry,
    ReceivedHop,
    Recipient,
    RecipientSpec,
    RecipientState,
    check_envelope_text,
)

__all__ = [
    "MAX_ENVELOPE_FILE",
    "MAX_MESSAGE_SIZE",
    "STALE_AGE",
    "EntryNotFound",
    "Queue",
    "QueueError",
    "QueueStatistics",
    "RecoveryReport",
    "is_queue_id",
]

log = logging.getLogger("mailhost.queue")

_MAGIC = b"MHQ\x01"
_HEADER = struct.Struct(">4sI")  # magic, payload length
_TRAILER = struct.Struct(">I")  # CRC-32 of the payload
# An envelope of MAX_RECIPIENTS recipients with long diagnostics stays well under this.
MAX_ENVELOPE_FILE = 8 * 1024 * 1024
# The largest message the queue takes (the receive side's SIZE limit is normally lower).
MAX_MESSAGE_SIZE = 1024 * 1024 * 1024
# Temporary files and envelope-less messages older than this are leftovers of a crash
# (reliability item a.1.5: "remove stale temp files older than N hours").
STALE_AGE = 3600.0

_ID = re.compile(r"[0-9A-F]{12,40}")


def is_queue_id(text: str) -> bool:
    """Whether `text` can name a queue entry (a path component we made, nothing else)."""
    return bool(_ID.fullmatch(text))


class QueueError(Exception):
    """The queue could not do what was asked; the SMTP layer answers 451 4.3.0 (or 452)."""


class EntryNotFound(QueueError):
    """No queue entry with that id (delivered, deleted, or never there)."""


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What a scan found: entries loaded, files quarantined, leftovers removed."""

    loaded: int
    quarantined: tuple[str, ...]
    removed: int


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    messages: int
    recipients_pending: int
    held: int
    deferred_messages: int
    bytes: int
    oldest_arrival: float | None


@dataclass(slots=True)
class _Indexed:
    next_attempt: float
    held: bool
    arrival: float
    size: int
    recipients: int
    deferred: bool
    signature: tuple[int, int]  # (inode, mtime_ns) of the envelope file


def _encode(entry: QueueEntry) -> bytes:
    payload = msgpack.packb(entry.to_record(), use_bin_type=True)
    return _HEADER.pack(_MAGIC, len(payload)) + payload + _TRAILER.pack(zlib.crc32(payload))


def _decode(data: bytes) -> QueueEntry:
    if len(data) < _HEADER.size + _TRAILER.size:
        raise CorruptEntry("envelope truncated")
    magic, length = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise CorruptEntry("not an envelope (bad magic)")
    if len(data) != _HEADER.size + length + _TRAILER.size:
        raise CorruptEntry("envelope length does not match (torn write?)")
    payload = data[_HEADER.size : _HEADER.size + length]
    (crc,) = _TRAILER.unpack_from(data, _HEADER.size + length)
    if zlib.crc32(payload) != crc:
        raise CorruptEntry("envelope checksum mismatch")
    try:
        record = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptEntry(f"envelope is not msgpack: {exc}") from None
    return QueueEntry.from_record(record)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_regular(path: Path, limit: int) -> bytes:
    """Read a regular file without following a symlink, refusing more than `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CorruptEntry(f"{path.name}: not a regular file")
        if st.st_size > limit:
            raise CorruptEntry(f"{path.name}: larger than {limit} bytes")
        chunks = []
        remaining = st.st_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise CorruptEntry(f"{path.name}: larger than {limit} bytes")
        return data
    finally:
        os.close(fd)


class Queue:
    """The spool. Methods block on disk I/O: call them from a worker thread in trio code.

    Thread-safe; the in-memory index (what is due when) is only a cache of env/, rebuilt
    by `open()` and refreshed by `reload()` (which the runner calls when another process
    signals a change through the wakeup FIFO).
    """

    def __init__(
        self,
        folder: Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
        fsync: bool = True,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.folder = folder
        self.clock = clock
        self._fsync = fsync
        self._max_message_size = max_message_size
        self._msg = folder / "msg"
        self._env = folder / "env"
        self._tmp = folder / "tmp"
        self._corrupt = folder / "corrupt"
        self.wakeup_path = folder / "wakeup"
        self._lock = threading.Lock()
        self._index: dict[str, _Indexed] = {}
        # One set per rescan under way: the ids this process changed in the index since
        # that rescan began, whose index entries the rescan must not overwrite.
        self._rescans: list[set[str]] = []
        self._listeners: list[Callable[[], None]] = []
        self._opened = False

    # -- setup and recovery ---------------------------------------------------------------

    def open(self, *, scan: bool = True) -> RecoveryReport:
        """Create the folders if needed and scan the spool (reliability item a.1.5).

        Without `scan`, for a process that only adds entries (the delivery agent): the
        index stays empty, and nothing is recovered or quarantined here."""
        for folder in (self.folder, self._msg, self._env, self._tmp, self._corrupt):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            os.mkfifo(self.wakeup_path, 0o600)
        except FileExistsError:
            pass
        if not scan:
            self._opened = True
            return RecoveryReport(0, (), 0)
        report = self._scan()
        self._opened = True
        if report.quarantined:
            log.warning(
                "queue scan: %d loaded, %d quarantined to corrupt/: %s",
                report.loaded,
                len(report.quarantined),
                " ".join(report.quarantined),
            )
        return report

    def adopt(self, id: str) -> bool:
        """Index one entry another process added (it said so: the delivery agent), and
        tell the listeners; cheaper than a rescan. False when there is no such entry
        (delivered or deleted meanwhile, or a damaged one, which the next rescan
        quarantines)."""
        if not is_queue_id(id):
            return False
        try:
            st = os.lstat(self._env / id)
            entry = self._load_checked(id)
        except (FileNotFoundError, CorruptEntry):
            return False
        self._set_indexed(id, self._indexed(entry, (st.st_ino, st.st_mtime_ns)))
        self._changed()
        return True

    def reload(self, *, force: bool = False) -> RecoveryReport:
        """Refresh the index from env/ (another process may have changed the spool).

        Without `force`, an envelope whose inode and mtime are unchanged is not re-read;
        inode numbers are reused and mtimes are coarse, so after a wake-up from another
        process (which says something changed) every envelope is read again."""
        return self._scan(force=force)

    def _scan(self, *, force: bool = True) -> RecoveryReport:
        now = time.time()  # compared with file times, which the injected clock does not set
        quarantined: list[str] = []
        removed = 0
        for entry in os.scandir(self._tmp):
            if self._stale(entry, now):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        seen: dict[str, _Indexed] = {}
        changed_meanwhile: set[str] = set()
        with self._lock:
            previous = dict(self._index)
            self._rescans.append(changed_meanwhile)
        try:
            with os.scandir(self._env) as listing:
                envelopes = list(listing)
            for entry in envelopes:
                name = entry.name
                if not is_queue_id(name) or not entry.is_file(follow_symlinks=False):
                    self._quarantine(name, why="not a queue envelope")
                    quarantined.append(name)
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                signature = (st.st_ino, st.st_mtime_ns)
                old = previous.get(name)
                if not force and old is not None and old.signature == signature:
                    seen[name] = old
                    continue
                try:
                    loaded = self._load_checked(name)
                except FileNotFoundError:
                    continue  # removed meanwhile (delivered or deleted)
                except CorruptEntry as exc:
                    self._quarantine(name, why=str(exc))
                    quarantined.append(name)
                    continue
                seen[name] = self._indexed(loaded, signature)
            with self._lock:
                # Merge, never replace: what enqueue or modify did in this process after the
                # listing began is newer than what the listing saw. An entry added meanwhile
                # stays, one removed meanwhile is not brought back, one changed meanwhile
                # (held, rescheduled) keeps its new state.
                index = {id: item for id, item in seen.items() if id not in changed_meanwhile}
                for id in changed_meanwhile:
                    current = self._index.get(id)
                    if current is not None:
                        index[id] = current
                self._index = index
        finally:
            with self._lock:
                self._rescans = [s for s in self._rescans if s is not changed_meanwhile]
        for entry in os.scandir(self._msg):
            name = entry.name
            if name in seen:
                continue
            if not entry.is_file(follow_symlinks=False) or not is_queue_id(name):
                self._quarantine_file(self._msg / name, name, why="not a queue message")
                quarantined.append(name)
            elif self._stale(entry, now) and not (self._env / name).exists():
                # A message whose envelope never got published: never acknowledged.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
        if quarantined or removed:
            self._sync(self._env, self._msg, self._corrupt, self._tmp)
        return RecoveryReport(len(seen), tuple(quarantined), removed)

    @staticmethod
    def _stale(entry: os.DirEntry[str], now: float) -> bool:
        try:
            return now - entry.stat(follow_symlinks=False).st_mtime > STALE_AGE
        except FileNotFoundError:
            return False

    def _load_checked(self, id: str) -> QueueEntry:
        entry = _decode(_read_regular(self._env / id, MAX_ENVELOPE_FILE))
        if entry.id != id:
            raise CorruptEntry(f"envelope names {entry.id!r}, file is {id!r}")
        try:
            st = os.lstat(self._msg / id)
        except FileNotFoundError:
            raise CorruptEntry("message file missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise CorruptEntry("message is not a regular file")
        if st.st_size != entry.size:
            raise CorruptEntry(f"message is {st.st_size} bytes, envelope says {entry.size}")
        return entry

    def _quarantine(self, name: str, *, why: str) -> None:
        log.error("queue: quarantining %r to corrupt/: %s", name, why)
        self._quarantine_file(self._env / name, name + ".env", why=None)
        if is_queue_id(name):
            self._quarantine_file(self._msg / name, name, why=None)

    def _quarantine_file(self, path: Path, target: str, *, why: str | None) -> None:
        if why is not None:
            log.error("queue: quarantining %r to corrupt/: %s", path.name, why)
        # rename() moves a symlink itself, never what it points to.
        destination = self._corrupt / f"{target}.{secrets.token_hex(3)}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, destination)

    def _sync(self, *folders: Path) -> None:
        if self._fsync:
            for folder in folders:
                fsync_dir(folder)

    # -- notifications --------------------------------------------------------------------

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` (from whatever thread made the change) after each change.

        The runner registers one; with no listener in this process (the CLI), changes are
        signalled to another process's runner through the wakeup FIFO instead.
        """
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def _changed(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        if listeners:
            for callback in listeners:
                callback()
        else:
            self.kick()

    def kick(self) -> bool:
        """Wake a runner in another process; False when none is listening."""
        try:
            fd = os.open(self.wakeup_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return False
            raise
        try:
            os.write(fd, b"!")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already
        finally:
            os.close(fd)
        return True

    # -- enqueue --------------------------------------------------------------------------

    def new_id(self) -> str:
        """Sortable by arrival (microseconds) and unique (random suffix)."""
        return f"{int(self.clock.now() * 1_000_000):013X}{secrets.token_hex(4).upper()}"

    def enqueue(
        self,
        message: bytes | Path,
        *,
        sender: str | None,
        recipients: Sequence[RecipientSpec],
        ret: DsnReturn | None = None,
        envid: str | None = None,
        auth_identity: str | None = None,
        hop: ReceivedHop | None = None,
        body: BodyType = BodyType.SEVEN_BIT,
        smtputf8: bool = False,
        kind: EntryKind = EntryKind.MESSAGE,
    ) -> QueueEntry:
        """Durably add a message; when this returns, the queue is responsible for it.

        `message` is the content or the path of a file on the queue's file system that is
        hard-linked (copied across file systems) and must not be changed afterwards; the
        caller keeps and removes its own name. Raises InvalidEnvelope for values that must
        not be queued and QueueError for I/O trouble (answer 451 4.3.0 / 452 4.3.1).
        """
        if not self._opened:
            raise QueueError("queue not opened")
        if sender is not None:
            RecipientSpec(sender)  # the same address checks as a recipient
        if not recipients:
            raise InvalidEnvelope("no recipients")
        if len(recipients) > MAX_RECIPIENTS:
            raise InvalidEnvelope(f"more than {MAX_RECIPIENTS} recipients")
        if envid is not None:
            check_envelope_text(envid, "ENVID", MAX_ENVID)
        if auth_identity is not None:
            check_envelope_text(auth_identity, "auth identity", MAX_AUTH_IDENTITY)
        now = self.clock.now()
        id = self.new_id()
        msg_path = self._msg / id
        try:
            size = self._store_message(message, msg_path)
            entry = QueueEntry(
                id=id,
                sender=sender,
                recipients=tuple(
                    Recipient(r.address, r.notify, r.orcpt, local=r.local) for r in recipients
                ),
                arrival=now,
                size=size,
                next_attempt=now,
                ret=ret,
                envid=envid,
                auth_identity=auth_identity,
                hop=hop,
                body=body,
                smtputf8=smtputf8,
                kind=kind,
            )
            self._sync(self._msg)
            signature = self._write_envelope(entry)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(msg_path)
            if isinstance(exc, OSError):
                raise QueueError(f"cannot queue the message: {exc.strerror or exc}") from exc
            raise
        self._set_indexed(id, self._indexed(entry, signature))
        self._changed()
        return entry

    def _store_message(self, message: bytes | Path, target: Path) -> int:
        if isinstance(message, bytes | bytearray | memoryview):
            data = bytes(message)
            if len(data) > self._max_message_size:
                raise InvalidEnvelope("message too large for the queue")
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                _write_all(fd, data)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            return len(data)
        fd = os.open(message, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidEnvelope("the message must be a regular file")
            if st.st_size > self._max_message_size:
                raise InvalidEnvelope("message too large for the queue")
            if self._fsync:
                os.fsync(fd)  # the caller may not have; fsync reaches the inode, any name
        finally:
            os.close(fd)
        link_or_copy(message, target, fsync=self._fsync)
        return os.lstat(target).st_size

    def _write_envelope(self, entry: QueueEntry) -> tuple[int, int]:
        data = _encode(entry)
        tmp = self._tmp / f"{entry.id}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                _write_all(fd, data)
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, self._env / entry.id)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._sync(self._env)
        st = os.lstat(self._env / entry.id)
        return (st.st_ino, st.st_mtime_ns)

    def _set_indexed(self, id: str, item: _Indexed | None) -> None:
        """Every change this process makes to one entry's index goes through here (None
        drops it), so that a rescan under way keeps it."""
        with self._lock:
            if item is None:
                self._index.pop(id, None)
            else:
                self._index[id] = item
            for changed in self._rescans:
                changed.add(id)

    @staticmethod
    def _indexed(entry: QueueEntry, signature: tuple[int, int]) -> _Indexed:
        pending = entry.pending
        return _Indexed(
            next_attempt=entry.next_attempt,
            held=entry.held,
            arrival=entry.arrival,
            size=entry.size,
            recipients=len(pending),
            deferred=any(r.state is RecipientState.DEFERRED for r in pending),
            signature=signature,
        )

    # -- reading --------------------------------------------------------------------------

    def get(self, id: str) -> QueueEntry:
        """The current envelope from disk. Raises EntryNotFound."""
        if not is_queue_id(id):
            raise EntryNotFound(f"no queue entry {id!r}")
        try:
            return _decode(_read_regular(self._env / id, MAX_ENVELOPE_FILE))
        except FileNotFoundError:
            raise EntryNotFound(f"no queue entry {id}") from None
        except CorruptEntry as exc:
            raise QueueError(f"queue entry {id} is damaged: {exc}") from None

    def read_message(self, id: str) -> bytes:
        if not is_queue_id(id):
            raise EntryNotFound(f"no queue entry {id!r}")
        try:
            return _read_regular(self._msg / id, self._max_message_size)
        except FileNotFoundError:
            raise EntryNotFound(f"no queue entry {id}") from None
        except CorruptEntry as exc:
            raise QueueError(str(exc)) from None

    def entries(self) -> list[QueueEntry]:
        """Every entry, oldest first (the CLI's `queue list`)."""
        with self._lock:
            ids = sorted(self._index)
        entries = []
        for id in ids:
            with contextlib.suppress(EntryNotFound, QueueError):
                entries.append(self.get(id))
        return entries

    def ids(self) -> list[str]:
        with self._lock:
            return sorted(self._index)

    def due(
        self, now: float, *, exclude: Container[str] = (), limit: int | None = None
    ) -> list[str]:
        """Ids whose next attempt time has come, not held and not in `exclude`, the longest
        waiting first; at most `limit` of them (one pass over the index, no full sort)."""
        with self._lock:
            candidates = [
                (item.next_attempt, id)
                for id, item in self._index.items()
                if not item.held and item.next_attempt <= now and id not in exclude
            ]
        if limit is not None and len(candidates) > limit:
            candidates = heapq.nsmallest(limit, candidates)
        else:
            candidates.sort()
        return [id for _next, id in candidates]

    def size_of(self, id: str) -> int | None:
        """The message size the index records for `id`; None when it is not indexed."""
        with self._lock:
            item = self._index.get(id)
        return None if item is None else item.size

    def next_due(self, exclude: Container[str] = ()) -> float | None:
        """The earliest next-attempt time of an entry that is not held (nor in `exclude`)."""
        with self._lock:
            times = [
                item.next_attempt
                for id, item in self._index.items()
                if not item.held and id not in exclude
            ]
        return min(times, default=None)

    def statistics(self) -> QueueStatistics:
        with self._lock:
            items = list(self._index.values())
        return QueueStatistics(
            messages=len(items),
            recipients_pending=sum(i.recipients for i in items),
            held=sum(1 for i in items if i.held),
            deferred_messages=sum(1 for i in items if i.deferred),
            bytes=sum(i.size for i in items),
            oldest_arrival=min((i.arrival for i in items), default=None),
        )

    # -- changing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, id: str) -> Iterator[None]:
        """flock() on the message file: one read-modify-write of this entry at a time,
        across threads and processes (each open() is its own lock owner)."""
        if not is_queue_id(id):
            raise EntryNotFound(f"no queue entry {id!r}")
        try:
            fd = os.open(self._msg / id, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, OSError) as exc:
            self._set_indexed(id, None)
            if isinstance(exc, FileNotFoundError) or exc.errno == errno.ELOOP:
                raise EntryNotFound(f"no queue entry {id}") from None
            raise QueueError(f"cannot open {id}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def modify(
        self, id: str, change: Callable[[QueueEntry], QueueEntry | None]
    ) -> QueueEntry | None:
        """Apply `change` to the stored envelope under the entry's lock and persist the result
        atomically; `change` returning None removes the entry. Returns what was stored."""
        with self._locked(id):
            try:
                current = self.get(id)
            except QueueError as exc:
                if isinstance(exc, EntryNotFound):
                    self._set_indexed(id, None)
                    raise
                self._quarantine(id, why=str(exc))
                raise EntryNotFound(f"queue entry {id} was damaged and quarantined") from None
            updated = change(current)
            if updated is None:
                self._remove_files(id)
                self._set_indexed(id, None)
                return None
            if updated != current:
                try:
                    signature = self._write_envelope(updated)
                except OSError as exc:
                    raise QueueError(f"cannot update {id}: {exc.strerror or exc}") from exc
                self._set_indexed(id, self._indexed(updated, signature))
            else:
                self._refresh_indexed(id, current)
            return updated

    def _refresh_indexed(self, id: str, entry: QueueEntry) -> None:
        """Bring the index in line with an envelope read from disk that another process
        changed (e.g. `mailhost queue hold` while the wake-up FIFO is unusable): else
        the runner would keep finding a held entry due until the next rescan."""
        with self._lock:
            known = self._index.get(id)
        if known is not None and known == self._indexed(entry, known.signature):
            return
        try:
            st = os.stat(self._env / id)
        except OSError:
            return
        self._set_indexed(id, self._indexed(entry, (st.st_ino, st.st_mtime_ns)))

    def _remove_files(self, id: str) -> None:
        # The envelope goes first: without it the message is an orphan that scans remove.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._env / id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._msg / id)
        self._sync(self._env)

    def remove(self, id: str) -> None:
        """Forget an entry (delivered, or deleted without a DSN)."""
        try:
            self.modify(id, lambda _entry: None)
        except EntryNotFound:
            pass

    def begin_attempt(
        self, id: str, now: float, next_attempt: Callable[[QueueEntry], float]
    ) -> QueueEntry | None:
        """Record an attempt before making it (the mox pattern): a crash during delivery
        then waits for `next_attempt(entry)` instead of retrying at once. None if the
        entry is gone or held."""

        def change(entry: QueueEntry) -> QueueEntry:
            if entry.held:
                return entry
            return replace(
                entry,
                attempts=entry.attempts + 1,
                last_attempt=now,
                next_attempt=next_attempt(entry),
            )

        try:
            entry = self.modify(id, change)
        except EntryNotFound:
            return None
        if entry is None or entry.held:
            return None
        return entry

    # -- operator commands (postqueue / Queue Viewer) --------------------------------------

    def retry(self, id: str | None = None) -> int:
        """Make one entry (or every entry) due now; returns how many. Held ones stay held."""
        now = self.clock.now()
        count = 0
        for target in [id] if id is not None else self.ids():
            try:
                self.modify(target, lambda e: replace(e, next_attempt=min(e.next_attempt, now)))
                count += 1
            except EntryNotFound:
                if id is not None:
                    raise
        self._changed()
        return count

    def hold(self, id: str) -> QueueEntry:
        entry = self.modify(id, lambda e: replace(e, held=True))
        assert entry is not None
        self._changed()
        return entry

    def release(self, id: str) -> QueueEntry:
        """Un-hold an entry; it becomes due at once (as postsuper -H)."""
        now = self.clock.now()
        entry = self.modify(
            id, lambda e: replace(e, held=False, next_attempt=min(e.next_attempt, now))
        )
        assert entry is not None
        self._changed()
        return entry

    def delete(self, id: str, *, notify_sender: bool = False) -> None:
        """Delete an entry. With `notify_sender` the pending recipients are failed with
        5.0.0 "deleted by the administrator" and the runner sends the DSN (NOTIFY honoured)
        and then removes the entry; without, the entry is gone at once."""
        if not notify_sender:
            self.modify(id, lambda _entry: None)
            self._changed()
            return
        now = self.clock.now()
        diagnostic = Diagnostic("5.0.0", "message deleted from the queue by the administrator")

        def change(entry: QueueEntry) -> QueueEntry:
            recipients = tuple(
                r
                if r.state.final
                else replace(r, state=RecipientState.FAILED, diagnostic=diagnostic)
                for r in entry.recipients
            )
            return replace(entry, recipients=recipients, held=False, next_attempt=now)

        self.modify(id, change)
        self._changed()
