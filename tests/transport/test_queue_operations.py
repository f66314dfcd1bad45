"""Operator commands on the queue (postqueue / Queue Viewer) and the cross-process wake-up."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from store.clock import FixedClock
from transport.envelope import RecipientSpec, RecipientState
from transport.queue import EntryNotFound, Queue

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_700_000_000.0)


@pytest.fixture
def queue(tmp_path: Path, clock: FixedClock) -> Queue:
    q = Queue(tmp_path / "queue", clock=clock)
    q.open()
    return q


def add(queue: Queue, sender: str | None = "a@local.test") -> str:
    return queue.enqueue(MESSAGE, sender=sender, recipients=[RecipientSpec("b@remote.test")]).id


def test_list_show_and_statistics(queue: Queue, clock: FixedClock) -> None:
    first = add(queue)
    clock.advance(1)
    second = add(queue, sender=None)
    entries = queue.entries()
    assert [e.id for e in entries] == [first, second]  # oldest first
    assert entries[1].sender is None
    assert queue.get(first).recipients[0].state is RecipientState.PENDING
    stats = queue.statistics()
    assert stats.messages == 2
    assert stats.recipients_pending == 2
    assert stats.bytes == 2 * len(MESSAGE)
    assert stats.oldest_arrival == 1_700_000_000.0
    assert queue.due(clock.now()) == [first, second]


def test_hold_release_retry(queue: Queue, clock: FixedClock) -> None:
    id = add(queue)
    queue.hold(id)
    assert queue.due(clock.now()) == []
    assert queue.statistics().held == 1
    assert queue.get(id).held
    queue.release(id)
    assert queue.due(clock.now()) == [id]
    queue.begin_attempt(id, clock.now(), lambda e: clock.now() + 300)
    assert queue.due(clock.now()) == []
    assert queue.retry() == 1
    assert queue.due(clock.now()) == [id]


def test_held_entry_is_not_attempted(queue: Queue, clock: FixedClock) -> None:
    id = add(queue)
    queue.hold(id)
    assert queue.begin_attempt(id, clock.now(), lambda e: clock.now() + 300) is None
    assert queue.get(id).attempts == 0


def test_delete(queue: Queue) -> None:
    id = add(queue)
    queue.delete(id)
    assert queue.statistics().messages == 0
    assert os.listdir(queue.folder / "msg") == []
    with pytest.raises(EntryNotFound):
        queue.get(id)
    with pytest.raises(EntryNotFound):
        queue.delete(id)


def test_delete_with_dsn_fails_the_pending_recipients(queue: Queue, clock: FixedClock) -> None:
    id = add(queue)
    queue.delete(id, notify_sender=True)
    entry = queue.get(id)
    assert entry.recipients[0].state is RecipientState.FAILED
    assert entry.recipients[0].diagnostic.status == "5.0.0"
    assert queue.due(clock.now()) == [id]  # the runner sends the DSN, then removes it


@pytest.mark.parametrize("bad", ["../../etc/passwd", "", "abc", "0" * 41, "ABCDEF01234567/"])
def test_ids_from_the_command_line_are_checked(queue: Queue, bad: str) -> None:
    with pytest.raises(EntryNotFound):
        queue.get(bad)
    with pytest.raises(EntryNotFound):
        queue.hold(bad)


def test_another_process_sees_changes_after_reload(
    queue: Queue, tmp_path: Path, clock: FixedClock
) -> None:
    id = add(queue)
    cli = Queue(queue.folder, clock=clock)
    cli.open()
    assert cli.kick() is False  # no runner holds the FIFO open
    reader = os.open(queue.wakeup_path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        cli.hold(id)  # no listener in this process: the FIFO carries the wake-up
        assert os.read(reader, 10) == b"!"
    finally:
        os.close(reader)
    assert queue.due(clock.now()) == [id]  # the server's index is stale until reload
    queue.reload()
    assert queue.due(clock.now()) == []
    cli.delete(id)
    queue.reload()
    assert queue.ids() == []


def test_listeners_are_called_on_changes(queue: Queue) -> None:
    calls = []
    queue.add_listener(lambda: calls.append(1))
    id = add(queue)
    queue.hold(id)
    queue.release(id)
    assert len(calls) == 3


def test_an_entry_another_process_added_is_adopted_without_a_rescan(
    queue: Queue, tmp_path: Path, clock: FixedClock
) -> None:
    # The delivery agent's queue: opened without a scan, adding only, telling no FIFO.
    writer = Queue(tmp_path / "queue", clock=clock)
    assert writer.open(scan=False).loaded == 0
    writer.add_listener(lambda: None)
    woken: list[bool] = []
    queue.add_listener(lambda: woken.append(True))
    entry = writer.enqueue(
        b"Subject: hi\r\n\r\nbody\r\n",
        sender="a@local.test",
        recipients=[RecipientSpec("b@x.test")],
    )
    assert entry.id not in queue.ids()
    assert queue.adopt(entry.id)
    assert entry.id in queue.ids() and woken == [True]
    assert queue.due(clock.now()) == [entry.id]
    # Gone meanwhile, never existed, or not an id at all: nothing to adopt.
    queue.delete(entry.id)
    assert not queue.adopt(entry.id)
    assert not queue.adopt("../../etc/passwd")
    assert entry.id not in queue.ids()
