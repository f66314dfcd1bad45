"""The maildir files are the truth: damaged indexes and journals, files from other programs."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from store_testkit import files_in, message, reopen

from store import Flag, FlagMode, Mailbox, NewMessage, Store
from store.index import CACHE_FILE, FOLDER_FILE, INDEX_FILE, JOURNAL_FILE
from store.limits import MAX_UID


def _setup(mailbox: Mailbox) -> tuple[Path, dict[int, bytes], int]:
    inbox = mailbox.inbox
    inbox.append_many([NewMessage(message(i)) for i in range(1, 9)])
    inbox.store_flags([2, 5], FlagMode.ADD, [Flag.SEEN], ["$Work"])
    inbox.expunge([3, 8])
    inbox.append(message(9), flags=[Flag.FLAGGED])  # UID 9
    inbox.append(message(10))
    inbox.expunge([10])  # the highest UID is gone: only the floors remember it
    contents = {uid: inbox.read_message(uid) for uid in inbox.snapshot().uids}
    return inbox._index.path, contents, inbox.status().uidvalidity


def _check(store: Store, contents: dict[int, bytes], uidvalidity: int) -> Store:
    other = reopen(store)
    inbox = other.open_mailbox("alice").inbox
    snap = inbox.snapshot()
    assert snap.uidvalidity == uidvalidity
    assert list(snap.uids) == sorted(contents)
    assert {uid: inbox.read_message(uid) for uid in snap.uids} == contents
    assert snap.flags(2) == {Flag.SEEN} and snap.keywords(5) == {"$Work"}
    assert snap.flags(9) == {Flag.FLAGGED}
    assert snap.uidnext >= 11
    [new] = other.deliver(message(11), ["alice"])
    assert new.uid is not None and new.uid >= 11
    return other


@pytest.mark.parametrize("damage", ["delete", "truncate", "flip", "garbage", "empty"])
def test_damaged_index_is_rebuilt_with_the_same_uids(
    mailbox: Mailbox, store: Store, damage: str
) -> None:
    path, contents, uidvalidity = _setup(mailbox)
    index = path / INDEX_FILE
    data = index.read_bytes()
    if damage == "delete":
        index.unlink()
    elif damage == "truncate":
        index.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        index.write_bytes(data[:40] + bytes([data[40] ^ 0xFF]) + data[41:])
    elif damage == "garbage":
        index.write_bytes(os.urandom(len(data)))
    else:
        index.write_bytes(b"")
    (path / JOURNAL_FILE).write_bytes(b"")  # the worst case: the journal is gone too
    _check(store, contents, uidvalidity).close()


def test_lost_folder_file_means_new_uidvalidity(mailbox: Mailbox, store: Store) -> None:
    path, contents, uidvalidity = _setup(mailbox)
    for name in (INDEX_FILE, JOURNAL_FILE, FOLDER_FILE, CACHE_FILE):
        (path / name).unlink()
    other = reopen(store)
    snap = other.open_mailbox("alice").inbox.snapshot()
    assert snap.uidvalidity != uidvalidity
    assert len(snap) == len(contents)
    bodies = {other.open_mailbox("alice").inbox.read_message(u) for u in snap.uids}
    assert bodies == set(contents.values())
    other.close()


def test_torn_journal_tail_is_dropped(mailbox: Mailbox, store: Store) -> None:
    path, contents, uidvalidity = _setup(mailbox)
    journal = path / JOURNAL_FILE
    with open(journal, "ab") as handle:
        handle.write(b"\xd7\x4d\xff\x00\x00\x00garbage-tail")
    other = _check(store, contents, uidvalidity)
    assert b"garbage-tail" not in journal.read_bytes()
    other.close()


@pytest.mark.parametrize("seed", range(6))
def test_random_journal_truncation_keeps_every_message(
    mailbox: Mailbox, store: Store, seed: int
) -> None:
    """Losing journal records (damage beyond a torn tail) loses no message and no file UID.

    Which flags or expunges were in the lost records cannot be known; the files (and their
    U= names) are still the truth. A UID expunged in a lost record may be handed out again:
    fsynced journal data is assumed to survive (torn tails are covered by the crash tests).
    """
    path, contents, _ = _setup(mailbox)
    journal = path / JOURNAL_FILE
    data = journal.read_bytes()
    cut = random.Random(seed).randrange(0, len(data))
    journal.write_bytes(data[:cut])
    other = reopen(store)
    inbox = other.open_mailbox("alice").inbox
    snap = inbox.snapshot()
    assert list(snap.uids) == sorted(contents)
    assert {uid: inbox.read_message(uid) for uid in snap.uids} == contents
    [new] = other.deliver(message(11), ["alice"])
    assert new.uid is not None and new.uid > max(contents)
    other.close()


def test_files_dropped_by_other_programs(mailbox: Mailbox, store: Store) -> None:
    path, contents, _ = _setup(mailbox)
    (path / "new" / "1234.procmail.host").write_bytes(message(20))
    (path / "cur" / "1235.mutt.host:2,RS").write_bytes(message(21))
    (path / "cur" / "9999.copied,S=5,U=2:2,").write_bytes(message(22))  # claims a used UID
    inbox = mailbox.inbox
    inbox.refresh()
    snap = inbox.snapshot()
    added = [u for u in snap.uids if u not in contents]
    assert len(added) == 3 and min(added) >= 11
    assert {inbox.read_message(u) for u in added} == {message(20), message(21), message(22)}
    by_body = {inbox.read_message(u): u for u in added}
    assert snap.flags(by_body[message(21)]) == {Flag.SEEN, Flag.ANSWERED}
    assert inbox.read_message(2) == contents[2]
    assert inbox.metadata([by_body[message(20)]])[by_body[message(20)]].subject == "message 20"
    assert all(",U=" in name for name in files_in(path))


def test_external_flag_change_and_delete(mailbox: Mailbox, store: Store) -> None:
    path, _, _ = _setup(mailbox)
    inbox = mailbox.inbox
    before = inbox.status().highestmodseq
    target = inbox.message_path(4)
    os.rename(target, path / "cur" / (target.name.split(":2,")[0] + ":2,T"))
    inbox.message_path(6).unlink()
    changes = inbox.changes_since(before)
    assert [s.uid for s in changes.changed] == [4]
    assert changes.changed[0].flags == {Flag.DELETED}
    assert changes.vanished == (6,)


def test_uid_space_exhaustion(mailbox: Mailbox) -> None:
    path = mailbox.inbox._index.path
    (path / "new" / f"1.x,S=3,U={MAX_UID}").write_bytes(b"x\r\n")
    mailbox.inbox.refresh()
    assert list(mailbox.inbox.snapshot().uids) == [MAX_UID]
    from store import PermanentFailure

    with pytest.raises(PermanentFailure):
        mailbox.inbox.append(message(1))


def test_compaction_and_reload_by_another_process(store: Store) -> None:
    small = Store(store.root, journal_compact_bytes=1)
    inbox = small.open_mailbox("alice").inbox
    watcher = reopen(store)
    watched = watcher.open_mailbox("alice").inbox
    for n in range(5):
        inbox.append(message(n))
        inbox.store_flags([n + 1], FlagMode.ADD, [Flag.SEEN])
        snap = watched.snapshot()
        assert list(snap.uids) == list(range(1, n + 2))
        assert snap.flags(n + 1) == {Flag.SEEN}
    small.close()
    watcher.close()
