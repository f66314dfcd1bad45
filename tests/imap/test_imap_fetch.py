"""Building FETCH responses from a FetchSource (every item kind, nested multipart)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from protocols.imap.commands import FetchCommand
from protocols.imap.fetch import build_fetch, needs_body, sets_seen
from protocols.imap.model import BodyStructure, Envelope
from protocols.imap.parser import ParseContext, parse_command
from protocols.imap.sections import PartSpan, UnknownTransferEncoding, parse_spans

RAW = (
    b"From: a@example.org\r\nSubject: hi\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"AAEC\r\n"
    b"--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner text\r\n"
    b"--b--\r\n"
)


@dataclass
class Source:
    uid: int = 42
    flags: Sequence[str] = ("\\Seen",)
    internal_date: dt.datetime = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    size: int = len(RAW)
    modseq: int = 7
    save_date: dt.datetime | None = None
    envelope: Envelope = field(default_factory=lambda: Envelope(subject="hi"))
    body_structure: BodyStructure = field(
        default_factory=lambda: BodyStructure(
            type="multipart", subtype="mixed", parts=(BodyStructure(size=5, lines=1),)
        )
    )
    raw_calls: int = 0

    def raw(self) -> bytes:
        self.raw_calls += 1
        return RAW

    def spans(self) -> PartSpan:
        return parse_spans(RAW)


def fetch(items: str, src: Source | None = None, **kw: bool) -> bytes:
    cmd = parse_command(b"t FETCH 1 " + items.encode(), ParseContext())
    assert isinstance(cmd, FetchCommand)
    return build_fetch(1, cmd.attributes, src or Source(), **kw)


def test_index_items_do_not_touch_the_file() -> None:
    src = Source()
    line = fetch(
        "(FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE MODSEQ SAVEDATE)", src
    )
    assert src.raw_calls == 0
    assert line.startswith(
        b'* 1 FETCH (FLAGS (\\Seen) UID 42 INTERNALDATE "01-May-2024 12:00:00 +0000"'
    )
    assert b'RFC822.SIZE %d ENVELOPE (NIL "hi"' % len(RAW) in line
    assert b'BODY (("text" "plain" NIL NIL NIL "7BIT" 5 1) "mixed")' in line
    assert (
        b'BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7BIT" 5 1 NIL NIL NIL NIL) "mixed" NIL NIL NIL NIL)'
        in line
    )
    assert line.endswith(b"MODSEQ (7) SAVEDATE NIL)\r\n")


def test_body_items() -> None:
    assert fetch("BODY[1]") == b"* 1 FETCH (BODY[1] {5}\r\nhello)\r\n"
    assert fetch("BODY.PEEK[3.TEXT]") == b"* 1 FETCH (BODY[3.TEXT] {10}\r\ninner text)\r\n"
    assert (
        fetch("BODY[3.HEADER]") == b"* 1 FETCH (BODY[3.HEADER] {18}\r\nSubject: inner\r\n\r\n)\r\n"
    )
    assert fetch("BODY[]<0.4>") == b"* 1 FETCH (BODY[]<0> {4}\r\nFrom)\r\n"
    assert fetch("BODY[HEADER.FIELDS (SUBJECT)]") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {15}\r\nSubject: hi\r\n\r\n)\r\n"
    )
    assert fetch("BODY[9]") == b"* 1 FETCH (BODY[9] NIL)\r\n"
    assert fetch("BINARY[2]") == b"* 1 FETCH (BINARY[2] ~{3}\r\n\x00\x01\x02)\r\n"
    assert fetch("BINARY.SIZE[2]") == b"* 1 FETCH (BINARY.SIZE[2] 3)\r\n"
    assert fetch("RFC822.HEADER").startswith(b"* 1 FETCH (RFC822.HEADER {")
    assert fetch("RFC822.TEXT").startswith(b"* 1 FETCH (RFC822.TEXT {")
    assert fetch("RFC822") == b"* 1 FETCH (RFC822 {%d}\r\n" % len(RAW) + RAW + b")\r\n"


def test_uid_modseq_flags_added_once() -> None:
    line = fetch("(UID FLAGS)", add_uid=True, add_modseq=True, add_flags=True)
    assert line == b"* 1 FETCH (UID 42 FLAGS (\\Seen) MODSEQ (7))\r\n"


def test_helpers() -> None:
    cmd = parse_command(b"t FETCH 1 (FLAGS BODY.PEEK[1])", ParseContext())
    assert isinstance(cmd, FetchCommand)
    assert needs_body(cmd.attributes) and not sets_seen(cmd.attributes)
    cmd = parse_command(b"t FETCH 1 (RFC822.TEXT)", ParseContext())
    assert isinstance(cmd, FetchCommand)
    assert sets_seen(cmd.attributes)


def test_binary_unknown_encoding() -> None:
    class Odd(Source):
        def raw(self) -> bytes:
            return b"Content-Transfer-Encoding: x-odd\r\n\r\nzzz"

        def spans(self) -> PartSpan:
            return parse_spans(self.raw())

    with pytest.raises(UnknownTransferEncoding):
        fetch("BINARY[1]", Odd())
