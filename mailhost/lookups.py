"""The directory as the layers below read it (they know nothing of SQLite)."""

from __future__ import annotations

from collections.abc import Sequence

from mailhost.directory import Directory, DomainType
from protocols.activesync.commands import Recipient
from transport.hub import DomainKind, LocalRecipient

_KINDS = {
    DomainType.AUTHORITATIVE: DomainKind.AUTHORITATIVE,
    DomainType.INTERNAL_RELAY: DomainKind.INTERNAL_RELAY,
    DomainType.EXTERNAL_RELAY: DomainKind.EXTERNAL_RELAY,
}


class DirectoryRouting:
    """`transport.hub.HubDirectory` over the directory database."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def domain_kind(self, domain: str) -> DomainKind | None:
        found = self._directory.domain(domain)
        return None if found is None else _KINDS[found.type]

    def local_recipient(self, address: str) -> LocalRecipient | None:
        user = self._directory.user_by_address(address)
        if user is None:
            return None
        return LocalRecipient(mailbox_id=user.guid, owner=user.primary_address)

    def addresses_of(self, owner: str) -> tuple[str, ...]:
        user = self._directory.user_by_address(owner)
        return () if user is None else tuple(self._directory.addresses_of(user.id))


class DirectoryRecipients:
    """ActiveSync ResolveRecipients and GAL search over the directory."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def resolve(self, query: str, *, limit: int) -> Sequence[Recipient]:
        return [
            Recipient(display_name=user.display_name, address=user.primary_address)
            for user in self._directory.search_users(query, limit=limit)
        ]
