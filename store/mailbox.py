"""A mailbox (one user's maildir++ tree): its folders, their hierarchy, its quota.

``mailhost.mailbox`` (msgpack, replaced atomically under ``mailhost.mailbox.lock``) holds the
folder list (persistent id, name, kind, role, subscription), the ids of deleted folders
(EAS FolderSync reports them), a hierarchy MODSEQ that grows with every hierarchy change,
the last UIDVALIDITY handed out (so a re-created folder never reuses one) and the quota.
Each folder directory also holds its id (``mailhost.folder``), so a rename interrupted by a
crash is finished on the next open, and maildir++ folders other tools created are adopted.

Locks: the mailbox lock (thread + flock) guards the hierarchy; each folder has its own
(see `store.index`). Code holding the mailbox lock never waits for a folder's thread lock,
and code holding a folder lock never waits for the mailbox lock, so they cannot deadlock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .bus import (
    ChangeEvent,
    FlagsChanged,
    FolderCreated,
    FolderDeleted,
    FolderRenamed,
    MessagesAdded,
    MessagesExpunged,
    ResyncNeeded,
)
from .errors import (
    FolderExists,
    FolderHasChildren,
    FolderNotFound,
    FolderProtected,
    InvalidFolderName,
    InvalidItem,
    MessageNotFound,
    PermanentFailure,
    QuotaExceeded,
    TemporaryFailure,
)
from .flags import Flag, FlagMode, flags_to_bits, validate_keyword
from .fsutil import fsync_dir, unique_name, unlink_quietly, write_atomically, write_new_file
from .index import (
    LOCK_FILE,
    Change,
    FolderIndex,
    Prepared,
    create_maildir,
    parse_bytes,
    parse_path,
    read_folder_file,
    write_folder_file,
)
from .limits import MAX_FOLDERS, MAX_UIDVALIDITY
from .metadata import MessageMetadata, decode_body
from .mime import Envelope
from .model import (
    AppendResult,
    Changes,
    CopyResult,
    ExpungeResult,
    FlagUpdate,
    FolderInfo,
    FolderKind,
    FolderSnapshot,
    FolderStatus,
    Quota,
    SpecialUse,
)
from .names import (
    INBOX,
    SEPARATOR,
    folder_dir_name,
    folder_name_from_dir,
    is_descendant,
    normalize_folder_name,
    parent_name,
)
from .pim import ItemKind, PimItem, build_item_message
from .records import pack, unpack

if TYPE_CHECKING:
    from .store import Store

MAILBOX_FILE = "mailhost.mailbox"
MAILBOX_LOCK = "mailhost.mailbox.lock"
TRASH_PREFIX = "mailhost-trash-"
SCHEMA_VERSION = 1
MAX_TOMBSTONES = 1000  # deleted folder ids remembered for EAS FolderSync

# Exchange's default folder names, with RFC 6154 roles; PIM folders typed by kind.
DEFAULT_FOLDERS: tuple[tuple[str, FolderKind, SpecialUse | None], ...] = (
    (INBOX, FolderKind.MAIL, SpecialUse.INBOX),
    ("Sent Items", FolderKind.MAIL, SpecialUse.SENT),
    ("Drafts", FolderKind.MAIL, SpecialUse.DRAFTS),
    ("Deleted Items", FolderKind.MAIL, SpecialUse.TRASH),
    ("Junk Email", FolderKind.MAIL, SpecialUse.JUNK),
    ("Archive", FolderKind.MAIL, SpecialUse.ARCHIVE),
    ("Calendar", FolderKind.CALENDAR, None),
    ("Contacts", FolderKind.CONTACTS, None),
    ("Tasks", FolderKind.TASKS, None),
    ("Notes", FolderKind.NOTES, None),
)

_ITEM_KIND = {
    FolderKind.CALENDAR: ItemKind.EVENT,
    FolderKind.TASKS: ItemKind.TASK,
    FolderKind.CONTACTS: ItemKind.CONTACT,
    FolderKind.NOTES: ItemKind.NOTE,
}


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to append: bytes, or a path whose file is hard-linked (never modified)."""

    data: bytes | Path
    flags: frozenset[Flag] = frozenset()
    keywords: frozenset[str] = frozenset()
    internal_date: datetime | None = None


@dataclass(frozen=True, slots=True)
class HierarchyChanges:
    """Folder changes after a hierarchy MODSEQ (EAS FolderSync)."""

    modseq: int
    changed: tuple[FolderInfo, ...]  # created or renamed since
    deleted: tuple[str, ...]  # folder ids deleted since


@dataclass(slots=True)
class _Meta:
    folders: dict[str, FolderInfo]
    changed_at: dict[str, int]
    tombstones: dict[str, int]
    hierarchy_modseq: int
    last_uidvalidity: int
    quota: int | None

    def encode(self) -> bytes:
        return pack(
            {
                "v": SCHEMA_VERSION,
                "hms": self.hierarchy_modseq,
                "luv": self.last_uidvalidity,
                "quota": self.quota,
                "folders": [
                    {
                        "id": f.id,
                        "name": f.name,
                        "kind": f.kind.value,
                        "role": f.role.value if f.role else None,
                        "sub": f.subscribed,
                        "default": f.default,
                        "ms": self.changed_at.get(f.id, 0),
                    }
                    for f in self.folders.values()
                ],
                "tomb": [[fid, ms] for fid, ms in self.tombstones.items()],
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> _Meta:
        d = unpack(data)
        if d["v"] != SCHEMA_VERSION:
            raise ValueError("unknown mailbox schema")
        folders = {}
        changed_at = {}
        for f in d["folders"]:
            info = FolderInfo(
                id=f["id"],
                name=f["name"],
                kind=FolderKind(f["kind"]),
                role=SpecialUse(f["role"]) if f["role"] else None,
                subscribed=f["sub"],
                default=f["default"],
            )
            folders[info.id] = info
            changed_at[info.id] = f["ms"]
        return cls(
            folders=folders,
            changed_at=changed_at,
            tombstones=dict(d["tomb"]),
            hierarchy_modseq=d["hms"],
            last_uidvalidity=d["luv"],
            quota=d["quota"],
        )

    def by_name(self, name: str) -> FolderInfo | None:
        for info in self.folders.values():
            if info.name == name:
                return info
        return None


@contextlib.contextmanager
def _io_errors() -> Iterator[None]:
    """OSError (disk full, I/O error, ...) becomes a protocol-neutral TemporaryFailure."""
    try:
        yield
    except FileNotFoundError as exc:
        raise TemporaryFailure(f"file vanished during the operation: {exc}") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise TemporaryFailure("disk full") from exc
        raise TemporaryFailure(f"I/O error: {exc.strerror or exc}") from exc


class Mailbox:
    """One mailbox. Get it from `Store.open_mailbox`; safe to share between threads."""

    def __init__(self, store: Store, mailbox_id: str, path: Path) -> None:
        self.id = mailbox_id
        self.path = path
        self._store = store
        self._lock = threading.RLock()
        self._indexes: dict[str, FolderIndex] = {}
        self._meta_stat: tuple[int, int, int] | None = None
        self._meta: _Meta | None = None

    # --- the mailbox file -----------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[_Meta]:
        """The mailbox lock (thread and file), with the hierarchy freshly read."""
        with self._lock:
            fd = os.open(self.path / MAILBOX_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield self._read_meta()
            finally:
                os.close(fd)

    def _read_meta(self) -> _Meta:
        """The hierarchy, re-read if another process replaced the mailbox file."""
        with self._lock:
            path = f"{self.path}/{MAILBOX_FILE}"  # a str: read at every delivery
            st = os.stat(path)
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._meta is None or key != self._meta_stat:
                with open(path, "rb") as file:
                    meta = _Meta.decode(file.read())
                self._meta_stat = key
                self._apply_meta(meta)
            assert self._meta is not None
            return self._meta

    def _apply_meta(self, meta: _Meta) -> None:
        """Point in-process folder indexes at their (possibly renamed) directories."""
        self._meta = meta
        for folder_id in list(self._indexes):
            info = meta.folders.get(folder_id)
            if info is None:
                del self._indexes[folder_id]  # deleted: its next use finds the folder gone
            else:
                self._indexes[folder_id].set_path(self._dir(info.name))

    def _write_meta(self, meta: _Meta) -> None:
        write_atomically(self.path / MAILBOX_FILE, meta.encode(), fsync=self._store.fsync)
        st = os.stat(self.path / MAILBOX_FILE)
        self._meta_stat = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._apply_meta(meta)

    def _dir(self, name: str) -> Path:
        return self.path / folder_dir_name(name) if name != INBOX else self.path

    def _new_uidvalidity(self, meta: _Meta) -> int:
        # RFC 3501 2.3.1.1: a re-created folder must not reuse a UIDVALIDITY; time-based
        # values and the mailbox-wide "last handed out" guarantee it.
        value = max(int(self._store.clock.now()), meta.last_uidvalidity + 1)
        if value > MAX_UIDVALIDITY:
            value = meta.last_uidvalidity % MAX_UIDVALIDITY + 1
        meta.last_uidvalidity = value
        return value

    def _uidvalidity_for_rebuild(self) -> int:
        """Called by an index that lost mailhost.folder: a fresh UIDVALIDITY, persisted."""
        with self._exclusive() as meta:
            value = self._new_uidvalidity(meta)
            self._write_meta(meta)
            return value

    # --- creation and repair --------------------------------------------------------------

    def _create_or_repair(self) -> None:
        fsync = self._store.fsync
        create_maildir(self.path, subfolder=False, fsync=fsync)
        with self._lock:
            fd = os.open(self.path / MAILBOX_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not (self.path / MAILBOX_FILE).exists():
                    meta = _Meta({}, {}, {}, 1, 0, None)
                    for name, kind, role in DEFAULT_FOLDERS:
                        self._make_folder(meta, name, kind, role, default=True)
                    self._write_meta(meta)
                self._repair(self._read_meta())
            finally:
                os.close(fd)

    def _make_folder(
        self,
        meta: _Meta,
        name: str,
        kind: FolderKind,
        role: SpecialUse | None,
        *,
        default: bool = False,
        subscribed: bool = True,
    ) -> FolderInfo:
        """Create a folder's directory and id file and add it to `meta` (not yet written)."""
        folder_id = uuid.uuid4().hex
        path = self._dir(name)
        create_maildir(path, subfolder=name != INBOX, fsync=self._store.fsync)
        write_folder_file(path, folder_id, self._new_uidvalidity(meta), fsync=self._store.fsync)
        meta.hierarchy_modseq += 1
        info = FolderInfo(folder_id, name, kind, role, subscribed, default)
        meta.folders[folder_id] = info
        meta.changed_at[folder_id] = meta.hierarchy_modseq
        return info

    def _repair(self, meta: _Meta) -> None:
        """Finish interrupted renames and deletes; adopt folders other tools created."""
        on_disk: dict[str, Path] = {}
        strays: list[Path] = []
        for entry in os.scandir(self.path):
            if entry.name.startswith(TRASH_PREFIX):
                shutil.rmtree(entry.path, ignore_errors=True)
                continue
            if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            found = read_folder_file(Path(entry.path))
            if found is None:
                strays.append(Path(entry.path))
            else:
                on_disk[found.folder_id] = Path(entry.path)
        inbox_info = read_folder_file(self.path)
        if inbox_info is not None:
            on_disk[inbox_info.folder_id] = self.path
        changed = False
        for folder_id, info in list(meta.folders.items()):
            expected = self._dir(info.name)
            actual = on_disk.pop(folder_id, None)
            if actual is not None and actual != expected:
                if expected.exists():
                    continue  # leave a conflicting directory alone
                os.rename(actual, expected)  # an interrupted rename: finish it
            elif actual is None and not expected.exists():
                if info.default:
                    create_maildir(expected, subfolder=info.name != INBOX, fsync=False)
                    write_folder_file(expected, folder_id, self._new_uidvalidity(meta), fsync=False)
                    changed = True
                else:  # removed by hand: forget it
                    del meta.folders[folder_id]
                    meta.tombstones[folder_id] = meta.hierarchy_modseq
                    changed = True
            elif actual is None and read_folder_file(expected) is None:
                write_folder_file(expected, folder_id, self._new_uidvalidity(meta), fsync=False)
        for folder_id, path in on_disk.items():
            if folder_id in meta.tombstones:
                self._trash(path)  # an interrupted delete
            else:
                strays.append(path)
        for path in strays:
            try:
                name = folder_name_from_dir(path.name)
            except InvalidFolderName:
                continue
            if meta.by_name(name) is not None or len(meta.folders) >= MAX_FOLDERS:
                continue
            found = read_folder_file(path)
            folder_id = found.folder_id if found else uuid.uuid4().hex
            if found is None:
                create_maildir(path, subfolder=True, fsync=False)
                write_folder_file(path, folder_id, self._new_uidvalidity(meta), fsync=False)
            meta.hierarchy_modseq += 1
            meta.folders[folder_id] = FolderInfo(
                folder_id, name, FolderKind.MAIL, None, True, False
            )
            meta.changed_at[folder_id] = meta.hierarchy_modseq
            changed = True
        if changed:
            self._write_meta(meta)

    def _trash(self, path: Path) -> None:
        target = self.path / f"{TRASH_PREFIX}{uuid.uuid4().hex}"
        os.rename(path, target)
        if self._store.fsync:
            fsync_dir(self.path)
        shutil.rmtree(target, ignore_errors=True)

    # --- folders --------------------------------------------------------------------------

    def _index(self, info: FolderInfo) -> FolderIndex:
        with self._lock:
            index = self._indexes.get(info.id)
            if index is None:
                folder_id = info.id
                index = FolderIndex(
                    self._dir(info.name),
                    folder_id=folder_id,
                    clock=self._store.clock,
                    host=self._store.host,
                    fsync=self._store.fsync,
                    new_uidvalidity=self._uidvalidity_for_rebuild,
                    resolve_path=lambda: self._resolve(folder_id),
                    compact_bytes=self._store.journal_compact_bytes,
                )
                index.listener = lambda changes: self._publish(folder_id, changes)
                self._indexes[folder_id] = index
            return index

    def _resolve(self, folder_id: str) -> Path:
        meta = self._read_meta()
        info = meta.folders.get(folder_id)
        if info is None:
            raise FolderNotFound("the folder was deleted")
        return self._dir(info.name)

    def _publish(self, folder_id: str, changes: list[Change]) -> None:
        bus = self._store.bus
        for kind, uids, modseq in changes:
            event: ChangeEvent
            if kind == "added":
                event = MessagesAdded(self.id, folder_id, uids, modseq)
            elif kind == "flags":
                event = FlagsChanged(self.id, folder_id, uids, modseq)
            elif kind == "expunged":
                event = MessagesExpunged(self.id, folder_id, uids, modseq)
            else:
                event = ResyncNeeded(self.id, folder_id)
            bus.publish(event)

    def list_folders(self) -> list[FolderInfo]:
        """Every folder, Inbox first, then by name (parents before children)."""
        meta = self._read_meta()
        return sorted(
            meta.folders.values(), key=lambda f: (f.name != INBOX, f.name.split(SEPARATOR))
        )

    def folder(self, name: str) -> Folder:
        """The folder called `name` (Inbox case-insensitively); FolderNotFound if none."""
        canonical = normalize_folder_name(name)
        info = self._read_meta().by_name(canonical)
        if info is None:
            raise FolderNotFound(f"no folder {canonical!r}")
        return Folder(self, info.id)

    def folder_by_id(self, folder_id: str) -> Folder:
        if folder_id not in self._read_meta().folders:
            raise FolderNotFound(f"no folder with id {folder_id!r}")
        return Folder(self, folder_id)

    def folder_by_role(self, role: SpecialUse) -> Folder:
        for info in self._read_meta().folders.values():
            if info.role is role:
                return Folder(self, info.id)
        raise FolderNotFound(f"no folder with role {role.value}")

    def folder_of_kind(self, kind: FolderKind) -> Folder:
        """The default folder of a kind (Calendar for CALENDAR, ...)."""
        for info in self.list_folders():
            if info.kind is kind and info.default:
                return Folder(self, info.id)
        raise FolderNotFound(f"no default {kind.value} folder")

    @property
    def inbox(self) -> Folder:
        return self.folder(INBOX)

    @property
    def hierarchy_modseq(self) -> int:
        return self._read_meta().hierarchy_modseq

    def hierarchy_changes(self, since: int) -> HierarchyChanges:
        meta = self._read_meta()
        return HierarchyChanges(
            modseq=meta.hierarchy_modseq,
            changed=tuple(
                sorted(
                    (f for f in meta.folders.values() if meta.changed_at.get(f.id, 0) > since),
                    key=lambda f: f.name.split(SEPARATOR),
                )
            ),
            deleted=tuple(fid for fid, ms in meta.tombstones.items() if ms > since),
        )

    def create_folder(
        self,
        name: str,
        *,
        kind: FolderKind = FolderKind.MAIL,
        role: SpecialUse | None = None,
        subscribed: bool = True,
    ) -> FolderInfo:
        """Create a folder and any missing parents (RFC 3501 6.3.3); FolderExists if taken."""
        canonical = normalize_folder_name(name)
        events: list[ChangeEvent] = []
        with _io_errors(), self._exclusive() as meta:
            if meta.by_name(canonical) is not None:
                raise FolderExists(f"folder {canonical!r} exists")
            missing = []
            parent = parent_name(canonical)
            while parent is not None and meta.by_name(parent) is None:
                missing.append(parent)
                parent = parent_name(parent)
            if len(meta.folders) + len(missing) + 1 > MAX_FOLDERS:
                raise PermanentFailure(f"a mailbox holds at most {MAX_FOLDERS} folders")
            created = [self._make_folder(meta, p, FolderKind.MAIL, None) for p in reversed(missing)]
            info = self._make_folder(meta, canonical, kind, role, subscribed=subscribed)
            created.append(info)
            self._write_meta(meta)
            events = [FolderCreated(self.id, f.id, f.name, meta.changed_at[f.id]) for f in created]
        for event in events:
            self._store.bus.publish(event)
        return info

    def _folder_locks(self, infos: Iterable[FolderInfo]) -> list[int]:
        """flock every folder's lock file with our own descriptors (sorted: no deadlock)."""
        fds = []
        try:
            for info in sorted(infos, key=lambda f: f.id):
                fd = os.open(
                    self._dir(info.name) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
                fds.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def rename_folder(self, name: str, new_name: str) -> FolderInfo:
        """Rename a folder and its subfolders; their ids (and UIDVALIDITY) stay."""
        old = normalize_folder_name(name)
        new = normalize_folder_name(new_name)
        events: list[ChangeEvent] = []
        with _io_errors(), self._exclusive() as meta:
            info = meta.by_name(old)
            if info is None:
                raise FolderNotFound(f"no folder {old!r}")
            if info.default:
                raise FolderProtected(f"{old!r} is a default folder")
            if meta.by_name(new) is not None:
                raise FolderExists(f"folder {new!r} exists")
            if new == old or is_descendant(new, old):
                raise InvalidFolderName("a folder cannot move below itself")
            moving = [info] + [f for f in meta.folders.values() if is_descendant(f.name, old)]
            renamed = {f.id: new + f.name[len(old) :] for f in moving}
            for target in renamed.values():
                normalize_folder_name(target)  # long names may not fit after the move
            missing = []
            parent = parent_name(new)
            while parent is not None and meta.by_name(parent) is None:
                missing.append(parent)
                parent = parent_name(parent)
            created = [self._make_folder(meta, p, FolderKind.MAIL, None) for p in reversed(missing)]
            fds = self._folder_locks(moving)
            try:
                meta.hierarchy_modseq += 1
                for f in moving:
                    meta.folders[f.id] = replace(f, name=renamed[f.id])
                    meta.changed_at[f.id] = meta.hierarchy_modseq
                self._write_meta(meta)  # first the intent, so a crash is finished on open
                for f in sorted(moving, key=lambda f: f.name):
                    os.rename(self._dir(f.name), self._dir(renamed[f.id]))
                if self._store.fsync:
                    fsync_dir(self.path)
            finally:
                for fd in fds:
                    os.close(fd)
            events = [FolderCreated(self.id, f.id, f.name, meta.changed_at[f.id]) for f in created]
            events += [
                FolderRenamed(self.id, f.id, f.name, renamed[f.id], meta.hierarchy_modseq)
                for f in moving
            ]
            result = meta.folders[info.id]
        for event in events:
            self._store.bus.publish(event)
        return result

    def delete_folder(self, name: str, *, recursive: bool = False) -> None:
        """Delete a folder (and, if `recursive`, its subfolders) with its messages."""
        canonical = normalize_folder_name(name)
        events: list[ChangeEvent] = []
        with _io_errors(), self._exclusive() as meta:
            info = meta.by_name(canonical)
            if info is None:
                raise FolderNotFound(f"no folder {canonical!r}")
            children = [f for f in meta.folders.values() if is_descendant(f.name, canonical)]
            doomed = [info, *children]
            if children and not recursive:
                raise FolderHasChildren(f"{canonical!r} has subfolders")
            if any(f.default for f in doomed):
                raise FolderProtected("default folders cannot be deleted")
            fds = self._folder_locks(doomed)
            try:
                meta.hierarchy_modseq += 1
                for f in doomed:
                    del meta.folders[f.id]
                    meta.changed_at.pop(f.id, None)
                    meta.tombstones[f.id] = meta.hierarchy_modseq
                while len(meta.tombstones) > MAX_TOMBSTONES:
                    del meta.tombstones[next(iter(meta.tombstones))]
                self._write_meta(meta)
                for f in doomed:
                    self._trash(self._dir(f.name))
            finally:
                for fd in fds:
                    os.close(fd)
            events = [FolderDeleted(self.id, f.id, f.name, meta.hierarchy_modseq) for f in doomed]
        for event in events:
            self._store.bus.publish(event)

    def set_subscribed(self, name: str, subscribed: bool) -> None:
        canonical = normalize_folder_name(name)
        with _io_errors(), self._exclusive() as meta:
            info = meta.by_name(canonical)
            if info is None:
                raise FolderNotFound(f"no folder {canonical!r}")
            if info.subscribed != subscribed:
                meta.folders[info.id] = replace(info, subscribed=subscribed)
                self._write_meta(meta)

    # --- quota ----------------------------------------------------------------------------

    def quota(self) -> Quota:
        """Usage (sum of every folder's message sizes) and the limit (None: unlimited)."""
        meta = self._read_meta()
        infos = list(meta.folders.values())
        with _io_errors():
            usage = sum(self._index(info).total_size() for info in infos)
        return Quota(usage=usage, limit=meta.quota)

    def set_quota(self, limit: int | None) -> None:
        if limit is not None and limit < 0:
            raise PermanentFailure("a quota cannot be negative")
        with _io_errors(), self._exclusive() as meta:
            meta.quota = limit
            self._write_meta(meta)

    def _check_quota(self, adding: int) -> None:
        """QuotaExceeded if `adding` bytes would take the mailbox over its limit.

        Checked before the folder lock is taken (see the module docstring), so two
        concurrent deliveries may together overshoot by at most one message each.
        """
        limit = self._read_meta().quota
        if limit is None:
            return
        usage = self.quota().usage
        if usage + adding > limit:
            raise QuotaExceeded(
                f"mailbox over quota ({usage + adding} > {limit} bytes)", usage=usage, limit=limit
            )

    # --- maintenance ----------------------------------------------------------------------

    def refresh(self) -> None:
        """Catch up with changes other processes made (journals, hierarchy, maildirs)."""
        for info in self.list_folders():
            self.folder_by_id(info.id).refresh()

    def close(self) -> None:
        with self._lock:
            indexes = list(self._indexes.values())
            self._indexes.clear()
        for index in indexes:
            index.close()


class Folder:
    """One folder of a mailbox: a light handle (create as many as you like).

    Every method blocks on disk I/O and raises only `StoreError` subclasses (OSError
    becomes `TemporaryFailure`).
    """

    __slots__ = ("id", "mailbox")

    def __init__(self, mailbox: Mailbox, folder_id: str) -> None:
        self.mailbox = mailbox
        self.id = folder_id

    def __repr__(self) -> str:
        return f"<Folder {self.id} of {self.mailbox.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Folder) and other.id == self.id and other.mailbox is self.mailbox

    def __hash__(self) -> int:
        return hash((self.mailbox.id, self.id))

    @property
    def info(self) -> FolderInfo:
        info = self.mailbox._read_meta().folders.get(self.id)
        if info is None:
            raise FolderNotFound("the folder was deleted")
        return info

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def kind(self) -> FolderKind:
        return self.info.kind

    @property
    def role(self) -> SpecialUse | None:
        return self.info.role

    @property
    def _index(self) -> FolderIndex:
        return self.mailbox._index(self.info)

    # --- reading --------------------------------------------------------------------------

    def refresh(self) -> None:
        """Catch up with other processes' changes (publishing their events)."""
        with _io_errors(), self._index.locked():
            pass

    def snapshot(self) -> FolderSnapshot:
        with _io_errors():
            return self._index.snapshot()

    def status(self) -> FolderStatus:
        with _io_errors():
            return self._index.status()

    def changes_since(self, modseq: int) -> Changes:
        with _io_errors():
            return self._index.changes_since(modseq)

    def metadata(self, uids: Iterable[int]) -> dict[int, MessageMetadata]:
        """Cached metadata of the present UIDs (absent UIDs are left out)."""
        with _io_errors():
            return self._index.metadata(uids)

    def envelopes(self, uids: Iterable[int]) -> dict[int, tuple[Envelope, str]]:
        """(envelope, decoded subject) per present UID, cheaper than metadata() when that
        is all a listing needs (IMAP ENVELOPE, header SEARCH)."""
        with _io_errors():
            return self._index.envelopes(uids)

    def message_path(self, uid: int) -> Path:
        """Where the message file is now (read-only; it may be renamed by flag changes)."""
        with _io_errors():
            return self._index.message_path(uid)

    def message_paths(self, uids: Iterable[int]) -> dict[int, str]:
        """Paths of many messages at once (a reader streaming a folder); a path may go
        stale when another session changes flags, so fall back to open_message()."""
        with _io_errors():
            return self._index.message_paths(uids)

    def open_message(self, uid: int) -> BinaryIO:
        """The message file for reading (the caller closes it); MessageNotFound if gone."""
        with _io_errors():
            return self._index.open_message(uid)

    def read_message(self, uid: int, start: int = 0, length: int | None = None) -> bytes:
        """The message bytes, or `length` bytes from `start` (IMAP partial fetch, sections)."""
        with self.open_message(uid) as handle, _io_errors():
            handle.seek(start)
            return handle.read() if length is None else handle.read(length)

    # --- writing --------------------------------------------------------------------------

    def _prepare(self, message: NewMessage) -> tuple[Prepared, Path | None]:
        """Put the message in a file (ours, fsynced) and parse it; (prepared, temp file)."""
        when = message.internal_date
        date_ms = int((when.timestamp() if when else self.mailbox._store.clock.now()) * 1000)
        flags = flags_to_bits(message.flags)
        keywords = tuple(sorted(validate_keyword(k) for k in message.keywords))
        if isinstance(message.data, bytes):
            tmp = (
                self._index.path
                / "tmp"
                / unique_name(self.mailbox._store.clock, self.mailbox._store.host)
            )
            write_new_file(tmp, message.data, fsync=self.mailbox._store.fsync)
            metadata = parse_bytes(message.data)
            return Prepared(tmp, len(message.data), metadata, flags, keywords, date_ms), tmp
        path = Path(message.data)
        st = os.stat(path)
        metadata = parse_path(path)
        if self.mailbox._store.fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fdatasync(fd)  # data and size; the link is synced with its directory
            finally:
                os.close(fd)
        return Prepared(path, st.st_size, metadata, flags, keywords, date_ms), None

    def append(
        self,
        message: bytes | Path,
        *,
        flags: Iterable[Flag] = (),
        keywords: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> AppendResult:
        """Add one message (IMAP APPEND, EAS SendMail's copy to Sent Items, ...).

        Checks the quota (QuotaExceeded); returns once the message is durable.
        """
        return self.append_many(
            [NewMessage(message, frozenset(flags), frozenset(keywords), internal_date)]
        )[0]

    def append_many(self, messages: Sequence[NewMessage]) -> list[AppendResult]:
        """Add several messages in one transaction (one journal fsync): import, MULTIAPPEND."""
        if not messages:
            return []
        temps: list[Path] = []
        try:
            with _io_errors():
                prepared = []
                for message in messages:
                    item, tmp = self._prepare(message)
                    prepared.append(item)
                    if tmp is not None:
                        temps.append(tmp)
                self.mailbox._check_quota(sum(p.size for p in prepared))
                return self._add(prepared)
        finally:
            for tmp in temps:
                unlink_quietly(tmp)

    def _add(self, prepared: Sequence[Prepared]) -> list[AppendResult]:
        index = self._index
        with _io_errors():
            added = index.add(prepared)
        return [AppendResult(self.id, validity, uid, modseq) for uid, modseq, validity in added]

    def store_flags(
        self,
        uids: Iterable[int],
        mode: FlagMode,
        flags: Iterable[Flag] = (),
        keywords: Iterable[str] = (),
        *,
        unchanged_since: int | None = None,
    ) -> FlagUpdate:
        """Add, remove or replace flags and keywords (IMAP STORE, EAS read/flag/categories).

        With `unchanged_since` (RFC 7162 UNCHANGEDSINCE) messages whose MODSEQ is higher
        are left alone and reported in `failed`. UIDs not in the folder are ignored.
        """
        kws = [validate_keyword(k) for k in keywords]
        with _io_errors():
            return self._index.store_flags(
                uids, FlagMode(mode), flags_to_bits(flags), kws, unchanged_since=unchanged_since
            )

    def expunge(self, uids: Iterable[int]) -> ExpungeResult:
        """Remove messages for good (IMAP EXPUNGE/UID EXPUNGE, POP3 QUIT, EAS delete)."""
        with _io_errors():
            gone, modseq = self._index.expunge(uids)
        return ExpungeResult(gone, modseq)

    def copy_to(self, uids: Iterable[int], dest: Folder) -> CopyResult:
        """Copy messages (flags and keywords kept) into `dest` of the same mailbox.

        Files are hard-linked, metadata copied. Quota is checked. Returns the UID map
        (RFC 4315 COPYUID); UIDs not in this folder are skipped.
        """
        return self._copy(list(uids), dest, check_quota=True)

    def _copy(self, uids: list[int], dest: Folder, *, check_quota: bool) -> CopyResult:
        if dest.mailbox is not self.mailbox:
            raise PermanentFailure("copies stay within one mailbox")
        for _attempt in range(3):
            with _io_errors():
                exported = self._index.export(uids)
                if not exported:
                    status = dest.status()
                    return CopyResult(status.uidvalidity, ())
                if check_quota:
                    self.mailbox._check_quota(sum(e.size for e in exported))
                prepared = [
                    Prepared(
                        e.path,
                        e.size,
                        e.metadata if e.metadata is not None else parse_path(e.path),
                        e.flags,
                        e.keywords,
                        e.internal_date_ms,
                    )
                    for e in exported
                ]
            try:
                results = dest._add(prepared)
            except TemporaryFailure as exc:
                if isinstance(exc.__cause__, FileNotFoundError):
                    continue  # a source was expunged or renamed meanwhile: look again
                raise
            mapping = tuple((e.uid, r.uid) for e, r in zip(exported, results, strict=True))
            return CopyResult(results[0].uidvalidity, mapping)
        raise TemporaryFailure("messages kept changing during the copy")

    def move_to(self, uids: Iterable[int], dest: Folder) -> CopyResult:
        """Move messages (RFC 6851): they appear in `dest`, then vanish here. No loss.

        A crash between the two steps leaves a copy in both folders, never in neither.
        """
        result = self._copy(list(uids), dest, check_quota=False)
        if result.mapping:
            self.expunge(result.source_uids)
        return result

    # --- PIM items ------------------------------------------------------------------------

    def _item_kind(self) -> ItemKind:
        kind = _ITEM_KIND.get(self.kind)
        if kind is None:
            raise InvalidItem("this is a mail folder; items go into PIM folders")
        return kind

    def add_item(self, data: str | bytes, *, subject: str | None = None) -> AppendResult:
        """Store a calendar event or task (iCalendar), contact (vCard) or note (text).

        The folder's kind decides which; the payload is checked (InvalidItem) and its
        fields (start, end, due, summary, UID) go into the metadata cache.
        """
        kind = self._item_kind()
        message, _ = build_item_message(kind, data, subject, self.mailbox._store.clock.now())
        return self.append(message)

    def replace_item(
        self, uid: int, data: str | bytes, *, subject: str | None = None
    ) -> AppendResult:
        """Store a new version of an item (a new UID) and expunge the old one.

        Files are immutable, so an edit is add-then-expunge, like a MOVE; the item's own
        UID (iCalendar/vCard UID, in `PimFields.uid`) links the versions for EAS.
        """
        if not self._index.uid_exists(uid):
            raise MessageNotFound(f"no item with UID {uid}")
        result = self.add_item(data, subject=subject)
        self.expunge([uid])
        return result

    def read_item(self, uid: int) -> PimItem:
        meta = self.metadata([uid]).get(uid)
        if meta is None:
            raise MessageNotFound(f"no item with UID {uid}")
        kind = meta.pim.kind if meta.pim is not None else self._item_kind()
        data = self.read_message(uid)
        text = decode_body(data, meta.structure, len(data))
        return PimItem(kind=kind, subject=meta.subject, data=text, fields=meta.pim)
