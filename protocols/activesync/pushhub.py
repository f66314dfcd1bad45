"""Long polls and request order per device: Direct Push bookkeeping.

- One long poll per device (Ping, or Sync with Wait/HeartbeatInterval): a new one ends the
  earlier one at once (checklist 1.10.4: devices that lost a connection ping again on a new
  one, and the old request would otherwise hold its slot until its heartbeat ran out).
- One request at a time touches a device's sync state (`device_lock`): two Syncs from one
  phone (a retry racing the original) cannot both move the same SyncKey on.

Memory per held Ping is a dictionary entry and a `trio.Event`; the change bus
subscription and the HTTP connection are the rest of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import trio

DeviceKey = tuple[str, str]  # (mailbox id, device id)


@dataclass(frozen=True, slots=True)
class PushStatistics:
    held: int  # long polls waiting now
    superseded: int  # long polls ended early by a newer one from the same device


class _Lock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = trio.Lock()
        self.users = 0


class PushHub:
    def __init__(self) -> None:
        self._held: dict[DeviceKey, trio.Event] = {}
        self._locks: dict[DeviceKey, _Lock] = {}
        self._superseded = 0

    @contextmanager
    def hold(self, mailbox_id: str, device_id: str) -> Iterator[trio.Event]:
        """Register a long poll; the event is set when a newer one from the same device
        arrives (the holder then answers at once)."""
        key = (mailbox_id, device_id)
        earlier = self._held.get(key)
        if earlier is not None:
            earlier.set()
            self._superseded += 1
        mine = trio.Event()
        self._held[key] = mine
        try:
            yield mine
        finally:
            if self._held.get(key) is mine:
                del self._held[key]

    @asynccontextmanager
    async def device_lock(self, mailbox_id: str, device_id: str) -> AsyncIterator[None]:
        key = (mailbox_id, device_id)
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = _Lock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]

    def statistics(self) -> PushStatistics:
        return PushStatistics(len(self._held), self._superseded)
