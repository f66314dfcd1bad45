"""The directory as the hub transport reads it (transport knows nothing of SQLite)."""

from __future__ import annotations

from mailhost.directory import Directory, DomainType
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
