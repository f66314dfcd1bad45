"""Folder operations: flags, keywords, CONDSTORE, expunge, copy/move, changes, reading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from store_testkit import message, reopen

from store import Flag, FlagMode, Mailbox, MessageNotFound, NewMessage, Store
from store.index import KEYWORDS_FILE


def _fill(mailbox: Mailbox, n: int) -> None:
    mailbox.inbox.append_many([NewMessage(message(i)) for i in range(1, n + 1)])


def test_flags_modes_and_modseq(mailbox: Mailbox) -> None:
    _fill(mailbox, 3)
    inbox = mailbox.inbox
    start = inbox.status().highestmodseq
    update = inbox.store_flags([1, 2, 99], FlagMode.ADD, [Flag.SEEN, Flag.FLAGGED])
    assert update.modseq == start + 1 and [s.uid for s in update.changed] == [1, 2]
    again = inbox.store_flags([1], FlagMode.ADD, [Flag.SEEN])
    assert again.modseq is None and again.changed == ()  # RFC 7162: no change, no MODSEQ
    inbox.store_flags([2], FlagMode.REMOVE, [Flag.FLAGGED])
    inbox.store_flags([3], FlagMode.REPLACE, [Flag.DRAFT, Flag.FORWARDED])
    snap = inbox.snapshot()
    assert snap.flags(1) == {Flag.SEEN, Flag.FLAGGED}
    assert snap.flags(2) == {Flag.SEEN}
    assert snap.flags(3) == {Flag.DRAFT, Flag.FORWARDED}
    assert snap.modseq(3) == snap.highestmodseq
    names = sorted(os.listdir(inbox._index.path / "cur"))
    assert [n.rsplit(":2,", 1)[1] for n in names] == ["FS", "S", "DP"]
    assert inbox.status().unseen == 1


def test_unchanged_since(mailbox: Mailbox) -> None:
    _fill(mailbox, 2)
    inbox = mailbox.inbox
    base = inbox.status().highestmodseq
    inbox.store_flags([2], FlagMode.ADD, [Flag.ANSWERED])
    update = inbox.store_flags([1, 2], FlagMode.ADD, [Flag.SEEN], unchanged_since=base)
    assert update.failed == (2,)
    assert [s.uid for s in update.changed] == [1]
    assert Flag.SEEN not in inbox.snapshot().flags(2)


def test_keywords_persist_in_names_and_index(store: Store, mailbox: Mailbox) -> None:
    _fill(mailbox, 2)
    inbox = mailbox.inbox
    inbox.store_flags([1], FlagMode.ADD, keywords=["$Label1", "Red Category"])
    inbox.store_flags([2], FlagMode.ADD, [Flag.SEEN], keywords=["Red Category"])
    assert (inbox._index.path / KEYWORDS_FILE).read_text() == "0 $Label1\n1 Red Category\n"
    names = sorted(os.listdir(inbox._index.path / "cur"))
    assert [n.rsplit(":2,", 1)[1] for n in names] == ["ab", "Sb"]
    other = reopen(store)
    snap = other.open_mailbox("alice").inbox.snapshot()
    assert snap.keywords(1) == {"$Label1", "Red Category"}
    assert snap.keywords(2) == {"Red Category"}
    inbox.store_flags([1], FlagMode.REMOVE, keywords=["$Label1"])
    assert inbox.snapshot().keywords(1) == {"Red Category"}
    other.close()


def test_expunge_and_changes_since(mailbox: Mailbox) -> None:
    _fill(mailbox, 4)
    inbox = mailbox.inbox
    base = inbox.status().highestmodseq
    inbox.store_flags([2], FlagMode.ADD, [Flag.DELETED])
    result = inbox.expunge([2, 3, 42])
    assert result.uids == (2, 3)
    assert result.modseq == inbox.status().highestmodseq
    [new] = mailbox.inbox.append_many([NewMessage(message(5))])
    changes = inbox.changes_since(base)
    assert [s.uid for s in changes.changed] == [new.uid]
    assert changes.vanished == (2, 3) and changes.complete
    assert inbox.changes_since(result.modseq or 0).vanished == ()
    assert list(inbox.snapshot().uids) == [1, 4, 5]
    assert inbox.status().uidnext == 6
    with pytest.raises(MessageNotFound):
        inbox.read_message(2)


def test_copy_and_move_return_uid_maps(mailbox: Mailbox) -> None:
    _fill(mailbox, 3)
    inbox = mailbox.inbox
    inbox.store_flags([1], FlagMode.ADD, [Flag.SEEN], ["$Important"])
    archive = mailbox.folder("Archive")
    archive.append(message(100))
    copied = inbox.copy_to([1, 3, 77], archive)
    assert copied.mapping == ((1, 2), (3, 3))
    assert copied.uidvalidity == archive.status().uidvalidity
    assert archive.snapshot().flags(2) == {Flag.SEEN}
    assert archive.snapshot().keywords(2) == {"$Important"}
    assert archive.read_message(3) == inbox.read_message(3)
    assert archive.metadata([3])[3].subject == "message 3"
    moved = inbox.move_to([2, 3], mailbox.folder("Deleted Items"))
    assert moved.dest_uids == (1, 2)
    assert list(inbox.snapshot().uids) == [1]
    assert mailbox.folder("Deleted Items").read_message(1) == message(2)
    same = inbox.copy_to([1], inbox)
    assert same.mapping == ((1, 4),)


def test_read_ranges_and_metadata_sections(mailbox: Mailbox) -> None:
    _fill(mailbox, 1)
    inbox = mailbox.inbox
    data = message(1)
    assert inbox.read_message(1, 6, 6) == data[6:12]
    meta = inbox.metadata([1, 5])
    assert list(meta) == [1]
    body = meta[1].structure
    assert inbox.read_message(1, body.body_start, body.size) == b"hello\r\n"
    with inbox.open_message(1) as handle:
        assert handle.read() == data


def test_append_with_flags_date_and_status(mailbox: Mailbox) -> None:
    from datetime import UTC, datetime

    when = datetime(2020, 2, 29, 12, 0, tzinfo=UTC)
    folder = mailbox.folder("Drafts")
    result = folder.append(message(1), flags=[Flag.DRAFT], keywords=["x"], internal_date=when)
    summary = folder.snapshot().summary(result.uid)
    assert summary.internal_date == when and summary.flags == {Flag.DRAFT}
    status = folder.status()
    assert (status.messages, status.unseen, status.uidnext, status.size) == (
        1,
        1,
        2,
        len(message(1)),
    )


def test_metadata_cache_survives_reopen_and_repairs(store: Store, mailbox: Mailbox) -> None:
    _fill(mailbox, 3)
    cache = mailbox.inbox._index.path / "mailhost.cache"
    other = reopen(store)
    assert other.open_mailbox("alice").inbox.metadata([2])[2].subject == "message 2"
    other.close()
    cache.write_bytes(b"garbage")
    third = reopen(store)
    meta = third.open_mailbox("alice").inbox.metadata([1, 2, 3])
    assert [m.subject for m in meta.values()] == ["message 1", "message 2", "message 3"]
    third.close()


def test_save_dates_are_kept_per_folder_and_survive_reopening(tmp_path: Path) -> None:
    """RFC 8514 SAVEDATE: when a message entered this folder (a copy gets its own)."""
    from datetime import UTC, datetime

    from store.clock import FixedClock

    clock = FixedClock(1_700_000_000.0)
    store = Store(tmp_path, clock=clock)
    mailbox = store.open_mailbox("m1")
    inbox = mailbox.inbox
    old = datetime(2020, 1, 1, tzinfo=UTC)
    uid = inbox.append(message("saved"), internal_date=old).uid
    clock.advance(3600)
    archive = mailbox.folder("Archive")
    ((_, copied),) = inbox.copy_to([uid], archive).mapping
    first = inbox.snapshot().summary(uid)
    second = archive.snapshot().summary(copied)
    assert first.internal_date == old and second.internal_date == old
    assert first.save_date == datetime.fromtimestamp(1_700_000_000, UTC)
    assert second.save_date == datetime.fromtimestamp(1_700_003_600, UTC)
    store.close()
    again = Store(tmp_path, clock=clock).open_mailbox("m1")
    assert again.inbox.snapshot().summary(uid).save_date == first.save_date
