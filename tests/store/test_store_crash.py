"""Crash tests: SIGKILL at every fault point of delivery, journal writes and compaction.

A child process works on the store and stops at a named point (see `store.faults`); the
parent kills it there with SIGKILL and reopens the store. Invariants: every delivery that
returned is present exactly once under the UID it was given; flags and expunges that
returned stuck; no message appears twice; nothing unreadable is listed; no UID is reused.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from store import Flag, Store, faults

CHILD = Path(__file__).with_name("crash_child.py")


def _run_child(root: Path, point: str | None, skip: int, count: int, compact: int) -> list[str]:
    env = dict(os.environ)
    env.pop(faults.PAUSE_ENV, None)
    if point is not None:
        env[faults.PAUSE_ENV] = point
        env[faults.PAUSE_SKIP_ENV] = str(skip)
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(root), str(count), str(compact)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None
    lines = []
    try:
        for raw in proc.stdout:
            line = raw.decode().strip()
            lines.append(line)
            if line.startswith("PAUSED"):
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.wait(timeout=60)
        proc.stdout.close()
    return lines


def _body_number(data: bytes) -> int:
    return int(data.split(b"body ", 1)[1].split(b"\r\n", 1)[0])


def _check(root: Path, log: list[str]) -> None:
    done = {
        int(p[1]): (int(p[2]), int(p[3])) for p in (line.split() for line in log) if p[0] == "DONE"
    }
    seen = {int(line.split()[1]) for line in log if line.startswith("SEEN")}
    gone = {int(line.split()[1]) for line in log if line.startswith("GONE")}
    # An expunge that was running when the child died may or may not have happened.
    maybe_gone = {bob for n, (_, bob) in done.items() if n % 3 == 2} - gone
    store = Store(root)
    for position, name in enumerate(("alice", "bob")):
        folder = store.open_mailbox(name).inbox
        snap = folder.snapshot()
        by_number: dict[int, int] = {}
        for uid in snap.uids:
            number = _body_number(folder.read_message(uid))
            assert number not in by_number, f"message {number} twice in {name}"
            by_number[number] = uid
            assert folder.metadata([uid])[uid].subject == f"crash {number}"
        for number, uids in done.items():
            uid = uids[position]
            if name == "bob" and uid in gone:
                assert uid not in snap
                continue
            if name == "bob" and uid in maybe_gone and uid not in snap:
                continue
            assert by_number.get(number) == uid, f"{name}: delivery {number} lost or renumbered"
        if name == "alice":
            for uid in seen:
                assert Flag.SEEN in snap.flags(uid)
        reported = [uids[position] for uids in done.values()]
        after = 1_000_000 + len(snap)
        [fresh] = store.deliver(f"Subject: crash {after}\r\n\r\nbody {after}\r\n".encode(), [name])
        assert fresh.uid is not None
        assert fresh.uid > max([*reported, *snap.uids, 0]), "a UID was reused"
    store.close()


@pytest.mark.parametrize("point", faults.POINTS)
def test_sigkill_at_each_fault_point(tmp_path: Path, point: str) -> None:
    root = tmp_path / "data"
    log = _run_child(root, point, 3, 12, 1)  # skip=3: the kill lands on a store with history
    assert log and log[-1] == f"PAUSED {point}", f"fault point {point} never reached: {log}"
    _check(root, log)
    # The store keeps working after recovery, including further crashes.
    log2 = _run_child(root, "journal.torn", 0, 3, 1)
    assert log2[-1] == "PAUSED journal.torn"
    _check(root, log + log2)


def test_sigkill_without_compaction(tmp_path: Path) -> None:
    root = tmp_path / "data"
    log = []
    for skip in (0, 1, 4):
        log += _run_child(root, "journal.torn", skip, 10, 1 << 30)
    _check(root, log)
