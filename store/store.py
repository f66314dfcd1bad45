"""The store: mailboxes under one root directory, and local delivery into them.

Layout::

    <root>/<mailbox id>/         one maildir++ tree per mailbox (see store.mailbox)
    <root>/.tmp/                 delivery's temporary files (same file system)
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from . import faults
from .bus import ChangeBus
from .clock import SYSTEM_CLOCK, Clock
from .errors import (
    FolderNotFound,
    MailboxNotFound,
    StoreError,
    TemporaryFailure,
)
from .flags import Flag, flags_to_bits, validate_keyword
from .fsutil import fsync_dir, safe_hostname, unique_name, unlink_quietly, write_new_file
from .index import Prepared, parse_bytes, parse_path
from .limits import JOURNAL_COMPACT_MIN_BYTES
from .mailbox import MAILBOX_FILE, Folder, Mailbox
from .model import DeliveryResult
from .names import INBOX, normalize_folder_name, validate_mailbox_id

TMP_DIR = ".tmp"
TRASH_DIR = ".trash"


class Store:
    """All mailboxes under `root`. One per process is the norm; several (in one or more
    processes) may share a root: they coordinate through file locks and journals.

    `clock` names files and dates messages; `hostname` goes into maildir file names;
    `fsync=False` is for benchmarks measuring the cost of fsync, never for production.
    `journal_compact_bytes` sets how large a journal grows before compaction.
    """

    def __init__(
        self,
        root: Path,
        *,
        clock: Clock = SYSTEM_CLOCK,
        hostname: str | None = None,
        bus: ChangeBus | None = None,
        fsync: bool = True,
        journal_compact_bytes: int = JOURNAL_COMPACT_MIN_BYTES,
    ) -> None:
        self.root = Path(root)
        self.clock = clock
        self.host = safe_hostname(hostname)
        self.bus = bus if bus is not None else ChangeBus()
        self.fsync = fsync
        self.journal_compact_bytes = journal_compact_bytes
        self._lock = threading.Lock()
        self._mailboxes: dict[str, Mailbox] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / TMP_DIR).mkdir(mode=0o700, exist_ok=True)

    # --- mailboxes ------------------------------------------------------------------------

    def mailbox_path(self, mailbox_id: str) -> Path:
        return self.root / validate_mailbox_id(mailbox_id)

    def mailbox_exists(self, mailbox_id: str) -> bool:
        return (self.mailbox_path(mailbox_id) / MAILBOX_FILE).exists()

    def list_mailboxes(self) -> list[str]:
        return sorted(
            entry.name
            for entry in os.scandir(self.root)
            if not entry.name.startswith(".") and (Path(entry.path) / MAILBOX_FILE).exists()
        )

    def open_mailbox(self, mailbox_id: str, *, create: bool = True) -> Mailbox:
        """The mailbox with this id; created with the default folders on first use.

        With `create=False` a missing mailbox is MailboxNotFound.
        """
        with self._lock:
            mailbox = self._mailboxes.get(mailbox_id)  # only valid ids are ever in here
            if mailbox is not None and os.path.exists(f"{mailbox.path}/{MAILBOX_FILE}"):
                return mailbox
        path = self.mailbox_path(mailbox_id)
        if not create and not (path / MAILBOX_FILE).exists():
            raise MailboxNotFound(f"no mailbox {mailbox_id!r}")
        mailbox = Mailbox(self, mailbox_id, path)
        try:
            mailbox._create_or_repair()
        except OSError as exc:
            raise TemporaryFailure(f"cannot open mailbox: {exc.strerror or exc}") from exc
        with self._lock:
            existing = self._mailboxes.get(mailbox_id)
            if existing is not None:
                return existing
            self._mailboxes[mailbox_id] = mailbox
            return mailbox

    def delete_mailbox(self, mailbox_id: str) -> None:
        """Remove a mailbox and everything in it (for `mailhost user delete`)."""
        path = self.mailbox_path(mailbox_id)
        with self._lock:
            mailbox = self._mailboxes.pop(mailbox_id, None)
        if mailbox is not None:
            mailbox.close()
        if not path.exists():
            raise MailboxNotFound(f"no mailbox {mailbox_id!r}")
        trash = self.root / TMP_DIR / f"deleted-{uuid.uuid4().hex}"
        os.rename(path, trash)
        if self.fsync:
            fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            mailboxes = list(self._mailboxes.values())
            self._mailboxes.clear()
        for mailbox in mailboxes:
            mailbox.close()

    # --- delivery -------------------------------------------------------------------------

    def deliver(
        self,
        message: bytes | Path,
        mailbox_ids: Iterable[str],
        folder: str = INBOX,
        *,
        flags: Iterable[Flag] = (),
        keywords: Iterable[str] = (),
        internal_date: datetime | None = None,
    ) -> list[DeliveryResult]:
        """Deliver one message to several mailboxes; one result per distinct mailbox id.

        `message` is the whole message as bytes (CRLF line ends, as SMTP received it; the
        store serves the bytes verbatim) or the path of a file holding it, such as an SMTP
        spool file. A path is hard-linked when it is on the store's file system (copied
        otherwise), so its file must not be modified afterwards; unlinking it is fine.

        The message is written and fsynced once, linked into each mailbox's `folder` (Inbox
        if that folder does not exist), each directory fsynced and each index committed
        before this returns. Failures are per mailbox: a result carries a
        `TemporaryFailure`, `PermanentFailure` or `QuotaExceeded` instead of a UID, and
        nothing of a failed delivery stays visible. This method does not raise StoreError.
        """
        ids = list(dict.fromkeys(mailbox_ids))
        tmp: str | None = None
        try:
            bits = flags_to_bits(flags)
            kws = tuple(sorted(validate_keyword(k) for k in keywords))
            date_ms = int((internal_date.timestamp() if internal_date else self.clock.now()) * 1000)
            source: str | Path
            if isinstance(message, bytes):
                tmp = f"{self.root}/{TMP_DIR}/{unique_name(self.clock, self.host)}"
                write_new_file(tmp, message, fsync=self.fsync)
                source, size, metadata = tmp, len(message), parse_bytes(message)
            else:
                path = source = Path(message)
                size = os.stat(path).st_size
                metadata = parse_path(path)
                if self.fsync:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fdatasync(fd)  # data and size; the link is synced with its directory
                    finally:
                        os.close(fd)
            faults.reached("deliver.tmp_written")
        except StoreError as exc:
            if tmp is not None:
                unlink_quietly(tmp)
            return [DeliveryResult(mid, error=exc) for mid in ids]
        except OSError as exc:
            if tmp is not None:
                unlink_quietly(tmp)
            error = TemporaryFailure(f"cannot write the message: {exc.strerror or exc}")
            return [DeliveryResult(mid, error=error) for mid in ids]
        try:
            prepared = Prepared(source, size, metadata, bits, kws, date_ms)
            return [self._deliver_one(mid, folder, prepared) for mid in ids]
        finally:
            if tmp is not None:
                unlink_quietly(tmp)

    def _deliver_one(self, mailbox_id: str, folder: str, prepared: Prepared) -> DeliveryResult:
        try:
            mailbox = self.open_mailbox(mailbox_id)
            target = self._delivery_folder(mailbox, folder)
            mailbox._check_quota(prepared.size)
            result = target._add([prepared])[0]
        except StoreError as exc:
            return DeliveryResult(mailbox_id, error=exc)
        except OSError as exc:
            return DeliveryResult(
                mailbox_id, error=TemporaryFailure(f"I/O error: {exc.strerror or exc}")
            )
        return DeliveryResult(
            mailbox_id,
            folder_id=result.folder_id,
            uidvalidity=result.uidvalidity,
            uid=result.uid,
            modseq=result.modseq,
        )

    @staticmethod
    def _delivery_folder(mailbox: Mailbox, folder: str) -> Folder:
        name = normalize_folder_name(folder)
        try:
            return mailbox.folder(name)
        except FolderNotFound:
            return mailbox.inbox  # as Dovecot's LDA does when the target folder is missing
