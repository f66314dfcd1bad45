"""The POP3 maildrop over the store: a user's Inbox, fixed at login (RFC 1939 5)."""

from __future__ import annotations

from collections.abc import Sequence

from protocols.auth import Account
from protocols.pop3.session import DropMessage
from store.errors import MessageNotFound
from store.store import Store


class StoreMaildrop:
    def __init__(self, store: Store, mailbox_id: str) -> None:
        self._folder = store.open_mailbox(mailbox_id).inbox
        self._snapshot = self._folder.snapshot()

    @property
    def uidvalidity(self) -> int:
        return self._snapshot.uidvalidity

    def messages(self) -> Sequence[DropMessage]:
        return [DropMessage(m.uid, m.size) for m in self._snapshot]

    def read(self, uid: int) -> bytes | None:
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
