"""Maintenance functions behind the `mailhost` CLI: reindex, stats, import, quota.

They block and may run long; `progress` callbacks let the CLI draw a progress bar. They are
safe to run while the server runs on the same data: every write goes through the same
locks and journals, and the server's change bus learns of the changes when it next
touches the folders.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .errors import FolderNotFound, InvalidFolderName, QuotaExceeded
from .flags import Flag, bits_to_flags, letters_to_bits
from .index import parse_file_name, read_keywords_file
from .limits import IMPORT_BATCH, MAX_IMPORT_MESSAGE_BYTES
from .mailbox import Folder, Mailbox, NewMessage
from .model import FolderKind, Quota, SpecialUse
from .names import INBOX, folder_name_from_dir
from .store import Store

_EOL = re.compile(rb"\r?\n")
_FROM_ESCAPED = re.compile(rb"^>(>*From )", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class FolderStats:
    id: str
    name: str
    kind: FolderKind
    role: SpecialUse | None
    messages: int
    unseen: int
    size: int


@dataclass(frozen=True, slots=True)
class MailboxStats:
    mailbox_id: str
    folders: tuple[FolderStats, ...]
    quota: Quota

    @property
    def messages(self) -> int:
        return sum(f.messages for f in self.folders)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.folders)


@dataclass(frozen=True, slots=True)
class ImportProgress:
    folder: str
    imported: int
    skipped: int
    bytes_read: int
    total_bytes: int | None  # of the source, when known (mbox size)


@dataclass(frozen=True, slots=True)
class ImportReport:
    imported: int
    skipped: int
    folders: tuple[str, ...]


Progress = Callable[[ImportProgress], None]


def mailbox_stats(store: Store, mailbox_id: str) -> MailboxStats:
    """Per-folder message counts, unseen counts and sizes, plus the quota."""
    mailbox = store.open_mailbox(mailbox_id, create=False)
    folders = []
    for info in mailbox.list_folders():
        status = mailbox.folder_by_id(info.id).status()
        folders.append(
            FolderStats(
                info.id,
                info.name,
                info.kind,
                info.role,
                status.messages,
                status.unseen,
                status.size,
            )
        )
    return MailboxStats(mailbox_id, tuple(folders), mailbox.quota())


def reindex_mailbox(store: Store, mailbox_id: str) -> MailboxStats:
    """Rebuild every folder's index and metadata cache from the maildir files.

    UIDs and UIDVALIDITY are kept (they are in the file names and mailhost.folder);
    MODSEQs restart above the old highest, so CONDSTORE/QRESYNC clients resync.
    """
    mailbox = store.open_mailbox(mailbox_id, create=False)
    for info in mailbox.list_folders():
        folder = mailbox.folder_by_id(info.id)
        folder._index.rebuild()
        folder.metadata(folder.snapshot().uids)  # reparse and cache every message
    return mailbox_stats(store, mailbox_id)


def set_quota(store: Store, mailbox_id: str, limit: int | None) -> Quota:
    """Set the storage quota in bytes (None: unlimited); returns the new figures."""
    mailbox = store.open_mailbox(mailbox_id, create=False)
    mailbox.set_quota(limit)
    return mailbox.quota()


def _crlf(data: bytes) -> bytes:
    return _EOL.sub(b"\r\n", data)


def _from_line_date(line: bytes) -> datetime | None:
    """The date of an mbox "From sender Tue Jul  1 10:52:37 2003" line, if readable."""
    parts = line.decode("ascii", errors="replace").split()
    if len(parts) < 7:
        return None
    try:
        parsed = time.strptime(" ".join(parts[2:7]), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        return None
    return datetime(*parsed[:6], tzinfo=UTC)


def iter_mbox(path: Path) -> Iterator[tuple[bytes, datetime | None, int]]:
    """(message with CRLF line ends, From_ date, bytes read so far) for each message.

    mboxrd unescaping (">From " loses one '>'); a message is ended by a "From " line that
    follows an empty line or starts the file. Messages over MAX_IMPORT_MESSAGE_BYTES are
    yielded empty (the caller counts them as skipped).
    """
    with open(path, "rb") as handle:
        lines: list[bytes] = []
        size = 0
        date: datetime | None = None
        started = False
        previous_blank = True
        read = 0
        for line in handle:
            read += len(line)
            if line.startswith(b"From ") and previous_blank:
                if started:
                    yield _finish(lines, size), date, read - len(line)
                lines, size, started = [], 0, True
                date = _from_line_date(line)
                previous_blank = False
                continue
            previous_blank = line in (b"\n", b"\r\n")
            if not started:
                continue
            size += len(line)
            if size <= MAX_IMPORT_MESSAGE_BYTES:
                lines.append(line)
        if started:
            yield _finish(lines, size), date, read


def _finish(lines: list[bytes], size: int) -> bytes:
    if size > MAX_IMPORT_MESSAGE_BYTES:
        return b""
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]  # the blank line before the next From_ belongs to mbox
    return _crlf(_FROM_ESCAPED.sub(rb"\1", b"".join(lines)))


def _flush(folder: Folder, batch: list[NewMessage]) -> int:
    if not batch:
        return 0
    folder.append_many(batch)
    count = len(batch)
    batch.clear()
    return count


def import_mbox(
    store: Store,
    mailbox_id: str,
    path: Path,
    *,
    folder: str = INBOX,
    progress: Progress | None = None,
) -> ImportReport:
    """Import every message of an mbox file into `folder` (created if missing)."""
    mailbox = store.open_mailbox(mailbox_id)
    target = _folder(mailbox, folder)
    total = os.stat(path).st_size
    imported = skipped = 0
    batch: list[NewMessage] = []
    for data, date, read in iter_mbox(path):
        if not data:
            skipped += 1
            continue
        batch.append(NewMessage(data, internal_date=date))
        if len(batch) >= IMPORT_BATCH:
            imported += _flush(target, batch)
            if progress:
                progress(ImportProgress(target.name, imported, skipped, read, total))
    imported += _flush(target, batch)
    if progress:
        progress(ImportProgress(target.name, imported, skipped, total, total))
    return ImportReport(imported, skipped, (target.name,))


def _folder(mailbox: Mailbox, name: str) -> Folder:
    try:
        return mailbox.folder(name)
    except FolderNotFound:
        mailbox.create_folder(name)
        return mailbox.folder(name)


def import_maildir(
    store: Store, mailbox_id: str, path: Path, *, progress: Progress | None = None
) -> ImportReport:
    """Import a maildir or maildir++ tree: the root into Inbox, ``.A.B`` into ``A/B``.

    Flags come from the info suffix, keywords from the source's dovecot-keywords, the
    internal date from the file's mtime. Quota is enforced (QuotaExceeded stops it).
    """
    mailbox = store.open_mailbox(mailbox_id)
    sources: list[tuple[str, Path]] = [(INBOX, path)]
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name.startswith(".") and entry.is_dir() and (Path(entry.path) / "cur").is_dir():
            try:
                sources.append((folder_name_from_dir(entry.name), Path(entry.path)))
            except InvalidFolderName:
                continue
    imported = skipped = 0
    names = []
    read = 0
    for name, directory in sources:
        target = _folder(mailbox, name)
        names.append(target.name)
        table = read_keywords_file(directory)
        batch: list[NewMessage] = []
        for sub in ("cur", "new"):
            if not (directory / sub).is_dir():
                continue
            for entry in sorted(os.scandir(directory / sub), key=lambda e: e.name):
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                st = entry.stat()
                if st.st_size > MAX_IMPORT_MESSAGE_BYTES:
                    skipped += 1
                    continue
                parsed = parse_file_name(entry.name)
                info = (parsed.info or "") if parsed is not None and sub == "cur" else ""
                flags: frozenset[Flag] = bits_to_flags(letters_to_bits(info))
                keywords = frozenset(
                    table[ord(c) - ord("a")]
                    for c in info
                    if "a" <= c <= "z" and ord(c) - ord("a") < len(table)
                )
                with open(entry.path, "rb") as handle:
                    data = _crlf(handle.read())
                read += st.st_size
                batch.append(
                    NewMessage(
                        data,
                        flags=flags,
                        keywords=keywords,
                        internal_date=datetime.fromtimestamp(st.st_mtime, UTC),
                    )
                )
                if len(batch) >= IMPORT_BATCH:
                    imported += _flush(target, batch)
                    if progress:
                        progress(ImportProgress(target.name, imported, skipped, read, None))
        imported += _flush(target, batch)
        if progress:
            progress(ImportProgress(target.name, imported, skipped, read, None))
    return ImportReport(imported, skipped, tuple(names))


__all__ = [
    "FolderStats",
    "ImportProgress",
    "ImportReport",
    "MailboxStats",
    "QuotaExceeded",
    "import_maildir",
    "import_mbox",
    "iter_mbox",
    "mailbox_stats",
    "reindex_mailbox",
    "set_quota",
]
