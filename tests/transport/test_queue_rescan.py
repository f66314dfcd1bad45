"""A rescan (Queue.reload) racing with changes this process makes: the in-memory index is
merged with what the listing found, never replaced by it, so an entry enqueued meanwhile
is not lost, one removed meanwhile is not brought back, and one held meanwhile stays held.

The interleaving is fixed, not timed: the rescan runs in a thread that stops right after
reading one envelope (the listing of env/ is done by then) until the test, having made
its change from the main thread, lets it go on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from store.clock import FixedClock
from transport.envelope import QueueEntry, RecipientSpec
from transport.queue import Queue, RecoveryReport

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"
WAIT = 5.0  # seconds; only reached if the interleaving broke (a deadlock, say)


class PausingQueue(Queue):
    """Pauses a rescan after it has read the envelope of `pause_after`."""

    pause_after: str | None = None

    def __init__(self, folder: Path, **options: object) -> None:
        super().__init__(folder, **options)  # type: ignore[arg-type]
        self.paused = threading.Event()
        self.resume = threading.Event()

    def _load_checked(self, id: str) -> QueueEntry:
        entry = super()._load_checked(id)
        if id == self.pause_after:
            self.paused.set()
            if not self.resume.wait(WAIT):
                raise TimeoutError("the test never resumed the rescan")
        return entry


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_700_000_000.0)


@pytest.fixture
def queue(tmp_path: Path, clock: FixedClock) -> PausingQueue:
    q = PausingQueue(tmp_path / "queue", clock=clock)
    q.open()
    return q


def add(queue: Queue) -> QueueEntry:
    return queue.enqueue(
        MESSAGE, sender="a@local.test", recipients=[RecipientSpec("b@remote.test")]
    )


@pytest.fixture
def rescan_paused_at(queue: PausingQueue) -> Iterator[Callable[[str], Callable[[], None]]]:
    """rescan_paused_at(id) starts a forced rescan in a thread and returns once it has
    read `id`'s envelope; calling what it returns lets the rescan finish."""
    threads: list[threading.Thread] = []
    reports: list[RecoveryReport] = []

    def start(id: str) -> Callable[[], None]:
        queue.pause_after = id
        thread = threading.Thread(target=lambda: reports.append(queue.reload(force=True)))
        threads.append(thread)
        thread.start()
        assert queue.paused.wait(WAIT)

        def finish() -> None:
            queue.resume.set()
            thread.join(WAIT)
            assert not thread.is_alive()
            assert reports, "the rescan failed"

        return finish

    yield start
    queue.resume.set()
    for thread in threads:
        thread.join(WAIT)


def test_an_entry_removed_during_a_rescan_is_not_brought_back(
    queue: PausingQueue, clock: FixedClock, rescan_paused_at
) -> None:
    victim = add(queue)
    finish = rescan_paused_at(victim.id)  # the rescan has read victim's envelope
    queue.remove(victim.id)  # delivered meanwhile
    finish()
    assert queue.ids() == []
    assert queue.due(clock.now()) == []
    assert queue.statistics().messages == 0


def test_an_entry_added_during_a_rescan_is_kept(
    queue: PausingQueue, clock: FixedClock, rescan_paused_at
) -> None:
    first = add(queue)
    finish = rescan_paused_at(first.id)  # env/ was listed before this
    second = add(queue)  # an SMTP session's enqueue meanwhile
    finish()
    assert sorted(queue.ids()) == sorted([first.id, second.id])
    assert sorted(queue.due(clock.now())) == sorted([first.id, second.id])


def test_an_entry_held_during_a_rescan_stays_held(
    queue: PausingQueue, clock: FixedClock, rescan_paused_at
) -> None:
    victim = add(queue)
    finish = rescan_paused_at(victim.id)  # read while not held
    queue.hold(victim.id)
    finish()
    assert queue.due(clock.now()) == []  # the runner must not pick it up
    assert queue.statistics().held == 1


def test_a_rescan_still_takes_what_another_process_did(
    queue: PausingQueue, clock: FixedClock
) -> None:
    gone, stays = add(queue), add(queue)
    other = Queue(queue.folder, clock=clock)  # `mailhost queue ...` in another process
    other.open()
    other.delete(gone.id)
    other.hold(stays.id)
    new = add(other)
    queue.reload(force=True)
    assert sorted(queue.ids()) == sorted([stays.id, new.id])
    assert queue.due(clock.now()) == [new.id]


def test_an_attempt_on_an_entry_held_by_another_process_updates_the_index(
    queue: PausingQueue, clock: FixedClock
) -> None:
    """Without a rescan (the wake-up FIFO unusable), the runner finds the entry due, and
    begin_attempt reads it held from disk: the index must learn it, or the runner would
    find it due again at once, over and over."""
    entry = add(queue)
    other = Queue(queue.folder, clock=clock)
    other.open()
    other.hold(entry.id)
    assert queue.due(clock.now()) == [entry.id]  # this process has not rescanned
    assert queue.begin_attempt(entry.id, clock.now(), lambda e: clock.now() + 60) is None
    assert queue.due(clock.now()) == []
    assert queue.statistics().held == 1
