"""What the mail commands share: their dependencies, the folder hierarchy as EAS types it,
and running blocking store work off the event loop.

Collection ids are the store's folder ids (stable across renames); item ServerIds are
`<folder id>:<uid>` (see `protocols.activesync.mail`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, ParamSpec, TypeVar

import trio

from store import FolderInfo, FolderKind, FolderNotFound, Mailbox, SpecialUse, Store
from store.names import INBOX, SEPARATOR
from transport.submission import Submitter

from ..mail import TokenCache
from ..pushhub import PushHub
from ..syncstate import FolderEntry, SyncStateStore
from .resolverecipients import RecipientLookup

log = logging.getLogger("mailhost.activesync")

_P = ParamSpec("_P")
_T = TypeVar("_T")

# MS-ASCMD 2.2.3.186.3 FolderHierarchy Type.
TYPE_USER_GENERIC: Final = 1
TYPE_INBOX: Final = 2
TYPE_DRAFTS: Final = 3
TYPE_DELETED: Final = 4
TYPE_SENT: Final = 5
TYPE_OUTBOX: Final = 6
TYPE_TASKS: Final = 7
TYPE_CALENDAR: Final = 8
TYPE_CONTACTS: Final = 9
TYPE_NOTES: Final = 10
TYPE_USER_MAIL: Final = 12
TYPE_USER_CALENDAR: Final = 13
TYPE_USER_CONTACTS: Final = 14
TYPE_USER_TASKS: Final = 15
TYPE_USER_NOTES: Final = 17
ROOT_ID: Final = "0"  # MS-ASCMD 2.2.3.123: ParentId 0 is the root

_ROLE_TYPES: Final = {
    SpecialUse.INBOX: TYPE_INBOX,
    SpecialUse.DRAFTS: TYPE_DRAFTS,
    SpecialUse.TRASH: TYPE_DELETED,
    SpecialUse.SENT: TYPE_SENT,
}
_KIND_TYPES: Final = {  # (default folder type, user-created folder type)
    FolderKind.MAIL: (TYPE_USER_MAIL, TYPE_USER_MAIL),
    FolderKind.CALENDAR: (TYPE_CALENDAR, TYPE_USER_CALENDAR),
    FolderKind.CONTACTS: (TYPE_CONTACTS, TYPE_USER_CONTACTS),
    FolderKind.TASKS: (TYPE_TASKS, TYPE_USER_TASKS),
    FolderKind.NOTES: (TYPE_NOTES, TYPE_USER_NOTES),
}
# Folder kinds this server synchronises. Calendar, contacts, tasks and notes join when their
# data classes are served; until then their folders are not shown, so no device tries to
# sync them (adding them later reaches devices as ordinary FolderSync Adds).
SERVED_KINDS: Final = frozenset({FolderKind.MAIL})
# Worker threads for blocking store and state work at once (many held Pings check their
# folders when they start; the rest wait their turn).
STORE_THREADS: Final = 16


def folder_type(info: FolderInfo) -> int:
    if info.role in _ROLE_TYPES:
        return _ROLE_TYPES[info.role]
    default_type, user_type = _KIND_TYPES[info.kind]
    return default_type if info.default and info.kind is not FolderKind.MAIL else user_type


def served_folders(mailbox: Mailbox) -> list[FolderInfo]:
    return [f for f in mailbox.list_folders() if f.kind in SERVED_KINDS]


def hierarchy_view(folders: list[FolderInfo]) -> dict[str, FolderEntry]:
    """folder id -> (parent id, display name, type): what FolderSync shows."""
    by_name = {f.name: f.id for f in folders}
    view: dict[str, FolderEntry] = {}
    for info in folders:
        parent = info.parent
        parent_id = by_name.get(parent, ROOT_ID) if parent is not None else ROOT_ID
        view[info.id] = (parent_id, info.leaf, folder_type(info))
    return view


def served_folder(mailbox: Mailbox, folder_id: str) -> FolderInfo | None:
    """The folder with this collection id if it exists and is served here."""
    try:
        info = mailbox.folder_by_id(folder_id).info
    except FolderNotFound:
        return None
    return info if info.kind in SERVED_KINDS else None


def child_name(parent: str | None, leaf: str) -> str:
    return leaf if parent is None else f"{parent}{SEPARATOR}{leaf}"


def is_inbox(info: FolderInfo) -> bool:
    return info.name == INBOX


@dataclass(frozen=True, slots=True)
class MailServices:
    """The dependencies of the mail commands (the service builds one)."""

    store: Store
    states: SyncStateStore
    push: PushHub = field(default_factory=PushHub)
    submitter: Submitter | None = None
    recipients: RecipientLookup | None = None
    tokens: TokenCache = field(default_factory=TokenCache)
    limiter: trio.CapacityLimiter = field(
        default_factory=lambda: trio.CapacityLimiter(STORE_THREADS)
    )

    async def run(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run blocking store/state work in a worker thread."""
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self.limiter
        )

    def mailbox(self, mailbox_id: str) -> Mailbox:
        return self.store.open_mailbox(mailbox_id)
