"""Child process for the crash tests: delivers, flags and expunges, reporting each success.

Run as ``python crash_child.py ROOT COUNT``; with MAILHOST_STORE_PAUSE_AT set it stops at
that fault point (printing ``PAUSED <point>``) and waits for the parent's SIGKILL. Every
operation that returned is reported on stdout before the next starts:

    DONE <n> <alice uid> <bob uid>     message n delivered to both mailboxes
    SEEN <uid>                         alice's message <uid> flagged \\Seen
    GONE <uid>                         bob's message <uid> expunged
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from store import Flag, FlagMode, Store


def body(n: int) -> bytes:
    return f"Subject: crash {n}\r\nMessage-ID: <crash-{n}@test>\r\n\r\nbody {n}\r\n".encode()


def main() -> None:
    root, count = Path(sys.argv[1]), int(sys.argv[2])
    store = Store(root, journal_compact_bytes=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
    alice = store.open_mailbox("alice").inbox
    bob = store.open_mailbox("bob").inbox
    start = len(alice.snapshot())
    for n in range(start, start + count):
        results = store.deliver(body(n), ["alice", "bob"])
        if not all(r.ok for r in results):
            print(f"FAILED {n}", flush=True)
            continue
        print(f"DONE {n} {results[0].uid} {results[1].uid}", flush=True)
        if n % 2 == 1:
            uid = results[0].uid or 0
            alice.store_flags([uid], FlagMode.ADD, [Flag.SEEN])
            print(f"SEEN {uid}", flush=True)
        if n % 3 == 2:
            victim = results[1].uid or 0
            bob.expunge([victim])
            print(f"GONE {victim}", flush=True)
    print("FINISHED", flush=True)


if __name__ == "__main__":
    main()
