"""The command reader: framing, literals, continuation, resynchronisation, feeding patterns."""

from __future__ import annotations

import pytest

from protocols.imap.commands import (
    AppendCommand,
    CapabilityCommand,
    FetchCommand,
    IdleCommand,
    LoginCommand,
    NoopCommand,
    SearchCommand,
    SelectCommand,
    StartTLSCommand,
)
from protocols.imap.parser import (
    NEED_DATA,
    BadCommand,
    CommandReader,
    ContinuationLine,
    ContinuationNeeded,
    Event,
    ReaderStateError,
)

PIPELINE = (
    b"a1 CAPABILITY\r\n"
    b'a2 LOGIN joe "pa ss"\r\n'
    b"a3 LOGIN {3}\r\njoe {4}\r\npass\r\n"
    b"a4 SELECT INBOX (CONDSTORE)\r\n"
    b"a5 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From)]<0.10>)\r\n"
    b"a6 APPEND INBOX (\\Seen) {5+}\r\nhello ~{3}\r\nx\x00y\r\n"
    b"a7 SEARCH OR (FROM {3}\r\nbob NOT SEEN) UID 1:5\r\n"
    b"\r\n"
    b"a8 NOOP\n"
    b"a9 FROBNICATE\r\n"
    b"b1 NOOP\r\n"
)


def drive(reader: CommandReader, chunks: list[bytes], *, accept: bool = True) -> list[Event]:
    """Feed ``chunks`` one at a time, draining events; accept (or reject) every literal."""
    events: list[Event] = []
    for chunk in chunks:
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            events.append(event)
            if isinstance(event, ContinuationNeeded):
                if accept:
                    reader.accept_literal()
                else:
                    reader.reject_literal()
    return events


def events_for(data: bytes, chunks: list[bytes] | None = None) -> list[Event]:
    return drive(CommandReader(), chunks if chunks is not None else [data])


def assert_split_invariant(data: bytes) -> list[Event]:
    """Whole, byte by byte and split at every boundary must give the same events."""
    whole = events_for(data)
    assert events_for(data, [data[i : i + 1] for i in range(len(data))]) == whole
    for cut in range(1, len(data)):
        assert events_for(data, [data[:cut], data[cut:]]) == whole, cut
    return whole


def test_pipeline_whole_bytewise_and_every_split() -> None:
    events = assert_split_invariant(PIPELINE)
    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "CapabilityCommand",
        "LoginCommand",
        "ContinuationNeeded",
        "ContinuationNeeded",
        "LoginCommand",
        "SelectCommand",
        "FetchCommand",
        "ContinuationNeeded",  # ~{3} is synchronizing; {5+} is not
        "AppendCommand",
        "ContinuationNeeded",
        "SearchCommand",
        "NoopCommand",
        "BadCommand",
        "NoopCommand",
    ]
    login = events[4]
    assert isinstance(login, LoginCommand)
    assert (login.username, login.password) == ("joe", b"pass")
    append = events[8]
    assert isinstance(append, AppendCommand)
    assert [m.data for m in append.messages] == [b"hello", b"x\x00y"]
    assert [m.binary for m in append.messages] == [False, True]
    bad = events[12]
    assert isinstance(bad, BadCommand)
    assert bad.tag == "a9"
    assert "unknown command" in bad.reason


def test_continuation_needed_names_tag_command_and_size() -> None:
    reader = CommandReader()
    reader.receive_data(b"A1 APPEND INBOX {310}\r\n")
    event = reader.next_event()
    assert event == ContinuationNeeded(tag="A1", command="APPEND", size=310)
    assert isinstance(event, ContinuationNeeded) and event.is_append
    with pytest.raises(ReaderStateError):
        reader.next_event()


def test_rejected_literal_does_not_swallow_next_command() -> None:
    reader = CommandReader()
    reader.receive_data(b"A1 APPEND INBOX {10}\r\n")
    assert isinstance(reader.next_event(), ContinuationNeeded)
    reader.reject_literal()  # the session answered "A1 NO [OVERQUOTA]"
    reader.receive_data(b"A2 NOOP\r\n")
    assert reader.next_event() == NoopCommand(tag="A2")
    assert reader.next_event() is NEED_DATA


def test_data_after_rejected_literal_in_same_packet_is_a_command() -> None:
    # A client that (wrongly) pipelines past a synchronizing literal gets its "data" read
    # as commands: here a valid NOOP, proving the reader never swallows it as a literal.
    events = drive(CommandReader(), [b"A1 LOGIN {5}\r\nB1 NOOP\r\n"], accept=False)
    assert events == [ContinuationNeeded(tag="A1", command="LOGIN", size=5), NoopCommand(tag="B1")]


def test_literal_data_with_crlf_and_commands_inside_is_data() -> None:
    data = b"A1 LOGIN {12}\r\nA2 NOOP\r\nxyz {2}\r\nab\r\n"
    events = assert_split_invariant(data)
    assert events[-1] == LoginCommand(tag="A1", username="A2 NOOP\r\nxyz", password=b"ab")


def test_continuation_line_for_idle_done() -> None:
    reader = CommandReader()
    reader.receive_data(b"A1 IDLE\r\nDONE\r\nA2 NOOP\r\n")
    assert reader.next_event() == IdleCommand(tag="A1")
    reader.expect_continuation()  # after "+ idling"
    assert reader.next_event() == ContinuationLine(line=b"DONE")
    assert reader.next_event() == NoopCommand(tag="A2")


def test_continuation_line_for_sasl() -> None:
    reader = CommandReader()
    reader.receive_data(b"A1 AUTHENTICATE PLAIN\r\n")
    assert reader.next_event().__class__.__name__ == "AuthenticateCommand"
    reader.expect_continuation()
    reader.receive_data(b"AGpvZQBzZWNyZXQ=\r\n")
    assert reader.next_event() == ContinuationLine(line=b"AGpvZQBzZWNyZXQ=")


def test_take_buffered_after_starttls_returns_injected_plaintext() -> None:
    # CVE-2011-0411: commands pipelined after STARTTLS must be discarded, not run.
    reader = CommandReader()
    reader.receive_data(b"A1 STARTTLS\r\nA2 LOGIN evil evil\r\n")
    assert reader.next_event() == StartTLSCommand(tag="A1")
    assert reader.take_buffered() == b"A2 LOGIN evil evil\r\n"
    assert reader.next_event() is NEED_DATA


def test_take_buffered_mid_command_is_refused() -> None:
    reader = CommandReader()
    reader.receive_data(b"A1 LOGIN {3}\r\n")
    assert isinstance(reader.next_event(), ContinuationNeeded)
    with pytest.raises(ReaderStateError):
        reader.take_buffered()


def test_bare_lf_and_empty_lines() -> None:
    assert events_for(b"\r\n\r\nA1 NOOP\nA2 CAPABILITY\r\n") == [
        NoopCommand(tag="A1"),
        CapabilityCommand(tag="A2"),
    ]


def test_untagged_garbage_gets_untagged_bad() -> None:
    events = events_for(b"* NOOP\r\n(foo\r\nA1 NOOP\r\n")
    assert [e.tag for e in events if isinstance(e, BadCommand)] == [None, None]
    assert events[-1] == NoopCommand(tag="A1")


def test_grammar_error_keeps_tag_and_resyncs() -> None:
    events = events_for(b"A1 SELECT\r\nA2 FETCH 1 (FLAGS\r\nA3 NOOP\r\n")
    assert [(type(e).__name__, getattr(e, "tag", None)) for e in events] == [
        ("BadCommand", "A1"),
        ("BadCommand", "A2"),
        ("NoopCommand", "A3"),
    ]


def test_literal_in_search_split_everywhere() -> None:
    data = b'T1 UID SEARCH CHARSET UTF-8 SUBJECT {5}\r\n\xc3\xa9t\xc3\xa9 SINCE "1-Feb-2024"\r\n'
    events = assert_split_invariant(data)
    cmd = events[-1]
    assert isinstance(cmd, SearchCommand)
    assert cmd.uid and cmd.charset == "UTF-8"


def test_select_fetch_types() -> None:
    events = events_for(b"A SELECT Inbox\r\nB FETCH 1,2:4 FAST\r\n")
    select, fetch = events
    assert isinstance(select, SelectCommand) and select.mailbox.name == "INBOX"
    assert isinstance(fetch, FetchCommand) and len(fetch.attributes) == 3


def test_capability_strings() -> None:
    assert CommandReader().capability == "LITERAL-"
    assert CommandReader(literal_plus=True).capability == "LITERAL+"


def test_utf8_accept_mailbox_names() -> None:
    reader = CommandReader()
    reader.set_utf8(True)
    reader.receive_data('A SELECT "Entwürfe"\r\n'.encode())
    event = reader.next_event()
    assert isinstance(event, SelectCommand)
    assert event.mailbox.name == "Entwürfe" and event.mailbox.problem is None


def test_reader_methods_out_of_order_raise() -> None:
    reader = CommandReader()
    with pytest.raises(ReaderStateError):
        reader.accept_literal()
    with pytest.raises(ReaderStateError):
        reader.reject_literal()
    reader.receive_data(b"A LOGIN {1}\r\n")
    reader.next_event()
    with pytest.raises(ReaderStateError):
        reader.expect_continuation()


def test_large_pipelined_buffer_is_linear() -> None:
    # 20k pipelined commands in one chunk: buffer compaction keeps this fast.
    data = b"".join(b"A%d NOOP\r\n" % i for i in range(20_000))
    events = events_for(data)
    assert len(events) == 20_000 and events[-1] == NoopCommand(tag="A19999")


def test_big_literal_arrives_in_many_chunks() -> None:
    reader = CommandReader(append_limit=1 << 20)
    body = b"x" * 500_000
    chunks = [b"A1 APPEND INBOX {500000}\r\n"] + [
        body[i : i + 4096] for i in range(0, len(body), 4096)
    ]
    events = drive(reader, [*chunks, b"\r\n"])
    assert isinstance(events[-1], AppendCommand)
    assert events[-1].messages[0].data == body


def test_compress_rebuffer_flow() -> None:
    import zlib

    reader = CommandReader()
    compressor = zlib.compressobj(wbits=-15)
    deflated = compressor.compress(b"A2 NOOP\r\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
    reader.receive_data(b"A1 COMPRESS DEFLATE\r\n" + deflated)
    assert reader.next_event().__class__.__name__ == "CompressCommand"
    pending = reader.take_buffered()  # the I/O layer now inflates everything it reads
    reader.receive_data(zlib.decompressobj(wbits=-15).decompress(pending))
    assert reader.next_event() == NoopCommand(tag="A2")
