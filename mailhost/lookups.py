"""The directory as the layers below read it (they know nothing of SQLite)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from mailhost.directory import Directory, DomainType
from protocols.activesync.commands import Recipient
from transport.hub import DomainKind, LocalRecipient

_KINDS = {
    DomainType.AUTHORITATIVE: DomainKind.AUTHORITATIVE,
    DomainType.INTERNAL_RELAY: DomainKind.INTERNAL_RELAY,
    DomainType.EXTERNAL_RELAY: DomainKind.EXTERNAL_RELAY,
}


# Answers DirectoryRouting keeps per thread until the directory changes; past this many
# it starts again (an address harvester's misses cannot grow it without bound).
ROUTING_CACHE_ENTRIES = 10_000
# The data version asked once serves the lookups of this long (the domain, then the
# mailbox, of one recipient): a change cannot be told from one made just after them.
VERSION_RECHECK_SECONDS = 0.002


class DirectoryRouting:
    """`transport.hub.HubDirectory` over the directory database.

    The hub asks for every recipient twice (at RCPT, and again at delivery): the domain
    and mailbox answers are kept per thread for as long as the directory's data version
    stays the same (one cheap PRAGMA instead of the two queries), so a change made by
    the CLI applies to the next lookup."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._local = threading.local()

    def _cache(self) -> dict[tuple[str, str], Any]:
        local = self._local
        cache: dict[tuple[str, str], Any] | None = getattr(local, "cache", None)
        now = time.monotonic()
        if (
            cache is not None
            and now - local.checked < VERSION_RECHECK_SECONDS
            and len(cache) < ROUTING_CACHE_ENTRIES
        ):
            return cache
        version = self._directory.data_version()
        if cache is None or local.version != version or len(cache) >= ROUTING_CACHE_ENTRIES:
            cache = local.cache = {}
            local.version = version
        local.checked = now
        return cache

    def domain_kind(self, domain: str) -> DomainKind | None:
        cache = self._cache()
        key = ("domain", domain)
        if key in cache:
            kind: DomainKind | None = cache[key]
            return kind
        found = self._directory.domain(domain)
        kind = cache[key] = None if found is None else _KINDS[found.type]
        return kind

    def local_recipient(self, address: str) -> LocalRecipient | None:
        cache = self._cache()
        key = ("mailbox", address)
        if key in cache:
            mailbox: LocalRecipient | None = cache[key]
            return mailbox
        user = self._directory.user_by_address(address)
        if user is not None:
            mailbox = LocalRecipient(mailbox_id=user.guid, owner=user.primary_address)
        else:
            mailbox = None
        cache[key] = mailbox
        return mailbox

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
