"""The limits not crossed elsewhere: each one crossed here, with a defined outcome."""

from __future__ import annotations

from pathlib import Path

import pytest
from store_testkit import message

from store import (
    Flag,
    FlagMode,
    InvalidKeyword,
    Mailbox,
    NewMessage,
    PermanentFailure,
    Store,
)
from store import index as index_module
from store import mailbox as mailbox_module
from store.admin import iter_mbox
from store.index import JOURNAL_FILE
from store.limits import (
    JOURNAL_COMPACT_MIN_BYTES,
    MAILDIR_KEYWORD_LETTERS,
    MAX_DECODE_INPUT,
    MAX_KEYWORD_LENGTH,
    MAX_PREVIEW_SOURCE_BYTES,
    MAX_RECORD_BYTES,
)
from store.metadata import build_metadata
from store.mime import decode_words
from store.records import frame


def test_folder_count_limit(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = len(mailbox.list_folders())
    monkeypatch.setattr(mailbox_module, "MAX_FOLDERS", existing + 1)
    mailbox.create_folder("one more")
    with pytest.raises(PermanentFailure):
        mailbox.create_folder("too many")


def test_keyword_limits(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = mailbox.inbox
    inbox.append(message(1))
    inbox.store_flags([1], FlagMode.ADD, keywords=["k" * MAX_KEYWORD_LENGTH])
    with pytest.raises(InvalidKeyword):
        inbox.store_flags([1], FlagMode.ADD, keywords=["k" * (MAX_KEYWORD_LENGTH + 1)])
    for bad in ("", " lead", "\\Seen", "a\nb"):
        with pytest.raises(InvalidKeyword):
            inbox.store_flags([1], FlagMode.ADD, keywords=[bad])
    monkeypatch.setattr(index_module, "MAX_KEYWORDS_PER_FOLDER", 3)
    inbox.store_flags([1], FlagMode.ADD, keywords=["a", "b"])
    with pytest.raises(InvalidKeyword):
        inbox.store_flags([1], FlagMode.ADD, keywords=["c", "d"])


def test_keywords_beyond_the_letters_live_in_the_index_only(store: Store, mailbox: Mailbox) -> None:
    inbox = mailbox.inbox
    inbox.append(message(1))
    names = [f"kw{i:02d}" for i in range(MAILDIR_KEYWORD_LETTERS + 2)]
    inbox.store_flags([1], FlagMode.ADD, keywords=names)
    info = inbox.message_path(1).name.split(":2,")[1]
    assert len(info) == MAILDIR_KEYWORD_LETTERS  # a..z only
    other = Store(store.root)
    assert other.open_mailbox("alice").inbox.snapshot().keywords(1) == set(names)
    other.close()


def test_expunge_history_limit(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "MAX_EXPUNGE_HISTORY", 4)
    inbox = mailbox.inbox
    inbox.append_many([NewMessage(message(i)) for i in range(10)])
    start = inbox.status().highestmodseq
    for uid in range(1, 7):
        inbox.expunge([uid])
    late = inbox.changes_since(inbox.status().highestmodseq - 1)
    assert late.complete and late.vanished == (6,)
    early = inbox.changes_since(start)
    assert not early.complete  # the oldest expunges were forgotten


def test_journal_compaction_threshold(store: Store) -> None:
    quick = Store(store.root, fsync=False)  # thousands of commits: skip the fsyncs
    inbox = quick.open_mailbox("alice").inbox
    journal = inbox._index.path / JOURNAL_FILE
    inbox.append(message(1))
    for n in range(JOURNAL_COMPACT_MIN_BYTES // 40):
        inbox.store_flags([1], FlagMode.REPLACE, [Flag.SEEN] if n % 2 else [])
        assert journal.stat().st_size <= JOURNAL_COMPACT_MIN_BYTES + 4096
    assert inbox.snapshot().flags(1) == (frozenset() if n % 2 == 0 else {Flag.SEEN})
    quick.close()


def test_record_size_limit() -> None:
    frame(b"x" * 10)
    with pytest.raises(ValueError, match="too large"):
        frame(b"x" * (MAX_RECORD_BYTES + 1))


def test_decode_input_limit() -> None:
    word = "=?utf-8?q?a?="
    assert decode_words(word) == "a"
    long = word + " " * MAX_DECODE_INPUT
    assert decode_words(long) == long  # too long to decode: left raw


def test_preview_source_limit() -> None:
    far = b"Subject: p\r\n\r\n" + b" " * (MAX_PREVIEW_SOURCE_BYTES + 10) + b"late words"
    assert build_metadata(far).preview == ""
    near = b"Subject: p\r\n\r\n" + b" " * 100 + b"early words"
    assert build_metadata(near).preview == "early words"


def test_import_message_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from store import admin

    monkeypatch.setattr(admin, "MAX_IMPORT_MESSAGE_BYTES", 100)
    path = tmp_path / "m.mbox"
    path.write_bytes(
        b"From a Tue Jul  1 10:52:37 2003\nSubject: small\n\nx\n\n"
        b"From b Tue Jul  1 10:52:37 2003\nSubject: big\n\n" + b"y" * 200 + b"\n"
    )
    messages = [m for m, _, _ in iter_mbox(path)]
    assert messages[0].startswith(b"Subject: small") and messages[1] == b""


def test_uidvalidity_wraps_within_32_bits(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mailbox_module, "MAX_UIDVALIDITY", 1_700_000_005)
    values = {
        mailbox.create_folder(f"f{i}") and mailbox.folder(f"f{i}").status().uidvalidity
        for i in range(8)
    }
    assert all(0 < v <= 1_700_000_005 for v in values) and len(values) == 8
