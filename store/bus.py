"""The change bus: typed events, published the moment the store changes, to trio tasks.

Every change the store makes (or notices another process made, when a folder catches up
with its journal) is published here with its MODSEQ. IMAP IDLE, EAS Ping and Sync-with-Wait
subscribe instead of polling anything::

    with store.bus.subscribe(mailbox_id) as sub:      # or `async with`, or folder_id=...
        event = await sub.receive()

Store operations run in worker threads (``trio.to_thread.run_sync``), in the trio thread, or
with no trio at all (the CLI), so `ChangeBus.publish` is thread-safe and never blocks: it
appends to each subscriber's bounded buffer under a plain lock and wakes the subscriber
through the trio token captured when it subscribed. A subscriber that falls more than its
buffer behind loses the buffered events and receives one `ResyncNeeded` instead: memory
stays bounded and the subscriber learns it must re-read the folder state.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from types import TracebackType

import trio

DEFAULT_BUFFER = 1000  # events buffered per subscriber before they collapse into a resync


@dataclass(frozen=True, slots=True)
class MessagesAdded:
    mailbox_id: str
    folder_id: str
    uids: tuple[int, ...]
    modseq: int


@dataclass(frozen=True, slots=True)
class FlagsChanged:
    mailbox_id: str
    folder_id: str
    uids: tuple[int, ...]
    modseq: int


@dataclass(frozen=True, slots=True)
class MessagesExpunged:
    mailbox_id: str
    folder_id: str
    uids: tuple[int, ...]
    modseq: int


@dataclass(frozen=True, slots=True)
class FolderCreated:
    mailbox_id: str
    folder_id: str
    name: str
    hierarchy_modseq: int


@dataclass(frozen=True, slots=True)
class FolderRenamed:
    mailbox_id: str
    folder_id: str
    old_name: str
    new_name: str
    hierarchy_modseq: int


@dataclass(frozen=True, slots=True)
class FolderDeleted:
    mailbox_id: str
    folder_id: str
    name: str
    hierarchy_modseq: int


@dataclass(frozen=True, slots=True)
class ResyncNeeded:
    """Events were lost (buffer overflow, or an index replaced by another process):
    re-read the folder (or, with `folder_id` None, the whole mailbox)."""

    mailbox_id: str
    folder_id: str | None


ChangeEvent = (
    MessagesAdded
    | FlagsChanged
    | MessagesExpunged
    | FolderCreated
    | FolderRenamed
    | FolderDeleted
    | ResyncNeeded
)


@dataclass(frozen=True, slots=True)
class BusStatistics:
    subscribers: int
    published: int


class Subscription:
    """One subscriber's bounded queue. Receive from the trio thread that subscribed."""

    def __init__(
        self,
        bus: ChangeBus,
        mailbox_id: str,
        folder_id: str | None,
        buffer: int,
        token: trio.lowlevel.TrioToken,
    ) -> None:
        self.mailbox_id = mailbox_id
        self.folder_id = folder_id
        self._bus = bus
        self._max = buffer
        self._token = token
        self._lock = threading.Lock()
        self._queue: deque[ChangeEvent] = deque()
        self._overflowed = False
        self._closed = False
        self._wake_pending = False
        self._event = trio.Event()

    def _wants(self, event: ChangeEvent) -> bool:
        if self.folder_id is None:
            return True
        if isinstance(event, FolderCreated):
            return False
        return event.folder_id is None or event.folder_id == self.folder_id

    def _push(self, event: ChangeEvent) -> None:
        """Called from any thread by ChangeBus.publish; never blocks."""
        with self._lock:
            if self._closed:
                return
            if len(self._queue) >= self._max:
                self._queue.clear()
                self._overflowed = True
            else:
                self._queue.append(event)
            if self._wake_pending:
                return
            self._wake_pending = True
        try:
            self._token.run_sync_soon(self._wake)
        except trio.RunFinishedError:
            self.close()

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._event.set()

    def _next(self) -> ChangeEvent | None:
        with self._lock:
            if self._overflowed:
                self._overflowed = False
                return ResyncNeeded(self.mailbox_id, self.folder_id)
            if self._queue:
                return self._queue.popleft()
            if self._closed:
                raise trio.ClosedResourceError("subscription closed")
            return None

    async def receive(self) -> ChangeEvent:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            event = self._next()
            if event is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()  # never lose a taken event
                return event
            self._event = trio.Event()
            await self._event.wait()

    def receive_nowait(self) -> ChangeEvent:
        event = self._next()
        if event is None:
            raise trio.WouldBlock
        return event

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + (1 if self._overflowed else 0)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queue.clear()
        self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> ChangeEvent:
        try:
            return await self.receive()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None


class ChangeBus:
    """Per-process publish/subscribe of store changes, keyed by mailbox id."""

    def __init__(self, buffer: int = DEFAULT_BUFFER) -> None:
        self._buffer = buffer
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Subscription]] = {}
        self._published = 0

    def subscribe(
        self, mailbox_id: str, folder_id: str | None = None, *, buffer: int | None = None
    ) -> Subscription:
        """Subscribe the calling trio task's run to a mailbox (or one folder of it).

        Must be called from within trio; use the result as a (async) context manager so
        it is unsubscribed when the task is done.
        """
        token = trio.lowlevel.current_trio_token()
        sub = Subscription(self, mailbox_id, folder_id, buffer or self._buffer, token)
        with self._lock:
            self._subscribers.setdefault(mailbox_id, []).append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subscribers.get(sub.mailbox_id)
            if subs and sub in subs:
                subs.remove(sub)
                if not subs:
                    del self._subscribers[sub.mailbox_id]

    def watched(self, mailbox_id: str) -> bool:
        """Whether anyone subscribes to `mailbox_id` now."""
        with self._lock:
            return bool(self._subscribers.get(mailbox_id))

    def publish(self, event: ChangeEvent) -> None:
        """Deliver `event` to every interested subscriber. Thread-safe, non-blocking."""
        with self._lock:
            self._published += 1
            subs = list(self._subscribers.get(event.mailbox_id, ()))
        for sub in subs:
            if sub._wants(event):
                sub._push(event)

    def statistics(self) -> BusStatistics:
        with self._lock:
            return BusStatistics(
                subscribers=sum(len(s) for s in self._subscribers.values()),
                published=self._published,
            )
