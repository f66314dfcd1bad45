"""Security: mailbox names that would escape the user's root are flagged (checklist 37).

The parser still produces the command (so the session can answer NO with a reason); the
store refuses flagged names and validates again on its own.
"""

from __future__ import annotations

import imaplib
import os
from pathlib import Path

import pytest
from harness import Instance, Server
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.imap import commands as c
from protocols.imap.limits import MAX_MAILBOX_NAME_BYTES
from protocols.imap.mutf7 import encode_mutf7
from protocols.imap.names import decode_mailbox_name, mailbox_name_problem
from protocols.imap.parser import NEED_DATA, CommandReader, ContinuationNeeded, Event


def read(data: bytes, *, utf8: bool = False) -> list[Event]:
    reader = CommandReader()
    reader.set_utf8(utf8)
    reader.receive_data(data)
    events: list[Event] = []
    while (event := reader.next_event()) is not NEED_DATA:
        if isinstance(event, ContinuationNeeded):
            reader.accept_literal()
        else:
            events.append(event)
    return events


@pytest.mark.parametrize(
    "line",
    [
        b"A CREATE ../x",
        b"A CREATE /etc",
        b"A CREATE ~root",
        b'A SELECT "a/../../b"',
        b"A CREATE .",
        b"A CREATE ..",
        b"A CREATE a/./b",
        b"A CREATE a//b",
        b'A CREATE "a\\\\b"',
        b"A CREATE &AC4ALg-",  # ".." in non-canonical modified UTF-7
        b"A CREATE &AC4ALgAv-x",  # "../x"
        b"A CREATE a&AAA-b",  # NUL via modified UTF-7
        b"A CREATE &AA0ACg-",  # CR LF via modified UTF-7
        b"A DELETE " + b"x" * (MAX_MAILBOX_NAME_BYTES + 1),
        b"A CREATE a/" + b"y" * 256,
    ],
)
def test_dangerous_names_are_flagged(line: bytes) -> None:
    (event,) = read(line + b"\r\n")
    assert isinstance(event, c.CreateCommand | c.SelectCommand | c.DeleteCommand)
    assert event.mailbox.problem is not None, event.mailbox


def test_rename_flags_the_target() -> None:
    (event,) = read(b"A RENAME INBOX ../../x\r\n")
    assert isinstance(event, c.RenameCommand)
    assert event.mailbox.problem is None
    assert event.new_mailbox.problem is not None


def test_literal_names_are_checked_too() -> None:
    (event,) = read(b"A CREATE {5}\r\n../.x\r\n")
    assert isinstance(event, c.CreateCommand) and event.mailbox.problem is not None


def test_utf8_mode_names() -> None:
    (event,) = read('A CREATE "../Entwürfe"\r\n'.encode(), utf8=True)
    assert isinstance(event, c.CreateCommand) and event.mailbox.problem is not None
    (event,) = read('A CREATE "Entwürfe/2024"\r\n'.encode(), utf8=True)
    assert isinstance(event, c.CreateCommand) and event.mailbox.problem is None
    (event,) = read('A CREATE "Entwürfe"\r\n'.encode(), utf8=False)  # 8-bit without UTF8=ACCEPT
    assert isinstance(event, c.CreateCommand) and event.mailbox.problem is not None


@pytest.mark.parametrize("name", ["INBOX", "Archive/2024", "Entwürfe", "a.b", "Notes...", "x y"])
def test_ordinary_names_pass(name: str) -> None:
    assert decode_mailbox_name(encode_mutf7(name)).problem is None


def test_inbox_is_case_insensitive() -> None:
    assert decode_mailbox_name(b"iNbOx").name == "INBOX"
    assert decode_mailbox_name(b"INBOX/sub").name == "INBOX/sub"


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_unflagged_names_are_safe(name: str) -> None:
    wire = encode_mutf7(name) if not any(0xD800 <= ord(ch) <= 0xDFFF for ch in name) else b"&2D0-"
    decoded = decode_mailbox_name(wire)
    if decoded.problem is None:
        parts = decoded.name.split("/")
        assert not {".", "..", ""} & set(parts)
        assert not decoded.name.startswith(("/", "~"))
        assert all(ord(ch) >= 0x20 and ord(ch) != 0x7F for ch in decoded.name)
        assert "\\" not in decoded.name
    assert mailbox_name_problem(decoded.name) == decoded.problem or decoded.problem == (
        "invalid mailbox name encoding"
    )


# --- end to end: the real server, imaplib, and the file system --------------------------

END_TO_END_NAMES = [
    "../x",
    "/etc",
    "~root",
    "a/../../b",
    "..",
    "a//b",
    "a\\b",
    "&AC4ALg-",  # ".." in modified UTF-7
    "&AC4ALgAv-x",  # "../x"
    "a&AAA-b",  # NUL
    "&AA0ACg-",  # CR LF
    "x" * 300,  # a level longer than NAME_MAX
]


def _tree(root: Path) -> set[str]:
    return {
        str(Path(dirpath, name).relative_to(root))
        for dirpath, dirnames, filenames in os.walk(root)
        for name in (*dirnames, *filenames)
    }


def test_traversal_names_are_refused_end_to_end(server: Server, instance: Instance) -> None:
    mailbox_root = instance.mailbox_dir(instance.user)
    client = imaplib.IMAP4_SSL(
        *server.address("imaps"), ssl_context=instance.client_context(check_hostname=False)
    )
    client.login(instance.user, instance.password)
    outside_before = _tree(instance.folder) - {
        p
        for p in _tree(instance.folder)
        if p.startswith(str(mailbox_root.relative_to(instance.folder)))
    }
    for name in END_TO_END_NAMES:
        quoted = '"' + name.replace("\\", "\\\\") + '"'
        for command, args in (
            ("CREATE", (quoted,)),
            ("DELETE", (quoted,)),
            ("SELECT", (quoted,)),
            ("RENAME", ("INBOX", quoted)),
            ("RENAME", ("Archive", quoted)),
            ("APPEND", (quoted, "{1+}\r\nx")),
            ("STATUS", (quoted, "(MESSAGES)")),
        ):
            typ, data = (
                client._simple_command(command, *args)
                if command != "APPEND"
                else (_raw_append(client, quoted))
            )
            assert typ == "NO", (command, name, typ, data)
        client.state = "AUTH"
    # Names that only look like maildir internals are fine: they stay inside the root.
    for harmless in ("tmp", "new", "cur", "New/cur", "dovecot.index"):
        typ, data = client.create(harmless)
        assert typ == "OK", (harmless, data)
    typ, listing = client.list()
    names = b"\n".join(x for x in listing if isinstance(x, bytes))
    assert b'"/" tmp' in names and b'"/" New/cur' in names
    client.logout()
    outside_after = _tree(instance.folder) - {
        p
        for p in _tree(instance.folder)
        if p.startswith(str(mailbox_root.relative_to(instance.folder)))
    }
    created_outside = {
        p for p in outside_after - outside_before if not p.startswith(("run", "spool", "queue"))
    }
    assert not {
        p for p in created_outside if not p.endswith((".log", ".sqlite3-wal", ".sqlite3-shm"))
    }
    # Every folder directory is a direct child of the mailbox root.
    for entry in mailbox_root.iterdir():
        assert entry.parent == mailbox_root
        assert entry.name not in ("..", ".")


def _raw_append(client: imaplib.IMAP4, quoted: str) -> tuple[str, list[bytes]]:
    try:
        typ, data = client.append(quoted, None, None, b"Subject: x\r\n\r\nx\r\n")
    except imaplib.IMAP4.error as exc:
        return "BAD", [str(exc).encode()]
    return typ, data
