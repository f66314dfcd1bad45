"""Store benchmark: delivery rate, opening a 100k-message folder, flag changes.

    python -m bench.store [--messages 100000] [--root DIR]

--root must be on the file system the store will use (not a tmpfs: fsync would be free).

Everything goes through the store's own API (deliver, append_many, snapshot,
store_flags) with fsync on unless a row says otherwise. The 100k folder is built with
`Folder.append_many` in batches (each message file written and fsynced, one directory
fsync and one journal fsync per batch), the path an import takes.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from store import Flag, FlagMode, NewMessage, Store
from store.index import CACHE_FILE, FOLDER_FILE, INDEX_FILE, JOURNAL_FILE
from store.mailbox import MAILBOX_FILE

BATCH = 1000


def sample_message(n: int, size: int = 2048) -> bytes:
    head = (
        f"From: Sender {n} <sender{n}@example.org>\r\n"
        f"To: Alice <alice@example.com>\r\n"
        f"Subject: benchmark message {n}\r\n"
        f"Message-ID: <bench-{n}@example.org>\r\n"
        "Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def deliveries_per_second(root: Path, count: int, offset: int = 0) -> tuple[float, float]:
    """(deliveries/s, mean ms per delivery) for `count` single deliveries, fsync on."""
    store = Store(root)
    for i in range(20):  # warm up: mailbox creation, imports, first index load
        store.deliver(sample_message(offset - 1 - i), ["bench"])
    messages = [sample_message(offset + i) for i in range(count)]
    start = time.perf_counter()
    for data in messages:
        [result] = store.deliver(data, ["bench"])
        assert result.ok, result.error
    elapsed = time.perf_counter() - start
    store.close()
    return count / elapsed, elapsed / count * 1000


def grow_to(root: Path, target: int) -> float:
    """Append messages in batches until the Inbox holds `target`; seconds per message."""
    store = Store(root)
    inbox = store.open_mailbox("bench").inbox
    have = inbox.status().messages
    start = time.perf_counter()
    while have < target:
        n = min(BATCH, target - have)
        inbox.append_many([NewMessage(sample_message(have + i)) for i in range(n)])
        have += n
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed / max(1, target)


def open_folder(root: Path) -> int:
    store = Store(root)
    snap = store.open_mailbox("bench").inbox.snapshot()
    count = len(snap)
    assert snap.flags(snap.uids[-1]) is not None
    assert snap.modseq(snap.uids[0]) > 0
    store.close()
    return count


def drop_caches(root: Path) -> str:
    """Evict the index files (and the folder's metadata) from the page cache."""
    folder = root / "bench"
    for name in (INDEX_FILE, JOURNAL_FILE, CACHE_FILE, FOLDER_FILE, MAILBOX_FILE):
        path = folder / name
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return "drop_caches"
    except OSError:
        return "fadvise"


def flag_changes(root: Path, count: int, fsync: bool) -> list[float]:
    store = Store(root, fsync=fsync)
    inbox = store.open_mailbox("bench").inbox
    uids = list(inbox.snapshot().uids)
    rng = random.Random(1)
    pairs = [rng.choice(uids) for _ in range(count // 2)]
    picks = [uid for uid in pairs for _ in range(2)]  # set, then clear: every call changes
    times = []
    for n, uid in enumerate(picks):
        mode = FlagMode.ADD if n % 2 == 0 else FlagMode.REMOVE
        start = time.perf_counter()
        inbox.store_flags([uid], mode, [Flag.FLAGGED])
        times.append(time.perf_counter() - start)
    store.close()
    return times


def fsync_latency(root: Path, count: int = 300) -> float:
    """Median seconds for a 100-byte append + fsync on this file system (for context)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 100)
            start = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return statistics.median(times)


def ms(value: float) -> str:
    return f"{value * 1000:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args()
    big = args.messages
    small = max(1, big // 10)
    base = args.root or Path(tempfile.mkdtemp(prefix="bench-store-"))
    rows: list[tuple[str, str]] = []
    try:
        rows.append(("fsync of a 100-byte append on this disk (median)", ms(fsync_latency(base))))
        rate_root = base / "rate"
        rate, per = deliveries_per_second(rate_root, 500, offset=1000)
        rows.append(("deliveries/s into one mailbox (fsync on, 2 KB, 500 msgs)", f"{rate:.0f}/s"))
        rows.append(("  mean latency per delivery", f"{per:.3f} ms"))
        shutil.rmtree(rate_root)

        root = base / "big"
        per_append = grow_to(root, small)
        rows.append((f"build: append_many to {small} msgs (per msg)", ms(per_append)))
        _rate_small, per_small = deliveries_per_second(root, 300, offset=10_000_000)
        rows.append((f"delivery cost at {small} msgs (300 deliveries)", f"{per_small:.3f} ms"))
        per_append = grow_to(root, big)
        rows.append((f"build: append_many to {big} msgs (per msg)", ms(per_append)))
        _rate_big, per_big = deliveries_per_second(root, 300, offset=20_000_000)
        rows.append((f"delivery cost at {big} msgs (300 deliveries)", f"{per_big:.3f} ms"))
        rows.append(("  ratio big/small", f"{per_big / per_small:.2f}"))

        open_folder(root)
        warm = timed(lambda: open_folder(root), 7)
        rows.append(
            (
                f"open {big}-msg folder, warm (UIDs+flags+MODSEQs), median of 7",
                ms(statistics.median(warm)),
            )
        )
        cold = []
        method = ""
        for _ in range(3):
            method = drop_caches(root)
            cold += timed(lambda: open_folder(root), 1)
        label = f"open {big}-msg folder, cold ({method}), median of 3"
        rows.append((label, ms(statistics.median(cold))))
        index_size = (root / "bench" / INDEX_FILE).stat().st_size
        rows.append(("  index file size", f"{index_size / 1e6:.1f} MB"))

        no_sync = flag_changes(root, 500, fsync=False)
        with_sync = flag_changes(root, 500, fsync=True)
        rows.append(("flag change, fsync off (median of 500)", ms(statistics.median(no_sync))))
        rows.append(("flag change, fsync on (median of 500)", ms(statistics.median(with_sync))))
        p99 = sorted(with_sync)[int(len(with_sync) * 0.99)]
        rows.append(("flag change, fsync on (p99)", ms(p99)))
    finally:
        if args.root is None:
            shutil.rmtree(base, ignore_errors=True)
    width = max(len(name) for name, _ in rows)
    print(f"{'measurement'.ljust(width)}  value")
    print(f"{'-' * width}  -----")
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


if __name__ == "__main__":
    main()
