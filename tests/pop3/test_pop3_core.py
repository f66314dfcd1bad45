"""The sans-IO POP3 core: framing, limits, the state table, STLS buffer discard."""

from __future__ import annotations

import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.pop3 import core


def commands(core_: core.Pop3Core) -> list[object]:
    out = []
    while not isinstance(event := core_.next_command(), core.NeedData):
        out.append(event)
    return out


SCRIPT = b"CAPA\r\nUSER demo@example.test\r\nPASS pass word with spaces\r\n"


def test_fed_whole_byte_by_byte_and_split_everywhere_gives_the_same_commands() -> None:
    whole = core.Pop3Core()
    whole.receive_data(SCRIPT)
    expected = commands(whole)
    assert expected == [
        core.Capa(),
        core.User("demo@example.test"),
        core.Pass("pass word with spaces"),
    ]
    one = core.Pop3Core()
    got: list[object] = []
    for i in range(len(SCRIPT)):
        one.receive_data(SCRIPT[i : i + 1])
        got += commands(one)
    assert got == expected
    for cut in range(len(SCRIPT) + 1):
        split = core.Pop3Core()
        split.receive_data(SCRIPT[:cut])
        parts = commands(split)
        split.receive_data(SCRIPT[cut:])
        assert parts + commands(split) == expected


def test_transaction_commands_parse_after_login() -> None:
    c = core.Pop3Core()
    c.authenticated()
    c.receive_data(
        b"STAT\r\nLIST\r\nLIST 2\r\nRETR 1\r\nDELE 3\r\nTOP 1 10\r\nUIDL\r\nUIDL 4\r\nNOOP\r\nRSET\r\nQUIT\r\n"
    )
    assert commands(c) == [
        core.Stat(), core.ListCmd(None), core.ListCmd(2), core.Retr(1), core.Dele(3), core.Top(1, 10),
        core.Uidl(None), core.Uidl(4), core.Noop(), core.Rset(), core.Quit(),
    ]  # fmt: skip


def test_bare_lf_line_ends_are_accepted_lowercase_verbs_too() -> None:
    c = core.Pop3Core()
    c.receive_data(b"capa\nquit\n")
    assert commands(c) == [core.Capa(), core.Quit()]


@pytest.mark.parametrize(
    ("state", "line", "reason"),
    [
        ("auth", b"STAT", "not allowed now"),
        ("auth", b"RETR 1", "not allowed now"),
        ("auth", b"PASS x", "PASS must follow USER"),
        ("txn", b"USER x", "not allowed now"),
        ("txn", b"STLS", "not allowed now"),
        ("txn", b"RETR", "usage: RETR msg"),
        ("txn", b"RETR 0", "start at 1"),
        ("txn", b"RETR -1", "must be a number"),
        ("txn", b"RETR 99999999999", "must be a number"),
        ("txn", b"RETR 4294967296", "too large"),
        ("txn", b"TOP 1", "usage: TOP msg n"),
        ("txn", b"LIST 1 2", "usage: LIST [msg]"),
        ("txn", b"XYZZY", "unknown command"),
        ("txn", b"", "empty command"),
        ("txn", b"NOOP\x00", "NUL"),
        ("txn", b"LIST \xff", "not UTF-8"),
        ("txn", b"RETR " + b"1" * 41, "argument too long"),
    ],
)
def test_bad_commands_get_a_reason(state: str, line: bytes, reason: str) -> None:
    c = core.Pop3Core()
    if state == "txn":
        c.authenticated()
    c.receive_data(line + b"\r\n")
    (event,) = commands(c)
    assert isinstance(event, core.BadCommand)
    assert reason in event.reason


def test_command_line_limit_is_255_octets_and_the_session_resynchronises() -> None:
    c = core.Pop3Core()
    c.authenticated()
    longest = b"NOOP" + b" " * (core.MAX_COMMAND_LINE - 6)  # + CRLF = 255
    c.receive_data(longest + b"\r\n")
    assert commands(c) == [core.Noop()]
    c.receive_data(longest + b" \r\nNOOP\r\n")
    events = commands(c)
    assert isinstance(events[0], core.BadCommand) and "too long" in events[0].reason
    assert events[1] == core.Noop()


def test_an_endless_line_is_dropped_without_growing_the_buffer() -> None:
    c = core.Pop3Core()
    for _ in range(100):
        c.receive_data(b"A" * 1000)
        assert commands(c) == []
        assert len(c._buffer) <= core.MAX_SASL_LINE + 1000
    c.receive_data(b"\r\nCAPA\r\n")
    events = commands(c)
    assert isinstance(events[0], core.BadCommand) and events[1] == core.Capa()


def test_auth_lines_may_exceed_255_but_not_the_sasl_limit() -> None:
    c = core.Pop3Core()
    c.receive_data(b"AUTH PLAIN " + b"A" * 600 + b"\r\n")
    assert commands(c) == [core.Auth("PLAIN", "A" * 600)]
    c.begin_sasl()
    c.receive_data(b"B" * 1000 + b"\r\n")
    assert commands(c) == [core.SaslResponse("B" * 1000)]
    c.receive_data(b"B" * core.MAX_SASL_LINE + b"\r\n")
    (event,) = commands(c)
    assert isinstance(event, core.BadCommand)


def test_too_many_bad_commands_is_fatal() -> None:
    c = core.Pop3Core()
    c.receive_data(b"BOGUS\r\n" * core.MAX_BAD_COMMANDS)
    events = commands(c)
    assert all(isinstance(e, core.BadCommand) for e in events)
    assert [e.fatal for e in events if isinstance(e, core.BadCommand)] == [False] * (
        core.MAX_BAD_COMMANDS - 1
    ) + [True]


def test_stls_discards_buffered_plaintext() -> None:
    # RFC 2595 4 / CVE-2021-38084: commands pipelined after STLS must not run inside TLS.
    c = core.Pop3Core()
    c.receive_data(b"STLS\r\nUSER evil\r\nPASS x\r\n")
    assert commands(c)[:1] == [core.Stls()]
    c = core.Pop3Core()
    c.receive_data(b"STLS\r\nUSER evil\r\nPASS x\r\n")
    assert c.next_command() == core.Stls()
    c.starttls()
    assert commands(c) == []
    c.receive_data(b"CAPA\r\n")
    assert commands(c) == [core.Capa()]


def test_replies_and_dot_stuffing() -> None:
    assert core.ok("3 messages") == b"+OK 3 messages\r\n"
    assert core.err("no such message", core.RespCode.IN_USE) == b"-ERR [IN-USE] no such message\r\n"
    assert core.err("a\r\nb") == b"-ERR a  b\r\n"
    lines = core.message_lines(b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend\r\n")
    assert (
        core.multiline(b"+OK\r\n", lines)
        == b"+OK\r\nSubject: x\r\n\r\n..hidden\r\n...two\r\nend\r\n.\r\n"
    )


def test_message_lines_turn_bare_lf_and_cr_into_crlf() -> None:
    assert core.message_lines(b"a\nb\rc\r\nd") == [b"a", b"b", b"c", b"d"]
    assert core.message_lines(b"") == []


def test_top_sends_the_header_and_n_body_lines() -> None:
    message = b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n"
    assert core.message_lines(message, body_lines=0) == [b"A: 1", b"B: 2", b""]
    assert core.message_lines(message, body_lines=2) == [b"A: 1", b"B: 2", b"", b"l1", b"l2"]
    assert core.message_lines(message, body_lines=99) == [
        b"A: 1",
        b"B: 2",
        b"",
        b"l1",
        b"l2",
        b"l3",
    ]
    assert core.message_lines(b"A: 1\r\n", body_lines=5) == [b"A: 1"]


def test_capa_lists_only_what_works_now() -> None:
    before = core.capabilities(tls_active=False, tls_available=True, plaintext_ok=False)
    assert b"STLS" in before and b"USER" not in before and b"SASL PLAIN" not in before
    after = core.capabilities(tls_active=True, tls_available=True, plaintext_ok=True)
    assert b"STLS" not in after and b"USER" in after and b"SASL PLAIN" in after


@given(st.lists(st.binary(max_size=300), max_size=20), st.booleans())
def test_no_input_crashes_the_core(chunks: list[bytes], logged_in: bool) -> None:
    c = core.Pop3Core()
    if logged_in:
        c.authenticated()
    for chunk in chunks:
        c.receive_data(chunk)
        for event in commands(c):
            assert isinstance(event, (core.BadCommand, *typing.get_args(core.Command)))


@pytest.mark.parametrize(
    "message",
    [
        b"Subject: x\r\n\r\n.dot\r\n..two\r\nend\r\n",
        b".starts with a dot\r\nbody\r\n",
        b"Subject: x\r\n\r\nno final line end",
        b"Subject: x\n\nbare\nlf\n",
        b"Subject: x\r\n\r\nbare\rcr\r\n",
        b"",
    ],
)
def test_retr_fast_path_matches_the_line_by_line_form(message: bytes) -> None:
    slow = core.multiline(b"+OK\r\n", core.message_lines(message))
    assert core.retr_payload(b"+OK\r\n", message) == slow


@given(st.binary(max_size=400), st.one_of(st.none(), st.integers(min_value=0, max_value=5)))
def test_retr_payload_always_equals_the_line_by_line_form(
    message: bytes, body_lines: int | None
) -> None:
    slow = core.multiline(b"+OK\r\n", core.message_lines(message, body_lines=body_lines))
    assert core.retr_payload(b"+OK\r\n", message, body_lines=body_lines) == slow
