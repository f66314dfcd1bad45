"""Security: oversized literals, lines, nesting and counts (checklist item 38).

Every limit in protocols.imap.limits that the reader enforces is crossed here, and each
time the next command must still be read correctly (or the connection must be declared
unrecoverable, never silently desynchronised).
"""

from __future__ import annotations

import socket
import zlib
from pathlib import Path

from harness import Instance, Server

from protocols.imap import limits
from protocols.imap.commands import AppendCommand, LoginCommand, NoopCommand
from protocols.imap.parser import (
    NEED_DATA,
    BadCommand,
    CommandReader,
    ContinuationNeeded,
    Event,
)

NEXT = b"Z9 NOOP\r\n"


def drive(reader: CommandReader, *chunks: bytes, accept: bool = True) -> list[Event]:
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


def only_bad(events: list[Event]) -> BadCommand:
    bad = [e for e in events if isinstance(e, BadCommand)]
    assert len(bad) == 1, events
    return bad[0]


def test_append_4gib_literal_refused_before_continuation() -> None:
    events = drive(CommandReader(), b"A1 APPEND INBOX {4294967296}\r\n" + NEXT)
    assert not any(isinstance(e, ContinuationNeeded) for e in events)
    bad = only_bad(events)
    assert (bad.tag, bad.status, bad.code, bad.fatal) == ("A1", "NO", "TOOBIG", False)
    assert events[-1] == NoopCommand(tag="Z9")


def test_append_over_appendlimit_is_no_toobig_without_plus() -> None:
    reader = CommandReader(append_limit=1000)
    events = drive(reader, b"A1 APPEND INBOX {1001}\r\n" + NEXT)
    bad = only_bad(events)
    assert (bad.status, bad.code) == ("NO", "TOOBIG")
    assert events == [bad, NoopCommand(tag="Z9")]
    # exactly at the limit: the session is asked
    events = drive(reader, b"A2 APPEND INBOX {1000}\r\n")
    assert events == [ContinuationNeeded(tag="A2", command="APPEND", size=1000)]


def test_numeric_overflow_in_literal_marker() -> None:
    events = drive(CommandReader(), b"A1 LOGIN {99999999999999999999}\r\n" + NEXT)
    bad = only_bad(events)
    assert bad.tag == "A1" and not bad.fatal
    assert events[-1] == NoopCommand(tag="Z9")


def test_nonsync_overflow_cannot_be_skipped_so_it_is_fatal() -> None:
    reader = CommandReader()
    events = drive(reader, b"A1 LOGIN {99999999999999999999+}\r\n" + NEXT)
    assert len(events) == 1 and isinstance(events[0], BadCommand) and events[0].fatal
    assert drive(reader, NEXT) == []  # closed: nothing more is read


def test_literal_minus_refuses_nonsync_over_4096_and_skips_it() -> None:
    size = limits.LITERAL_MINUS_MAX + 1
    payload = (b"Z1 LOGOUT\r\n" * 1000)[:size]  # commands inside the literal must not run
    reader = CommandReader()
    events = drive(reader, b"A1 APPEND INBOX {%d+}\r\n" % size, payload, b" {3+}\r\nabc\r\n" + NEXT)
    bad = only_bad(events)
    assert (bad.tag, bad.code, bad.status) == ("A1", "TOOBIG", "BAD")
    assert events == [bad, NoopCommand(tag="Z9")]


def test_literal_minus_accepts_nonsync_at_4096() -> None:
    size = limits.LITERAL_MINUS_MAX
    events = drive(CommandReader(), b"A1 APPEND INBOX {%d+}\r\n" % size, b"x" * size, b"\r\n")
    assert isinstance(events[0], AppendCommand)


def test_literal_plus_accepts_large_nonsync_append_but_bounds_it() -> None:
    reader = CommandReader(literal_plus=True, append_limit=10_000)
    events = drive(reader, b"A1 APPEND INBOX {5000+}\r\n", b"x" * 5000, b"\r\n")
    assert isinstance(events[0], AppendCommand)
    events = drive(reader, b"A2 APPEND INBOX {10001+}\r\n", b"y" * 10_001, b"\r\n" + NEXT)
    bad = only_bad(events)
    assert bad.code == "TOOBIG" and not bad.fatal
    assert events[-1] == NoopCommand(tag="Z9")


def test_nonsync_larger_than_skip_bound_is_fatal() -> None:
    reader = CommandReader(append_limit=10_000)
    events = drive(reader, b"A1 APPEND INBOX {20000000+}\r\n")
    assert len(events) == 1 and isinstance(events[0], BadCommand) and events[0].fatal


def test_literal_too_big_for_non_append_command() -> None:
    events = drive(CommandReader(), b"A1 LOGIN {%d}\r\n" % (limits.MAX_COMMAND_SIZE + 1) + NEXT)
    bad = only_bad(events)
    assert (bad.code, bad.status) == ("TOOBIG", "BAD")
    assert events[-1] == NoopCommand(tag="Z9")


def test_multiappend_total_bound() -> None:
    reader = CommandReader(append_limit=100)
    one = b" {100}\r\n" + b"m" * 100
    head = b"A1 APPEND INBOX"
    events = drive(reader, head + one * limits.MULTIAPPEND_TOTAL_FACTOR + b" {1}\r\n" + NEXT)
    bad = only_bad(events)
    assert bad.code == "TOOBIG"
    assert events[-1] == NoopCommand(tag="Z9")


def test_line_too_long_reported_before_crlf_and_resynced() -> None:
    reader = CommandReader()
    events = drive(reader, b"A1 FETCH 1:2 " + b"x" * (limits.MAX_LINE_LENGTH + 10))
    bad = only_bad(events)
    assert bad.tag == "A1" and "too long" in bad.reason
    # memory stays bounded while the rest of the line streams in
    for _ in range(50):
        assert drive(reader, b"y" * 100_000) == []
        assert reader.buffered < 1000
    assert drive(reader, b"yyy\r\n" + NEXT) == [NoopCommand(tag="Z9")]


def test_line_at_limit_is_accepted() -> None:
    line = b"A1 LOGIN a " + b"b" * (limits.MAX_LINE_LENGTH - 11)
    assert len(line) == limits.MAX_LINE_LENGTH
    events = drive(CommandReader(), line + b"\r\n")
    assert isinstance(events[0], LoginCommand)
    events = drive(CommandReader(), line + b"b\r\n" + NEXT)
    assert isinstance(events[0], BadCommand) and events[-1] == NoopCommand(tag="Z9")


def test_discarded_long_line_ending_in_nonsync_literal_skips_it() -> None:
    long_line = b"A1 LOGIN " + b"x" * (limits.MAX_LINE_LENGTH + 5) + b" {9+}\r\n"
    events = drive(CommandReader(), long_line, b"Z1 LOGOUT", b"\r\n" + NEXT)
    assert [type(e) for e in events] == [BadCommand, NoopCommand]


def test_command_size_bound_across_literals() -> None:
    piece = b"{4000+}\r\n" + b"q" * 4000 + b" "
    data = b"A1 ID (" + piece * 17 + b")\r\n" + NEXT
    events = drive(CommandReader(), data)
    bad = only_bad(events)
    assert bad.tag == "A1"
    assert events[-1] == NoopCommand(tag="Z9")


def test_tag_too_long() -> None:
    events = drive(CommandReader(), b"T" * (limits.MAX_TAG_LENGTH + 1) + b" NOOP\r\n" + NEXT)
    bad = only_bad(events)
    assert bad.tag is None
    ok = drive(CommandReader(), b"T" * limits.MAX_TAG_LENGTH + b" NOOP\r\n")
    assert ok == [NoopCommand(tag="T" * limits.MAX_TAG_LENGTH)]


def test_4000_nested_parentheses() -> None:
    # CVE-2026-27857
    deep = b"A1 SEARCH " + b"(" * 4000 + b"ALL" + b")" * 4000 + b"\r\n"
    events = drive(CommandReader(), deep + NEXT)
    assert "nesting" in only_bad(events).reason
    ok = b"(" * limits.MAX_NESTING_DEPTH + b"ALL" + b")" * limits.MAX_NESTING_DEPTH
    assert drive(CommandReader(), b"A2 SEARCH " + ok + b"\r\n")[0].__class__.__name__ == (
        "SearchCommand"
    )


def test_deep_not_and_or_chains() -> None:
    nots = b"A1 SEARCH " + b"NOT " * 5000 + b"ALL\r\n"
    ors = b"A2 SEARCH " + b"OR ALL " * 5000 + b"ALL\r\n"
    events = drive(CommandReader(), nots + ors + NEXT)
    assert [type(e) for e in events] == [BadCommand, BadCommand, NoopCommand]


def test_too_many_search_keys() -> None:
    many = b"A1 SEARCH " + b" ".join([b"SEEN"] * (limits.MAX_SEARCH_KEYS + 1)) + b"\r\n"
    assert "search keys" in only_bad(drive(CommandReader(), many)).reason
    fine = b"A1 SEARCH " + b" ".join([b"SEEN"] * limits.MAX_SEARCH_KEYS) + b"\r\n"
    assert not isinstance(drive(CommandReader(), fine)[0], BadCommand)


def test_too_many_sequence_ranges() -> None:
    seq = b",".join(b"%d" % (i * 2 + 1) for i in range(limits.MAX_SEQUENCE_RANGES + 1))
    events = drive(CommandReader(), b"A1 FETCH " + seq + b" FLAGS\r\n")
    assert "ranges" in only_bad(events).reason


def test_too_many_fetch_items() -> None:
    attrs = b" ".join([b"FLAGS"] * (limits.MAX_LIST_ITEMS + 1))
    events = drive(CommandReader(), b"A1 FETCH 1 (" + attrs + b")\r\n")
    assert "too many" in only_bad(events).reason


def test_numbers_beyond_32_bits() -> None:
    for line in (
        b"A1 FETCH 4294967296 FLAGS\r\n",
        b"A1 SELECT INBOX (QRESYNC (4294967296 1))\r\n",
        b"A1 FETCH 1 BODY[]<0.4294967296>\r\n",
        b"A1 SEARCH MODSEQ 9223372036854775808\r\n",
    ):
        bad = only_bad(drive(CommandReader(), line))
        assert "range" in bad.reason, line


def test_nul_in_quoted_string() -> None:
    # CVE-2019-11500
    bad = only_bad(drive(CommandReader(), b'A1 LOGIN "jo\x00e" x\r\n' + NEXT))
    assert bad.reason == "NUL in quoted string"


def test_nul_in_plain_literal() -> None:
    events = drive(CommandReader(), b"A1 LOGIN {3}\r\nj\x00e x\r\n" + NEXT)
    assert "NUL" in only_bad(events).reason
    assert events[-1] == NoopCommand(tag="Z9")


def test_id_limits() -> None:
    pairs = b" ".join(b'"k%d" "v"' % i for i in range(limits.MAX_ID_PAIRS + 1))
    assert "ID" in only_bad(drive(CommandReader(), b"A1 ID (" + pairs + b")\r\n")).reason
    long_value = b'A1 ID ("name" "' + b"v" * (limits.MAX_ID_VALUE + 1) + b'")\r\n'
    assert "ID" in only_bad(drive(CommandReader(), long_value)).reason


# --- end to end: raw sockets against the real server, with an RSS budget ---------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class _Raw:
    def __init__(self, server: Server, instance: Instance) -> None:
        ctx = instance.client_context(check_hostname=False)
        self.sock = ctx.wrap_socket(socket.create_connection(server.address("imaps"), timeout=15))
        self.file = self.sock.makefile("rb")
        assert self.file.readline().startswith(b"* OK")

    def line(self) -> bytes:
        return self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_oversized_literal_and_line_end_to_end(server: Server, instance: Instance) -> None:
    pid = server.process.pid
    raw = _Raw(server, instance)
    raw.send(f"L LOGIN {instance.user} {instance.password}\r\n".encode())
    assert raw.line().startswith(b"L OK")
    before = _rss_kib(pid)
    # A 4 GiB APPEND is refused before any "+" (RFC 7889 4), and the next command works.
    raw.send(b"A1 APPEND INBOX {4294967296}\r\n")
    reply = raw.line()
    assert reply.startswith(b"A1 NO [TOOBIG]"), reply
    raw.send(b"A2 NOOP\r\n")
    assert raw.line().startswith(b"A2 OK")
    # Over APPENDLIMIT (imap.append_limit_mb, 25 MiB by default) but a valid number: also
    # refused without "+".
    raw.send(b"A3 APPEND INBOX {26214401}\r\n")
    assert raw.line().startswith(b"A3 NO [TOOBIG]")
    # A numeric overflow in the marker.
    raw.send(b"A4 APPEND INBOX {99999999999999999999}\r\nA5 NOOP\r\n")
    assert raw.line().startswith(b"A4 NO [TOOBIG]")
    assert raw.line().startswith(b"A5 OK")
    # A non-synchronizing literal over LITERAL-'s 4096 is refused and skipped, not run.
    junk = b"x" * 5000
    raw.send(b"A6 LOGIN {5000+}\r\n" + junk + b"\r\nA7 NOOP\r\n")
    assert raw.line().startswith(b"A6 BAD [TOOBIG]")
    assert raw.line().startswith(b"A7 OK")
    # A 1 MiB line without CRLF: BAD before the end arrives, then resynchronised.
    raw.send(b"B1 NOOP " + b"y" * (1024 * 1024) + b"\r\nB2 NOOP\r\n")
    assert raw.line().startswith(b"B1 BAD")
    assert raw.line().startswith(b"B2 OK")
    # 4000 nested parentheses (CVE-2026-27857).
    raw.send(b"C1 SEARCH " + b"(" * 4000 + b"ALL" + b")" * 4000 + b"\r\nC2 NOOP\r\n")
    assert raw.line().startswith(b"C1 BAD")
    assert raw.line().startswith(b"C2 OK")
    after = _rss_kib(pid)
    raw.close()
    assert after - before < 20 * 1024, (before, after)  # nothing buffered the junk


def test_deflate_bomb_is_bounded(server: Server, instance: Instance) -> None:
    """COMPRESS=DEFLATE inflation is bounded (checklist 38, 42): 200 MiB of one line,
    compressed to ~200 KiB, costs a BAD and no memory."""
    pid = server.process.pid
    raw = _Raw(server, instance)
    raw.send(f"L LOGIN {instance.user} {instance.password}\r\n".encode())
    assert raw.line().startswith(b"L OK")
    raw.send(b"Z COMPRESS DEFLATE\r\n")
    assert raw.line().startswith(b"Z OK")
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    before = _rss_kib(pid)
    chunk = b"a" * (1024 * 1024)
    raw.send(deflate.compress(b"B1 NOOP "))
    for _ in range(200):
        raw.send(deflate.compress(chunk))
    raw.send(deflate.compress(b"\r\nB2 NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    out = b""
    while out.count(b"\r\n") < 2:
        data = raw.sock.recv(65536)
        assert data
        out += inflate.decompress(data)
    first, second = out.split(b"\r\n")[:2]
    assert first.startswith(b"B1 BAD") and second.startswith(b"B2 OK")
    assert _rss_kib(pid) - before < 20 * 1024
    raw.close()
