"""The change bus: typed events with MODSEQs, from worker threads, bounded buffers."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing
from store_testkit import message, reopen

from store import (
    ChangeBus,
    Flag,
    FlagMode,
    FlagsChanged,
    FolderCreated,
    FolderDeleted,
    FolderRenamed,
    MessagesAdded,
    MessagesExpunged,
    ResyncNeeded,
    Store,
)


async def test_events_from_worker_threads(store: Store) -> None:
    mailbox = await trio.to_thread.run_sync(store.open_mailbox, "alice")
    inbox = mailbox.inbox
    async with store.bus.subscribe("alice") as sub:
        [result] = await trio.to_thread.run_sync(store.deliver, message(1), ["alice"])
        added = await sub.receive()
        assert added == MessagesAdded("alice", inbox.id, (1,), result.modseq or 0)
        update = await trio.to_thread.run_sync(
            lambda: inbox.store_flags([1], FlagMode.ADD, [Flag.SEEN])
        )
        assert await sub.receive() == FlagsChanged("alice", inbox.id, (1,), update.modseq or 0)
        gone = await trio.to_thread.run_sync(inbox.expunge, [1])
        assert await sub.receive() == MessagesExpunged("alice", inbox.id, (1,), gone.modseq or 0)
        info = await trio.to_thread.run_sync(mailbox.create_folder, "Lists")
        created = await sub.receive()
        assert isinstance(created, FolderCreated) and created.folder_id == info.id
        await trio.to_thread.run_sync(mailbox.rename_folder, "Lists", "Groups")
        renamed = await sub.receive()
        assert isinstance(renamed, FolderRenamed) and renamed.new_name == "Groups"
        await trio.to_thread.run_sync(mailbox.delete_folder, "Groups")
        deleted = await sub.receive()
        assert isinstance(deleted, FolderDeleted) and deleted.folder_id == info.id
        assert sub.pending() == 0
    assert store.bus.statistics().subscribers == 0


async def test_publishing_from_the_trio_thread_and_folder_filter(store: Store) -> None:
    mailbox = store.open_mailbox("alice")
    drafts = mailbox.folder("Drafts")
    with store.bus.subscribe("alice", drafts.id) as only_drafts, store.bus.subscribe("bob") as bob:
        store.deliver(message(1), ["alice"])  # Inbox: not for this subscriber
        result = drafts.append(message(2))
        event = await only_drafts.receive()
        assert isinstance(event, MessagesAdded) and event.uids == (result.uid,)
        mailbox.create_folder("Elsewhere")
        with pytest.raises(trio.WouldBlock):
            only_drafts.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            bob.receive_nowait()


async def test_overflow_collapses_into_resync() -> None:
    bus = ChangeBus(buffer=3)
    with bus.subscribe("alice") as sub:
        for n in range(10):
            bus.publish(MessagesAdded("alice", "f", (n,), n))
        assert await sub.receive() == ResyncNeeded("alice", None)
        remaining = []
        while sub.pending():
            remaining.append(await sub.receive())
        assert all(isinstance(e, MessagesAdded) for e in remaining) and len(remaining) <= 3


async def test_receive_waits_until_published() -> None:
    bus = ChangeBus()
    received: list[object] = []
    async with trio.open_nursery() as nursery:
        sub = bus.subscribe("alice")

        async def listen() -> None:
            async for event in sub:
                received.append(event)
                if len(received) == 2:
                    return

        nursery.start_soon(listen)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        thread = threading.Thread(target=bus.publish, args=(MessagesAdded("alice", "f", (1,), 5),))
        thread.start()
        await trio.to_thread.run_sync(thread.join)
        bus.publish(MessagesExpunged("alice", "f", (1,), 6))
    assert [type(e) for e in received] == [MessagesAdded, MessagesExpunged]
    sub.close()


async def test_changes_by_another_process_are_published_on_refresh(store: Store) -> None:
    mailbox = store.open_mailbox("alice")
    inbox = mailbox.inbox
    inbox.snapshot()
    other = reopen(store)
    assert not store.bus.watched("alice")
    with store.bus.subscribe("alice") as sub:
        assert store.bus.watched("alice") and not store.bus.watched("bob")
        [result] = other.deliver(message(1), ["alice"])
        with pytest.raises(trio.WouldBlock):
            sub.receive_nowait()
        inbox.refresh()
        event = await sub.receive()
        assert event == MessagesAdded("alice", inbox.id, (1,), result.modseq or 0)
    assert not store.bus.watched("alice")
    other.close()


def test_publish_without_trio_or_subscribers(store: Store) -> None:
    store.deliver(message(1), ["alice"])  # the CLI case: nothing listens, nothing breaks
    assert store.bus.statistics().published >= 1


def test_a_subscription_outliving_its_trio_run_is_dropped() -> None:
    bus = ChangeBus()

    async def subscribe() -> object:
        return bus.subscribe("alice")

    trio.run(subscribe)  # the run ends while still subscribed (a crashed task, say)
    assert bus.statistics().subscribers == 1
    bus.publish(MessagesAdded("alice", "f", (1,), 1))
    assert bus.statistics().subscribers == 0
