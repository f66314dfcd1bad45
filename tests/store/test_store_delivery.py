"""Delivery: one write, links into every recipient, per-mailbox results, nothing half-visible."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_testkit import files_in, message

from store import (
    Flag,
    InvalidMailboxId,
    QuotaExceeded,
    Store,
    TemporaryFailure,
    faults,
)


@pytest.fixture
def fault_at() -> Iterator[list[str]]:
    """Arm a fault point: the store raises OSError(EIO) the first time it gets there."""
    armed: list[str] = []

    def hook(point: str) -> None:
        if point in armed:
            armed.remove(point)
            raise OSError(5, "injected I/O error")

    faults.set_hook(hook)
    yield armed
    faults.set_hook(None)


def test_deliver_to_several_mailboxes_shares_one_inode(store: Store) -> None:
    results = store.deliver(message(1), ["alice", "bob", "alice"])
    assert [r.mailbox_id for r in results] == ["alice", "bob"]
    assert all(r.ok and r.uid == 1 and r.modseq for r in results)
    alice = store.open_mailbox("alice").inbox
    bob = store.open_mailbox("bob").inbox
    assert alice.read_message(1) == bob.read_message(1) == message(1)
    assert os.stat(alice.message_path(1)).st_ino == os.stat(bob.message_path(1)).st_ino
    assert alice.message_path(1).parent.name == "new"
    assert os.listdir(store.root / ".tmp") == []
    assert results[0].uidvalidity == alice.status().uidvalidity


def test_per_recipient_errors(store: Store) -> None:
    store.open_mailbox("full").set_quota(10)
    results = store.deliver(message(1), ["ok", "full", "bad/id"])
    assert results[0].ok
    assert isinstance(results[1].error, QuotaExceeded)
    assert isinstance(results[2].error, InvalidMailboxId)
    assert store.open_mailbox("full").inbox.status().messages == 0


def test_deliver_from_a_spool_file_links_it(store: Store, tmp_path: Path) -> None:
    spool = store.root / ".tmp" / "spooled"
    spool.write_bytes(message(7))
    [result] = store.deliver(spool, ["alice"])
    inbox = store.open_mailbox("alice").inbox
    assert os.stat(inbox.message_path(result.uid or 0)).st_ino == os.stat(spool).st_ino
    spool.unlink()
    assert inbox.read_message(1) == message(7)
    elsewhere = tmp_path / "other.eml"
    elsewhere.write_bytes(message(8))
    [second] = store.deliver(elsewhere, ["alice"])
    assert second.uid == 2 and inbox.read_message(2) == message(8)


def test_missing_folder_falls_back_to_inbox(store: Store) -> None:
    [result] = store.deliver(message(1), ["alice"], "No Such Folder")
    mailbox = store.open_mailbox("alice")
    assert result.folder_id == mailbox.inbox.id
    [junk] = store.deliver(message(2), ["alice"], "Junk Email", flags=[Flag.SEEN])
    assert junk.folder_id == mailbox.folder("Junk Email").id
    assert mailbox.folder("Junk Email").snapshot().flags(1) == {Flag.SEEN}


@pytest.mark.parametrize(
    "point", ["deliver.tmp_written", "index.linked", "index.dir_synced", "journal.written"]
)
def test_failure_leaves_nothing_visible(store: Store, fault_at: list[str], point: str) -> None:
    store.deliver(message(1), ["alice"])
    inbox = store.open_mailbox("alice").inbox
    fault_at.append(point)
    [result] = store.deliver(message(2), ["alice"])
    assert isinstance(result.error, TemporaryFailure)
    assert inbox.status().messages == 1
    assert len(files_in(inbox._index.path)) == 1
    assert os.listdir(store.root / ".tmp") == []
    [again] = store.deliver(message(3), ["alice"])
    assert again.ok and again.uid is not None and again.uid >= 2
    assert inbox.read_message(again.uid) == message(3)


def test_failure_for_one_recipient_only(store: Store, fault_at: list[str]) -> None:
    store.open_mailbox("alice")
    store.open_mailbox("bob")
    fault_at.append("journal.synced")
    results = store.deliver(message(1), ["alice", "bob"])
    assert not results[0].ok and results[1].ok
    assert store.open_mailbox("alice").inbox.status().messages == 0
    assert store.open_mailbox("bob").inbox.status().messages == 1


def test_unique_names_when_the_clock_stands_still(store: Store) -> None:
    for n in range(50):
        store.deliver(message(n), ["alice"])
    inbox = store.open_mailbox("alice").inbox
    names = files_in(inbox._index.path)
    assert len(names) == len(set(names)) == 50
    assert list(inbox.snapshot().uids) == list(range(1, 51))
