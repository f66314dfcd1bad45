"""Folder names: validation, maildir++ escaping, and that nothing escapes the mailbox."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store import FolderExists, InvalidFolderName, InvalidMailboxId, Store
from store.limits import MAX_FOLDER_DEPTH, MAX_FOLDER_DIR_BYTES, MAX_MAILBOX_ID_LENGTH
from store.names import (
    folder_dir_name,
    folder_name_from_dir,
    normalize_folder_name,
    validate_mailbox_id,
)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "a//b",
        "/a",
        "a/",
        "..",
        "a/../b",
        ".",
        "a/./b",
        "a\x00b",
        "a\nb",
        "a\rb",
        "a\x7fb",
        "a\u2028b",
        " Inbox",
        "Inbox ",
        "a/ b",
        "x\x85y",
    ],
)
def test_dangerous_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidFolderName):
        normalize_folder_name(name)


@pytest.mark.parametrize(
    ("name", "directory"),
    [
        ("Sent Items", ".Sent Items"),
        ("a.b", ".a%2Eb"),
        ("Projects/2024/Q1", ".Projects.2024.Q1"),
        ("~root", ".%7Eroot"),
        ("AT&T", ".AT%26T"),
        ("100%", ".100%25"),
        ("back\\slash", ".back%5Cslash"),
        ("a:b", ".a%3Ab"),
        ("..x", ".%2E%2Ex"),
        ("Ünïcødé/日本", ".Ünïcødé.日本"),
        ("tmp", ".tmp"),
        ("cur", ".cur"),
    ],
)
def test_escaping_round_trips(name: str, directory: str) -> None:
    assert folder_dir_name(name) == directory
    assert folder_name_from_dir(directory) == name


def test_inbox_is_case_insensitive_and_the_root() -> None:
    assert normalize_folder_name("INBOX") == "Inbox"
    assert normalize_folder_name("inbox/Sub") == "Inbox/Sub"
    assert folder_dir_name("Inbox") == ""


def test_unicode_names_are_nfc() -> None:
    assert normalize_folder_name("Cafe\u0301") == "Caf\u00e9"


def test_depth_limit() -> None:
    normalize_folder_name("/".join(["a"] * MAX_FOLDER_DEPTH))
    with pytest.raises(InvalidFolderName):
        normalize_folder_name("/".join(["a"] * (MAX_FOLDER_DEPTH + 1)))


def test_directory_name_length_limit() -> None:
    # "." + name must fit NAME_MAX; "." escapes to three bytes.
    normalize_folder_name("x" * (MAX_FOLDER_DIR_BYTES - 1))
    with pytest.raises(InvalidFolderName):
        normalize_folder_name("x" * MAX_FOLDER_DIR_BYTES)
    with pytest.raises(InvalidFolderName):
        normalize_folder_name("." * (MAX_FOLDER_DIR_BYTES // 3 + 1))


def test_mailbox_ids() -> None:
    assert validate_mailbox_id("0123abcd-EF_9") == "0123abcd-EF_9"
    validate_mailbox_id("a" * MAX_MAILBOX_ID_LENGTH)
    for bad in ("", "a/b", "..", ".hidden", "a b", "é", "a" * (MAX_MAILBOX_ID_LENGTH + 1)):
        with pytest.raises(InvalidMailboxId):
            validate_mailbox_id(bad)


def test_folders_named_like_maildir_parts_do_not_collide(store: Store) -> None:
    mailbox = store.open_mailbox("alice")
    for name in ("tmp", "new", "cur", "Tmp/new"):
        mailbox.create_folder(name)
    store.deliver(b"Subject: x\r\n\r\nx\r\n", ["alice"], "new")
    assert mailbox.folder("new").status().messages == 1
    assert mailbox.inbox.status().messages == 0
    assert os.listdir(mailbox.path / "new") == []
    with pytest.raises(FolderExists):
        mailbox.create_folder("tmp")


_ALPHABET = st.sampled_from(
    [*list("ab./\\~&%:"), "..", "\x00", "\n", " ", "é", "\u2028", "&AC4ALg-", "\x7f", "日"]
)
_NAMES = st.lists(_ALPHABET, min_size=0, max_size=12).map("".join)


def _inside(root: Path, path: str) -> bool:
    real = os.path.realpath(path)
    return real == str(root) or real.startswith(str(root) + os.sep)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(names=st.lists(_NAMES, min_size=1, max_size=4))
def test_no_folder_name_escapes_the_mailbox(
    tmp_path_factory: pytest.TempPathFactory, names: list[str]
) -> None:
    root = tmp_path_factory.mktemp("trav")
    store = Store(root / "data")
    mailbox = store.open_mailbox("victim")
    mailbox_dir = Path(os.path.realpath(mailbox.path))
    before = set(os.listdir(root))
    for name in names:
        try:
            info = mailbox.create_folder(name)
        except (InvalidFolderName, FolderExists):
            continue
        # Created folders are direct children of the mailbox directory.
        directory = mailbox.path / folder_dir_name(info.name)
        assert directory.parent == mailbox.path and directory.name.startswith(".")
        assert mailbox.folder(info.name).id == info.id
        store.deliver(b"Subject: t\r\n\r\nt\r\n", ["victim"], info.name)
        try:
            renamed = mailbox.rename_folder(info.name, info.name + "x")
            mailbox.delete_folder(renamed.name, recursive=True)
        except (InvalidFolderName, FolderExists):
            pass
    for dirpath, dirnames, filenames in os.walk(root / "data"):
        for entry in dirnames + filenames:
            full = os.path.join(dirpath, entry)
            if os.path.commonpath([full, str(mailbox.path)]) == str(mailbox.path):
                assert _inside(mailbox_dir, full)
            else:
                assert dirpath == str(root / "data") or ".tmp" in full
    assert set(os.listdir(root)) == before
    store.close()
