"""Two processes and several threads writing one folder at the same time."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from store_testkit import message

from store import Flag, Store

CHILD = Path(__file__).with_name("concurrent_child.py")


def test_two_processes_appending(tmp_path: Path) -> None:
    root = tmp_path / "data"
    Store(root).open_mailbox("shared")
    count = 60
    procs = [
        subprocess.Popen(
            [sys.executable, str(CHILD), str(root), tag, str(count)], stdout=subprocess.PIPE
        )
        for tag in ("one", "two")
    ]
    outputs = [p.communicate(timeout=120)[0].decode().split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    uids = [[int(u) for u in out] for out in outputs]
    assert all(len(u) == count for u in uids)
    assert not set(uids[0]) & set(uids[1])
    store = Store(root)
    inbox = store.open_mailbox("shared").inbox
    snap = inbox.snapshot()
    assert sorted(uids[0] + uids[1]) == list(snap.uids) == list(range(1, 2 * count + 1))
    for tag, tagged in zip(("one", "two"), uids, strict=True):
        for n, uid in enumerate(tagged):
            assert inbox.read_message(uid).endswith(f"{tag}-{n}\r\n".encode())
            assert (Flag.FLAGGED in snap.flags(uid)) == (n % 5 == 0)
    assert snap.highestmodseq == inbox.status().highestmodseq
    store.close()


def test_threads_share_one_index(store: Store) -> None:
    inbox = store.open_mailbox("alice").inbox
    results: list[int] = []
    lock = threading.Lock()

    def worker(base: int) -> None:
        for n in range(20):
            [result] = store.deliver(message(base + n), ["alice"])
            with lock:
                results.append(result.uid or 0)

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 81))
    assert list(inbox.snapshot().uids) == list(range(1, 81))


def test_concurrent_deliveries_share_commits_and_each_returns_durable(tmp_path: Path) -> None:
    """Group commit: many threads delivering to one folder at once all get distinct UIDs,
    every message is there exactly once, and a failing request fails alone."""
    store = Store(tmp_path / "mailboxes")
    mailbox = store.open_mailbox("m1")
    results: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def deliver(n: int) -> None:
        try:
            (result,) = store.deliver(message(f"group {n}"), ["m1"])
            assert result.ok, result.error
            with lock:
                results.append(result.uid or 0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(results) == list(range(1, 41))
    snapshot = mailbox.inbox.snapshot()
    assert list(snapshot.uids) == list(range(1, 41))
    store.close()
