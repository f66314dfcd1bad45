"""The mailbox store: maildir++ folders, UID/MODSEQ indexes, metadata, change bus, PIM items.

Shared by SMTP local delivery, IMAP, POP3 and ActiveSync; knows nothing of any of them.
Every operation is synchronous (blocking file I/O, fsync): async callers wrap it in
``trio.to_thread.run_sync``. Errors are protocol-neutral `StoreError` subclasses.

Public API (signatures abridged)::

    store = Store(root: Path, *, clock=SYSTEM_CLOCK, hostname=None, bus=None, fsync=True)
    store.open_mailbox(mailbox_id, *, create=True) -> Mailbox   # default folders on first use
    store.deliver(message: bytes | Path, mailbox_ids, folder="Inbox", *, flags=(),
                  keywords=(), internal_date=None) -> list[DeliveryResult]   # one per mailbox
    store.mailbox_exists(id) / list_mailboxes() / delete_mailbox(id) / close()
    store.bus: ChangeBus

    Mailbox: id, inbox, list_folders() -> [FolderInfo], folder(name), folder_by_id(id),
        folder_by_role(SpecialUse), folder_of_kind(FolderKind), create_folder(name, *, kind,
        role, subscribed), rename_folder(old, new), delete_folder(name, *, recursive),
        set_subscribed(name, bool), hierarchy_modseq, hierarchy_changes(since),
        quota() -> Quota, set_quota(bytes | None), refresh()

    Folder: id, name, kind, role, info, refresh(), snapshot() -> FolderSnapshot,
        status() -> FolderStatus, changes_since(modseq) -> Changes,
        metadata(uids) -> {uid: MessageMetadata}, open_message(uid), read_message(uid,
        start, length), message_path(uid), append(message, *, flags, keywords,
        internal_date) -> AppendResult, append_many([NewMessage]), store_flags(uids, mode,
        flags, keywords, *, unchanged_since) -> FlagUpdate, expunge(uids) -> ExpungeResult,
        copy_to(uids, dest) -> CopyResult, move_to(uids, dest) -> CopyResult,
        add_item(data, *, subject), replace_item(uid, data, *, subject), read_item(uid)

    bus.subscribe(mailbox_id, folder_id=None) -> Subscription   # (async) context manager
        await sub.receive() -> MessagesAdded | FlagsChanged | MessagesExpunged |
            FolderCreated | FolderRenamed | FolderDeleted | ResyncNeeded

    store.admin: mailbox_stats, reindex_mailbox, set_quota, import_mbox, import_maildir

Errors: StoreError > TemporaryFailure, PermanentFailure (> InvalidFolderName,
InvalidMailboxId, InvalidKeyword, InvalidItem, MailboxNotFound, FolderNotFound,
MessageNotFound, FolderExists, FolderHasChildren, FolderProtected), QuotaExceeded.

On-disk formats: `store.index` (folder files), `store.mailbox` (hierarchy), `store.names`
(folder name escaping). Limits: `store.limits`.
"""

from __future__ import annotations

from .bus import (
    ChangeBus,
    ChangeEvent,
    FlagsChanged,
    FolderCreated,
    FolderDeleted,
    FolderRenamed,
    MessagesAdded,
    MessagesExpunged,
    ResyncNeeded,
    Subscription,
)
from .clock import SYSTEM_CLOCK, Clock, FixedClock, SystemClock
from .errors import (
    FolderExists,
    FolderHasChildren,
    FolderNotFound,
    FolderProtected,
    InvalidFolderName,
    InvalidItem,
    InvalidKeyword,
    InvalidMailboxId,
    MailboxNotFound,
    MessageNotFound,
    PermanentFailure,
    QuotaExceeded,
    StoreError,
    TemporaryFailure,
)
from .flags import Flag, FlagMode
from .mailbox import DEFAULT_FOLDERS, Folder, HierarchyChanges, Mailbox, NewMessage
from .metadata import Attachment, Importance, MessageMetadata
from .mime import Address, BodyPart, Envelope, decode_words
from .model import (
    AppendResult,
    Changes,
    CopyResult,
    DeliveryResult,
    ExpungeResult,
    FlagUpdate,
    FolderInfo,
    FolderKind,
    FolderSnapshot,
    FolderStatus,
    MessageSummary,
    Quota,
    SpecialUse,
)
from .names import INBOX, SEPARATOR
from .pim import ItemKind, PimFields, PimItem
from .store import Store

__all__ = [
    "DEFAULT_FOLDERS",
    "INBOX",
    "SEPARATOR",
    "SYSTEM_CLOCK",
    "Address",
    "AppendResult",
    "Attachment",
    "BodyPart",
    "ChangeBus",
    "ChangeEvent",
    "Changes",
    "Clock",
    "CopyResult",
    "DeliveryResult",
    "Envelope",
    "ExpungeResult",
    "FixedClock",
    "Flag",
    "FlagMode",
    "FlagUpdate",
    "FlagsChanged",
    "Folder",
    "FolderCreated",
    "FolderDeleted",
    "FolderExists",
    "FolderHasChildren",
    "FolderInfo",
    "FolderKind",
    "FolderNotFound",
    "FolderProtected",
    "FolderRenamed",
    "FolderSnapshot",
    "FolderStatus",
    "HierarchyChanges",
    "Importance",
    "InvalidFolderName",
    "InvalidItem",
    "InvalidKeyword",
    "InvalidMailboxId",
    "ItemKind",
    "Mailbox",
    "MailboxNotFound",
    "MessageMetadata",
    "MessageNotFound",
    "MessageSummary",
    "MessagesAdded",
    "MessagesExpunged",
    "NewMessage",
    "PermanentFailure",
    "PimFields",
    "PimItem",
    "Quota",
    "QuotaExceeded",
    "ResyncNeeded",
    "SpecialUse",
    "Store",
    "StoreError",
    "Subscription",
    "SystemClock",
    "TemporaryFailure",
    "decode_words",
]
