"""Folders: defaults, create/rename/delete/subscribe, stable ids, other processes, repair."""

from __future__ import annotations

import os
import shutil

import pytest
from store_testkit import message, reopen

from store import (
    DEFAULT_FOLDERS,
    FolderExists,
    FolderHasChildren,
    FolderKind,
    FolderNotFound,
    FolderProtected,
    InvalidFolderName,
    Mailbox,
    MailboxNotFound,
    SpecialUse,
    Store,
)
from store.index import FOLDER_FILE
from store.mailbox import MAILBOX_FILE


def test_default_folders(mailbox: Mailbox) -> None:
    infos = {f.name: f for f in mailbox.list_folders()}
    assert set(infos) == {name for name, _, _ in DEFAULT_FOLDERS}
    assert infos["Sent Items"].role is SpecialUse.SENT
    assert infos["Deleted Items"].role is SpecialUse.TRASH
    assert infos["Junk Email"].role is SpecialUse.JUNK
    assert infos["Calendar"].kind is FolderKind.CALENDAR
    assert all(f.default for f in infos.values())
    assert mailbox.folder_by_role(SpecialUse.DRAFTS).name == "Drafts"
    assert mailbox.folder_of_kind(FolderKind.NOTES).name == "Notes"
    assert mailbox.folder("INBOX").id == mailbox.inbox.id
    assert (mailbox.path / ".Sent Items" / "maildirfolder").exists()
    for sub in ("cur", "new", "tmp"):
        assert (mailbox.path / sub).is_dir()


def test_open_without_create(store: Store) -> None:
    with pytest.raises(MailboxNotFound):
        store.open_mailbox("nobody", create=False)
    store.open_mailbox("somebody")
    assert store.list_mailboxes() == ["somebody"]
    assert store.open_mailbox("somebody", create=False).id == "somebody"


def test_create_rename_delete_keep_ids(store: Store, mailbox: Mailbox) -> None:
    start = mailbox.hierarchy_modseq
    leaf = mailbox.create_folder("Projects/2024/Q1")
    assert [f.name for f in mailbox.list_folders() if f.name.startswith("Projects")] == [
        "Projects",
        "Projects/2024",
        "Projects/2024/Q1",
    ]
    store.deliver(message(1), ["alice"], "Projects/2024/Q1")
    uidvalidity = mailbox.folder("Projects/2024/Q1").status().uidvalidity
    with pytest.raises(FolderExists):
        mailbox.create_folder("Projects")
    renamed = mailbox.rename_folder("Projects", "Work/Old")
    assert mailbox.folder("Work/Old/2024/Q1").id == leaf.id
    assert renamed.name == "Work/Old"
    moved = mailbox.folder_by_id(leaf.id)
    assert moved.status().uidvalidity == uidvalidity
    assert moved.read_message(1) == message(1)
    with pytest.raises(FolderNotFound):
        mailbox.folder("Projects")
    changes = mailbox.hierarchy_changes(start)
    assert leaf.id in {f.id for f in changes.changed}
    with pytest.raises(FolderHasChildren):
        mailbox.delete_folder("Work/Old")
    mailbox.delete_folder("Work/Old", recursive=True)
    assert leaf.id in mailbox.hierarchy_changes(start).deleted
    assert not any(n.startswith(".Work.Old") for n in os.listdir(mailbox.path))
    with pytest.raises(FolderNotFound):
        moved.status()


def test_protected_and_invalid(mailbox: Mailbox) -> None:
    with pytest.raises(FolderProtected):
        mailbox.delete_folder("Sent Items")
    with pytest.raises(FolderProtected):
        mailbox.rename_folder("Inbox", "Old Inbox")
    mailbox.create_folder("A")
    with pytest.raises(InvalidFolderName):
        mailbox.rename_folder("A", "A/B")
    with pytest.raises(InvalidFolderName):
        mailbox.create_folder("../escape")


def test_subscribe(mailbox: Mailbox) -> None:
    mailbox.create_folder("Lists", subscribed=False)
    assert not mailbox.folder("Lists").info.subscribed
    mailbox.set_subscribed("Lists", True)
    assert mailbox.folder("Lists").info.subscribed


def test_other_process_sees_renames(store: Store, mailbox: Mailbox) -> None:
    mailbox.create_folder("Old")
    store.deliver(message(1), ["alice"], "Old")
    other = reopen(store)
    other_folder = other.open_mailbox("alice").folder("Old")
    assert other_folder.status().messages == 1
    mailbox.rename_folder("Old", "New")
    store.deliver(message(2), ["alice"], "New")
    assert other_folder.status().messages == 2  # found its directory again by id
    assert other_folder.name == "New"
    mailbox.delete_folder("New")
    with pytest.raises(FolderNotFound):
        other_folder.snapshot()
    other.close()


def test_interrupted_rename_and_delete_are_finished(store: Store, mailbox: Mailbox) -> None:
    info = mailbox.create_folder("Keep")
    gone = mailbox.create_folder("Gone")
    store.deliver(message(1), ["alice"], "Keep")
    # Simulate a crash after the mailbox file was written but before the directory moved.
    meta_before = (mailbox.path / MAILBOX_FILE).read_bytes()
    mailbox.rename_folder("Keep", "Kept")
    os.rename(mailbox.path / ".Kept", mailbox.path / ".Keep")
    mailbox.delete_folder("Gone")
    shutil.copytree(mailbox.path / ".Keep", mailbox.path / ".Gone")
    (mailbox.path / ".Gone" / FOLDER_FILE).write_bytes(
        (mailbox.path / ".Keep" / FOLDER_FILE)
        .read_bytes()
        .replace(info.id.encode(), gone.id.encode())
    )
    del meta_before
    other = reopen(store)
    box = other.open_mailbox("alice")
    assert box.folder("Kept").id == info.id
    assert box.folder("Kept").read_message(1) == message(1)
    assert not (mailbox.path / ".Gone").exists()
    other.close()


def test_foreign_maildir_folder_is_adopted(store: Store, mailbox: Mailbox) -> None:
    foreign = mailbox.path / ".From Mutt.Sub"
    for sub in ("cur", "new", "tmp"):
        (foreign / sub).mkdir(parents=True)
    (foreign / "new" / "12345.mutt").write_bytes(message(1))
    other = reopen(store)
    box = other.open_mailbox("alice")
    folder = box.folder("From Mutt/Sub")
    assert folder.status().messages == 1
    assert folder.read_message(1) == message(1)
    other.close()
