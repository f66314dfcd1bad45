"""CLI support: stats, reindex, quota, mbox and maildir import with progress."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_testkit import message

from store import Flag, FlagMode, MailboxNotFound, Store
from store.admin import (
    ImportProgress,
    import_maildir,
    import_mbox,
    iter_mbox,
    mailbox_stats,
    reindex_mailbox,
    set_quota,
)
from store.limits import IMPORT_BATCH

MBOX = (
    b"From alice@example.org Tue Jul  1 10:52:37 2003\n"
    b"Subject: one\n"
    b"\n"
    b"first body\n"
    b">From the escaped line\n"
    b"\n"
    b"From bob@example.org Wed Jul  2 11:00:00 2003\n"
    b"Subject: two\n"
    b"\n"
    b"second body\n"
)


def test_iter_mbox(tmp_path: Path) -> None:
    path = tmp_path / "in.mbox"
    path.write_bytes(MBOX)
    messages = list(iter_mbox(path))
    assert [m[0] for m in messages] == [
        b"Subject: one\r\n\r\nfirst body\r\nFrom the escaped line\r\n",
        b"Subject: two\r\n\r\nsecond body\r\n",
    ]
    assert messages[0][1] is not None and messages[0][1].day == 1


def test_import_mbox_with_progress(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    count = IMPORT_BATCH + 5
    with open(path, "wb") as handle:
        for n in range(count):
            handle.write(
                b"From x@y Tue Jul  1 10:52:37 2003\n" + message(n).replace(b"\r\n", b"\n") + b"\n"
            )
    seen: list[ImportProgress] = []
    report = import_mbox(store, "alice", path, folder="Old Mail", progress=seen.append)
    assert report.imported == count and report.skipped == 0
    assert seen[-1].imported == count and seen[-1].bytes_read == seen[-1].total_bytes
    assert len(seen) == 2
    folder = store.open_mailbox("alice").folder("Old Mail")
    assert folder.status().messages == count
    assert folder.read_message(1) == message(0)


def test_import_maildir_tree(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "Maildir"
    for directory in (source, source / ".Lists.Python"):
        for sub in ("cur", "new", "tmp"):
            (directory / sub).mkdir(parents=True)
    (source / "cur" / "1.a:2,S").write_bytes(message(1).replace(b"\r\n", b"\n"))
    (source / "new" / "2.b").write_bytes(message(2))
    (source / ".Lists.Python" / "cur" / "3.c:2,Fa").write_bytes(message(3))
    (source / ".Lists.Python" / "dovecot-keywords").write_text("0 $Important\n")
    report = import_maildir(store, "alice", source)
    assert report.imported == 3 and set(report.folders) == {"Inbox", "Lists/Python"}
    mailbox = store.open_mailbox("alice")
    inbox = mailbox.inbox.snapshot()
    assert {inbox.flags(u) for u in inbox.uids} == {frozenset({Flag.SEEN}), frozenset()}
    assert mailbox.inbox.read_message(1) == message(1)
    lists = mailbox.folder("Lists/Python").snapshot()
    assert lists.flags(1) == {Flag.FLAGGED} and lists.keywords(1) == {"$Important"}


def test_stats_reindex_quota(store: Store) -> None:
    with pytest.raises(MailboxNotFound):
        mailbox_stats(store, "nobody")
    for n in range(3):
        store.deliver(message(n), ["alice"])
    mailbox = store.open_mailbox("alice")
    mailbox.inbox.store_flags([2], FlagMode.ADD, [Flag.SEEN])
    stats = mailbox_stats(store, "alice")
    inbox = next(f for f in stats.folders if f.name == "Inbox")
    assert (inbox.messages, inbox.unseen) == (3, 2)
    assert stats.messages == 3 and stats.size == sum(len(message(n)) for n in range(3))
    uidvalidity = mailbox.inbox.status().uidvalidity
    after = reindex_mailbox(store, "alice")
    assert after.messages == 3
    snap = mailbox.inbox.snapshot()
    assert snap.uidvalidity == uidvalidity and list(snap.uids) == [1, 2, 3]
    assert snap.flags(2) == {Flag.SEEN}
    quota = set_quota(store, "alice", 10_000)
    assert quota.limit == 10_000 and quota.usage == stats.size
