"""The POP3 maildrop over the store: a user's Inbox, fixed at login (RFC 1939 5)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from protocols.auth import Account
from protocols.pop3.session import Listing
from store.errors import MessageNotFound
from store.store import Store

# Paths are looked up this many messages at a time: one store lock per batch instead
# of one per RETR (clients download in order).
PATH_BATCH = 512


class StoreMaildrop:
    def __init__(self, store: Store, mailbox_id: str) -> None:
        self._folder = store.open_mailbox(mailbox_id).inbox
        self._snapshot = self._folder.snapshot()
        self._uids = list(self._snapshot.uids)
        self._paths: dict[int, str] = {}

    @property
    def uidvalidity(self) -> int:
        return self._snapshot.uidvalidity

    def messages(self) -> Listing:
        return Listing(self._snapshot.uids, self._snapshot.sizes)

    def read_cached(self, uid: int) -> bytes | None:
        """The message when its path is already known (no store lock taken: safe on the
        event loop for a small file); None when the store must be asked (use `read`)."""
        path = self._paths.get(uid)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        del self._paths[uid]
        return data

    def read(self, uid: int) -> bytes | None:
        path = self._paths.pop(uid, None)
        if path is None:
            start = bisect.bisect_left(self._uids, uid)
            self._paths = self._folder.message_paths(self._uids[start : start + PATH_BATCH])
            path = self._paths.pop(uid, None)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except FileNotFoundError:
                pass  # renamed by a flag change in another session: ask the store
        try:
            return self._folder.read_message(uid)
        except MessageNotFound:
            return None

    def delete(self, uids: Sequence[int]) -> None:
        self._folder.expunge(uids)


class StoreMaildrops:
    def __init__(self, store: Store) -> None:
        self._store = store

    def open(self, account: Account) -> StoreMaildrop:
        return StoreMaildrop(self._store, account.mailbox_id)
