"""The sans-IO core: sequencing, events, replies, framing and limits, without sockets."""

from __future__ import annotations

import base64

import pytest
from smtp_helpers import EXTENSIONS, TLS_EXTENSIONS, CoreDriver, Refused, normalized

from protocols.smtp.address import Address
from protocols.smtp.core import (
    MAX_AUTH_LINE,
    MAX_CHUNK_SIZE_DIGITS,
    MAX_COMMAND_LINE,
    MAX_EXTENDED_COMMAND_LINE,
    MAX_TEXT_LINE,
    NEED_DATA,
    RFC_MIN_RECIPIENTS,
    Auth,
    AuthResponse,
    Bdat,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Helo,
    Mail,
    MessageData,
    Noop,
    ProtocolLimits,
    Quit,
    Rcpt,
    ServerConnection,
    State,
)
from protocols.smtp.esmtp import BodyType, DsnNotify, DsnReturn, Extensions
from protocols.smtp.replies import Reply, SmtpUsageError

TRANSACTION = b"EHLO client.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<b@example.org>\r\n"


def refused_codes(log: list[object]) -> list[tuple[int, str | None]]:
    return [(item.reply.code, item.reply.enhanced) for item in log if isinstance(item, Refused)]


def driver(**limits: int) -> CoreDriver:
    return CoreDriver(ServerConnection(extensions=EXTENSIONS, limits=ProtocolLimits(**limits)))


# ------------------------------------------------------------------ a whole session


def test_a_plain_session_yields_one_event_per_command() -> None:
    d = CoreDriver()
    log = d.feed(TRANSACTION + b"DATA\r\n")
    assert [type(e) for e in log] == [Ehlo, Mail, Rcpt, Data]
    mail = log[1]
    assert isinstance(mail, Mail)
    assert mail.sender == Address("a", "example.net")
    log = d.feed(b"Hello\r\n..leading dot\r\n.\r\nQUIT\r\n")
    assert normalized(log) == [b"Hello\r\n.leading dot\r\n", EndOfMessage(size=21), Quit()]
    assert d.conn.state is State.CLOSED
    assert d.replies() == [250, 250, 250, 354, 250, 221]


def test_greeting_must_come_first_and_be_220_554_or_421() -> None:
    conn = ServerConnection(extensions=EXTENSIONS)
    with pytest.raises(SmtpUsageError):
        conn.next_event()
    with pytest.raises(SmtpUsageError):
        conn.send(Reply(250, "2.0.0", "not a greeting"))


def test_554_greeting_allows_only_quit() -> None:
    conn = ServerConnection(extensions=EXTENSIONS)
    conn.send(Reply(554, "5.7.1", "go away"))
    d = CoreDriver(conn)
    d.out.clear()
    log = d.feed(b"EHLO x\r\nMAIL FROM:<>\r\nQUIT\r\n")
    assert refused_codes(log) == [(503, "5.5.1"), (503, "5.5.1")]
    assert isinstance(log[-1], Quit)
    assert conn.state is State.CLOSED


def test_421_greeting_closes() -> None:
    conn = ServerConnection(extensions=EXTENSIONS)
    conn.send(Reply(421, "4.3.2", "shutting down"))
    assert conn.state is State.CLOSED
    assert isinstance(conn.next_event(), ConnectionClosed)


# ------------------------------------------------------------------ sequencing


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (b"MAIL FROM:<a@b.example>\r\n", (503, "5.5.1")),  # before EHLO
        (b"EHLO x\r\nRCPT TO:<a@b.example>\r\n", (503, "5.5.1")),  # RCPT before MAIL
        (b"EHLO x\r\nDATA\r\n", (503, "5.5.1")),  # DATA before MAIL
        (b"EHLO x\r\nMAIL FROM:<>\r\nDATA\r\n", (554, "5.5.1")),  # no valid recipients
        (b"EHLO x\r\nMAIL FROM:<>\r\nMAIL FROM:<>\r\n", (503, "5.5.1")),  # nested MAIL
        (b"EHLO x\r\nMAIL FROM:<>\r\nBDAT 0 LAST\r\n", (554, "5.5.1")),
        (b"EHLO x\r\nBDAT 3\r\nabc", (503, "5.5.1")),
        (b"EHLO x\r\nMAIL FROM:<>\r\nSTARTTLS\r\n", (503, "5.5.1")),
    ],
)
def test_out_of_sequence_commands(script: bytes, expected: tuple[int, str]) -> None:
    d = CoreDriver()
    assert refused_codes(d.feed(script)) == [expected]


def test_refused_commands_do_not_move_the_state() -> None:
    d = CoreDriver()
    d.answers[Mail] = Reply(550, "5.7.1", "sender refused")
    d.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    assert d.conn.state is State.READY
    assert d.replies() == [250, 550, 503]


def test_data_with_all_recipients_refused_is_554() -> None:
    d = CoreDriver()
    d.answers[Rcpt] = Reply(550, "5.1.1", "no such user")
    log = d.feed(TRANSACTION + b"DATA\r\n")
    assert refused_codes(log) == [(554, "5.5.1")]


def test_rset_and_ehlo_end_a_transaction() -> None:
    for reset in (b"RSET\r\n", b"EHLO again\r\n"):
        d = CoreDriver()
        d.feed(TRANSACTION + reset)
        assert d.conn.state is State.READY
        assert d.conn.mail is None
        assert refused_codes(d.feed(b"DATA\r\n")) == [(503, "5.5.1")]


def test_rset_before_ehlo_stays_unintroduced() -> None:
    d = CoreDriver()
    d.feed(b"RSET\r\n")
    assert d.conn.state is State.CONNECTED


def test_helo_session_has_no_extensions() -> None:
    d = CoreDriver()
    log = d.feed(b"HELO x\r\nMAIL FROM:<a@b.example> SIZE=10\r\nMAIL FROM:<a@b.example>\r\n")
    assert isinstance(log[0], Helo)
    assert refused_codes(log) == [(555, "5.5.4")]
    assert isinstance(log[-1], Mail)
    assert not d.conn.esmtp
    assert refused_codes(d.feed(b"RCPT TO:<c@d.example>\r\nBDAT 2\r\nxy")) == [(503, "5.5.1")]


def test_positive_reply_that_the_table_forbids_is_a_usage_error() -> None:
    d = CoreDriver()
    d.answers[Data] = Reply(250, "2.0.0", "wrong")
    with pytest.raises(SmtpUsageError):
        d.feed(TRANSACTION + b"DATA\r\n")


def test_one_command_in_flight() -> None:
    conn = ServerConnection(extensions=EXTENSIONS)
    conn.send(Reply(220, None, "hi"))
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), Noop)
    assert conn.awaiting_reply
    with pytest.raises(SmtpUsageError):
        conn.next_event()
    conn.send(Reply(250, "2.0.0", "OK"))
    assert isinstance(conn.next_event(), Noop)


def test_pipelined_replies_come_out_in_order() -> None:
    d = CoreDriver()
    d.answers[Rcpt] = Reply(550, "5.1.1", "unknown")
    d.feed(
        b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nNOOP\r\n"
        b"RCPT TO:<e@f.example>\r\nRSET\r\n"
    )
    assert d.replies() == [250, 250, 550, 250, 550, 250]


def test_unknown_and_unimplemented_commands() -> None:
    d = CoreDriver()
    log = d.feed(b"FOO bar\r\nETRN example.org\r\n\r\n123\r\n")
    assert refused_codes(log) == [(500, "5.5.2"), (502, "5.5.1"), (500, "5.5.2"), (500, "5.5.2")]


def test_http_request_closes_the_connection() -> None:
    d = CoreDriver()
    log = d.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert refused_codes(log) == [(421, "4.7.0")]
    assert d.conn.state is State.CLOSED


@pytest.mark.parametrize(
    "script",
    [
        TRANSACTION + b"RSET x",
        TRANSACTION + b"QUIT now",
        TRANSACTION + b"DATA x",
        b"EHLO x\r\nSTARTTLS x",
        b"EHLO",
        b"HELO",
        b"VRFY",
        b"EXPN",
    ],
)
def test_argument_syntax(script: bytes) -> None:
    d = CoreDriver()
    assert refused_codes(d.feed(script + b"\r\n")) == [(501, "5.5.4")]


def test_sequence_is_checked_before_syntax() -> None:
    d = CoreDriver()
    log = d.feed(b"EHLO x\r\nRCPT TO:<bad\r\nSTARTTLS x\r\n")
    assert refused_codes(log) == [(503, "5.5.1"), (501, "5.5.4")]
    assert refused_codes(d.feed(b"DATA x\r\n")) == [(503, "5.5.1")]


def test_commands_are_case_insensitive_and_trailing_spaces_tolerated() -> None:
    d = CoreDriver()
    log = d.feed(b"ehlo x\r\nmail from:<a@b.example>\r\nrcpt To:<c@d.example>  \r\nrset \r\n")
    assert not refused_codes(log)


def test_a_space_after_the_colon_is_tolerated() -> None:
    d = CoreDriver()
    log = d.feed(b"EHLO x\r\nMAIL FROM: <a@b.example>\r\nRCPT TO: <c@d.example>\r\n")
    assert not refused_codes(log)


def test_addresses_need_angle_brackets() -> None:
    d = CoreDriver()
    log = d.feed(b"EHLO x\r\nMAIL FROM:a@b.example\r\nMAIL FROM:<a@b.example\r\n")
    assert refused_codes(log) == [(501, "5.1.7"), (501, "5.1.7")]


def test_vrfy_expn_help_noop_events() -> None:
    d = CoreDriver()
    log = d.feed(b"VRFY bob\r\nEXPN staff\r\nHELP\r\nNOOP hello\r\nVRFY\r\n")
    assert [type(e).__name__ for e in log] == ["Vrfy", "Expn", "Help", "Noop", "Refused"]


# ------------------------------------------------------------------ framing


@pytest.mark.parametrize(
    "line",
    [b"NOOP\n", b"NOOP\rx\r\n", b"NO\x00OP\r\n", b"MAIL FROM:<a\x00b@c.example>\r\n"],
)
def test_cr_lf_nul_are_illegal_in_commands(line: bytes) -> None:
    d = CoreDriver()
    log = d.feed(b"EHLO x\r\n" + line)
    assert refused_codes(log) == [(500, "5.5.2")]


def test_invalid_utf8_command() -> None:
    d = CoreDriver()
    assert refused_codes(d.feed(b"NOOP \xff\xfe\r\n")) == [(500, "5.5.2")]


def test_eof_in_the_middle_of_a_command_closes() -> None:
    d = CoreDriver()
    log = d.feed(b"EHLO x\r\nMAIL FR")
    assert [type(e) for e in log] == [Ehlo]
    log = d.feed(b"")
    assert log == [ConnectionClosed()]
    assert d.conn.state is State.CLOSED
    d.conn.receive_data(b"ignored after close")


def test_eof_during_data_closes_without_a_message() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION + b"DATA\r\n")
    log = d.feed(b"partial body\r\n")
    log += d.feed(b"")
    assert not any(isinstance(e, EndOfMessage) for e in log)
    assert isinstance(log[-1], ConnectionClosed)


def test_receive_after_eof_is_a_usage_error() -> None:
    conn = ServerConnection(extensions=EXTENSIONS)
    conn.receive_data(b"")
    with pytest.raises(SmtpUsageError):
        conn.receive_data(b"x")


# ------------------------------------------------------------------ DATA


def test_dot_unstuffing_and_end_of_data_at_the_very_start() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION + b"DATA\r\n")
    log = d.feed(b".\r\n")
    assert log == [EndOfMessage(size=0)]
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n")
    log = d.feed(b"..\r\n...x\r\n.\r\n")
    assert normalized(log) == [b".\r\n..x\r\n", EndOfMessage(size=8)]


def test_data_pipelined_before_354_closes_the_connection() -> None:
    d = CoreDriver()
    log = d.feed(TRANSACTION + b"DATA\r\nSubject: early\r\n\r\nbody\r\n.\r\n")
    assert refused_codes(log) == [(421, "4.5.0")]
    assert not any(isinstance(e, Data | MessageData) for e in log)
    assert d.conn.state is State.CLOSED


def test_binarymime_needs_bdat() -> None:
    d = CoreDriver()
    log = d.feed(b"EHLO x\r\nMAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<a@b.example>\r\nDATA\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]


def test_message_ends_with_a_refusal_and_the_transaction_resets() -> None:
    d = CoreDriver()
    d.answers[EndOfMessage] = Reply(451, "4.3.0", "try later")
    d.feed(TRANSACTION + b"DATA\r\n")
    d.feed(b"x\r\n.\r\n")
    assert d.conn.state is State.READY
    assert d.conn.mail is None


def test_text_line_limit() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION + b"DATA\r\n")
    ok = b"a" * (MAX_TEXT_LINE - 2) + b"\r\n" + b"." + b"b" * (MAX_TEXT_LINE - 2) + b"\r\n"
    log = d.feed(ok + b".\r\n")
    assert isinstance(log[-1], EndOfMessage)
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n")
    log = d.feed(b"a" * (MAX_TEXT_LINE - 1) + b"\r\n.\r\nNOOP\r\n")
    assert refused_codes(log) == [(500, "5.5.2")]
    assert isinstance(log[-1], Noop)


def test_over_long_partial_line_is_dropped_with_bounded_buffer() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION + b"DATA\r\n")
    for _ in range(50):
        d.feed(b"z" * 10_000)
        assert len(d.conn._buffer) <= MAX_TEXT_LINE
    log = d.feed(b"\r\n.\r\n")
    assert refused_codes(log) == [(500, "5.5.2")]
    assert d.conn.state is State.READY


def test_message_size_limit_in_data() -> None:
    d = driver(max_message_size=1000)
    d.feed(TRANSACTION + b"DATA\r\n")
    log = d.feed(b"x" * 500 + b"\r\n" + b"y" * 496 + b"\r\n.\r\n")
    assert isinstance(log[-1], EndOfMessage)
    assert log[-1].size == 1000
    d.feed(b"MAIL FROM:<>\r\nRCPT TO:<x@y.example>\r\nDATA\r\n")
    log = d.feed(b"x" * 500 + b"\r\n" + b"y" * 497 + b"\r\n.\r\n")
    assert refused_codes(log) == [(552, "5.3.4")]
    assert not any(isinstance(e, EndOfMessage) for e in log)


def test_size_parameter_over_the_limit_is_refused_at_mail() -> None:
    d = driver(max_message_size=1000)
    log = d.feed(b"EHLO x\r\nMAIL FROM:<> SIZE=1001\r\nMAIL FROM:<> SIZE=1000\r\n")
    assert refused_codes(log) == [(552, "5.3.4")]
    assert isinstance(log[-1], Mail)


def test_nul_in_data_is_refused() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION + b"DATA\r\n")
    assert refused_codes(d.feed(b"a\x00b\r\n.\r\n")) == [(550, "5.6.0")]


# ------------------------------------------------------------------ BDAT


def test_bdat_chunks_are_exact_octets_without_dot_processing() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION)
    log = d.feed(b"BDAT 5\r\n.\r\n\r\nBDAT 4 LAST\r\nab\n\x00")
    assert normalized(log) == [
        Bdat(size=5, last=False),
        b".\r\n\r\n",
        EndOfChunk(size=5),
        Bdat(size=4, last=True),
        b"ab\n\x00",
        EndOfMessage(size=9),
    ]
    assert d.conn.state is State.READY


def test_bdat_zero_last() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION)
    assert d.feed(b"BDAT 0 LAST\r\n") == [Bdat(size=0, last=True), EndOfMessage(size=0)]


def test_data_cannot_follow_bdat_nor_rcpt() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION + b"BDAT 1\r\nx")
    log = d.feed(b"DATA\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]
    log = d.feed(b"RCPT TO:<z@y.example>\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]


def test_refused_bdat_chunk_is_consumed_not_executed() -> None:
    d = CoreDriver()
    log = d.feed(b"EHLO x\r\nBDAT 15\r\nRSET\r\nQUIT\r\nX\r\nNOOP\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]
    assert [type(e) for e in log if not isinstance(e, Refused)] == [Ehlo, Noop]


def test_refused_chunk_reply_aborts_the_message_and_later_chunks_are_consumed() -> None:
    d = CoreDriver()
    d.answers[EndOfChunk] = Reply(452, "4.3.1", "disk full")
    log = d.feed(TRANSACTION + b"BDAT 3\r\nabcBDAT 4 LAST\r\nRSETNOOP\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]
    assert d.replies()[-3:] == [452, 503, 250]
    assert isinstance(log[-1], Noop)


def test_malformed_bdat_closes() -> None:
    for line in (
        b"BDAT\r\n",
        b"BDAT x\r\n",
        b"BDAT 1 FIRST\r\n",
        b"BDAT -1\r\n",
        b"BDAT 1 LAST x\r\n",
        b"BDAT " + b"9" * (MAX_CHUNK_SIZE_DIGITS + 1) + b"\r\n",
    ):
        d = CoreDriver()
        log = d.feed(TRANSACTION + line)
        assert refused_codes(log) == [(421, "4.5.4")]
        assert d.conn.state is State.CLOSED


def test_bdat_chunk_size_digit_limit_is_inclusive() -> None:
    d = CoreDriver()
    d.feed(TRANSACTION)
    log = d.feed(b"BDAT " + b"0" * (MAX_CHUNK_SIZE_DIGITS - 1) + b"1\r\nz")
    assert [type(e) for e in log] == [Bdat, MessageData, EndOfChunk]


def test_bdat_over_the_size_limit_is_consumed_then_refused() -> None:
    d = driver(max_message_size=10)
    d.feed(TRANSACTION)
    log = d.feed(b"BDAT 6\r\nabcdefBDAT 6 LAST\r\nghijkl")
    assert refused_codes(log) == [(552, "5.3.4")]
    assert not any(isinstance(e, EndOfMessage) for e in log)
    assert d.conn.state is State.READY
    assert isinstance(d.feed(b"NOOP\r\n")[0], Noop)


def test_bdat_not_offered() -> None:
    conn = ServerConnection(extensions=Extensions(chunking=False, binary_mime=False))
    d = CoreDriver(conn)
    log = d.feed(TRANSACTION + b"BDAT 4\r\nNOOPNOOP\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]
    assert isinstance(log[-1], Noop)


# ------------------------------------------------------------------ limits


def test_command_line_limit() -> None:
    d = CoreDriver()
    exact = b"NOOP " + b"x" * (MAX_COMMAND_LINE - 7) + b"\r\n"
    assert len(exact) == MAX_COMMAND_LINE
    over = b"NOOP " + b"x" * (MAX_COMMAND_LINE - 6) + b"\r\n"
    log = d.feed(exact + over + b"NOOP\r\n")
    assert refused_codes(log) == [(500, "5.5.2")]
    assert [type(e) for e in log if not isinstance(e, Refused)] == [Noop, Noop]


def test_extended_command_line_limit_for_mail() -> None:
    d = CoreDriver()
    d.feed(b"EHLO x\r\n")
    envid = "e" * 100
    orcpt = "o" * 490
    line = f"MAIL FROM:<a@b.example> SIZE=1 ENVID={envid} RET=HDRS BODY=8BITMIME"
    assert len(line) > MAX_COMMAND_LINE - 400
    log = d.feed(line.encode() + b"\r\n")
    assert isinstance(log[0], Mail)
    rcpt = f"RCPT TO:<c@d.example> ORCPT=rfc822;{orcpt} NOTIFY=DELAY"
    log = d.feed(rcpt.encode() + b" " * 0 + b"\r\n")
    assert isinstance(log[0], Rcpt)
    too_long = b"MAIL FROM:<> " + b"X" * MAX_EXTENDED_COMMAND_LINE + b"\r\nRSET\r\n"
    log = d.feed(too_long)
    assert refused_codes(log)[0] == (500, "5.5.2")
    assert len(d.conn._buffer) == 0


def test_extended_command_line_limit_is_exact() -> None:
    d = CoreDriver()
    d.feed(b"EHLO x\r\n")
    prefix = b"MAIL FROM:<> X-LONG="
    exact = prefix + b"v" * (MAX_EXTENDED_COMMAND_LINE - len(prefix) - 2) + b"\r\n"
    assert len(exact) == MAX_EXTENDED_COMMAND_LINE
    assert refused_codes(d.feed(exact)) == [(555, "5.5.4")]  # read whole, then parsed
    over = prefix + b"v" * (MAX_EXTENDED_COMMAND_LINE - len(prefix) - 1) + b"\r\n"
    assert refused_codes(d.feed(over)) == [(500, "5.5.2")]
    # Other commands keep the RFC 5321 limit of 512.
    assert refused_codes(d.feed(b"VRFY " + b"u" * 600 + b"\r\n")) == [(500, "5.5.2")]


def test_over_long_command_sent_in_pieces_keeps_the_buffer_bounded() -> None:
    d = CoreDriver()
    for _ in range(20):
        d.feed(b"y" * 1000)
        assert len(d.conn._buffer) <= MAX_EXTENDED_COMMAND_LINE
    log = d.feed(b"\r\nNOOP\r\n")
    assert [type(e) for e in d.log] == [Refused, Noop]
    assert isinstance(log[-1], Noop)


def test_recipient_limit() -> None:
    d = driver(max_recipients=RFC_MIN_RECIPIENTS)
    d.feed(b"EHLO x\r\nMAIL FROM:<>\r\n")
    rcpts = b"".join(b"RCPT TO:<u%d@d.example>\r\n" % i for i in range(RFC_MIN_RECIPIENTS + 1))
    log = d.feed(rcpts)
    assert sum(isinstance(e, Rcpt) for e in log) == RFC_MIN_RECIPIENTS
    assert refused_codes(log) == [(452, "4.5.3")]


def test_refused_recipients_do_not_count_toward_the_limit() -> None:
    d = driver(max_recipients=RFC_MIN_RECIPIENTS, hard_error_limit=1000)
    d.answers[Rcpt] = Reply(550, "5.1.1", "unknown")
    d.feed(b"EHLO x\r\nMAIL FROM:<>\r\n")
    rcpts = b"".join(b"RCPT TO:<u%d@d.example>\r\n" % i for i in range(RFC_MIN_RECIPIENTS + 5))
    log = d.feed(rcpts)
    assert sum(isinstance(e, Rcpt) for e in log) == RFC_MIN_RECIPIENTS + 5


def test_recipient_limit_below_the_rfc_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="minimum"):
        ProtocolLimits(max_recipients=RFC_MIN_RECIPIENTS - 1)


def test_hard_error_limit_closes_with_421() -> None:
    d = driver(hard_error_limit=5, soft_error_limit=2)
    log = d.feed(b"BOGUS\r\n" * 7)
    assert refused_codes(log) == [(500, "5.5.2")] * 5 + [(421, "4.7.0")]
    assert d.conn.state is State.CLOSED


def test_a_delivered_message_clears_the_error_count() -> None:
    d = driver(hard_error_limit=3, soft_error_limit=1)
    d.feed(b"BOGUS\r\nBOGUS\r\n")
    assert d.conn.error_count == 2
    d.feed(TRANSACTION + b"DATA\r\n")
    d.feed(b"x\r\n.\r\n")
    assert d.conn.error_count == 0


def test_junk_commands_past_the_limit_count_as_errors() -> None:
    d = driver(junk_command_limit=3, hard_error_limit=4, soft_error_limit=0)
    log = d.feed(b"NOOP\r\n" * 8)
    assert sum(isinstance(e, Noop) for e in log) == 7
    assert refused_codes(log) == [(421, "4.7.0")]


def test_policy_refusals_count_as_errors() -> None:
    d = CoreDriver()
    d.answers[Rcpt] = Reply(550, "5.1.1", "unknown")
    d.feed(TRANSACTION + b"RCPT TO:<x@y.example>\r\n")
    assert d.conn.error_count == 2


# ------------------------------------------------------------------ parameters


def test_mail_and_rcpt_parameters_reach_the_event() -> None:
    d = CoreDriver()
    log = d.feed(
        b"EHLO x\r\nMAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1\r\n"
        b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;c+40d.example\r\n"
    )
    mail, rcpt = log[1], log[2]
    assert isinstance(mail, Mail)
    assert isinstance(rcpt, Rcpt)
    assert mail.params.size == 100
    assert mail.params.body is BodyType.EIGHT_BIT_MIME
    assert mail.params.ret is DsnReturn.HEADERS
    assert mail.params.envid == "QQ+1"
    assert rcpt.params.notify == frozenset({DsnNotify.SUCCESS, DsnNotify.DELAY})
    assert rcpt.params.orcpt is not None
    assert rcpt.params.orcpt.address == "c@d.example"


def test_smtputf8_addresses_need_the_parameter() -> None:
    d = CoreDriver()
    log = d.feed(
        "EHLO x\r\nMAIL FROM:<jörg@bücher.example>\r\n"
        "MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<δοκιμή@παράδειγμα.example>\r\n".encode()
    )
    assert refused_codes(log) == [(553, "5.6.7")]
    assert isinstance(log[-1], Rcpt)
    assert log[-1].recipient.domain == "παράδειγμα.example"
    d = CoreDriver()
    log = d.feed("EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<δ@b.example>\r\n".encode())
    assert refused_codes(log) == [(553, "5.6.7")]


def test_smtputf8_not_offered_is_555() -> None:
    d = CoreDriver(ServerConnection(extensions=Extensions(smtputf8=False)))
    assert refused_codes(d.feed(b"EHLO x\r\nMAIL FROM:<> SMTPUTF8\r\n")) == [(555, "5.5.4")]


# ------------------------------------------------------------------ AUTH


def tls_driver() -> CoreDriver:
    return CoreDriver(ServerConnection(extensions=TLS_EXTENSIONS, tls_active=True))


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def test_auth_with_initial_response() -> None:
    d = tls_driver()
    d.answers[Auth] = Reply(235, "2.7.0", "ok")
    log = d.feed(b"EHLO x\r\nAUTH PLAIN " + b64(b"\x00alice\x00pw") + b"\r\n")
    assert log[-1] == Auth(mechanism="PLAIN", initial_response=b"\x00alice\x00pw")
    assert d.conn.authenticated
    log = d.feed(b"AUTH PLAIN =\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]  # RFC 4954 4: only once


def test_auth_continuation_lines() -> None:
    d = tls_driver()
    log = d.feed(b"EHLO x\r\nAUTH LOGIN\r\n" + b64(b"alice") + b"\r\n")
    assert log[1] == Auth(mechanism="LOGIN", initial_response=None)
    assert log[2] == AuthResponse(data=b"alice")
    assert d.conn.authenticated


def test_auth_empty_initial_response_and_empty_continuation() -> None:
    d = tls_driver()
    d.answers[AuthResponse] = Reply(334, None, "")
    log = d.feed(b"EHLO x\r\nAUTH PLAIN =\r\n\r\n")
    assert log[1] == Auth(mechanism="PLAIN", initial_response=b"")
    assert log[2] == AuthResponse(data=b"")
    assert d.conn.state is State.AUTH


def test_auth_cancel_and_bad_base64() -> None:
    d = tls_driver()
    log = d.feed(b"EHLO x\r\nAUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n!!notbase64\r\nNOOP\r\n")
    assert refused_codes(log) == [(501, "5.0.0"), (501, "5.5.2")]
    assert isinstance(log[-1], Noop)
    log = d.feed(b"AUTH PLAIN %%%\r\nAUTH PLAIN AGFsaWNl=x\r\n")
    assert refused_codes(log) == [(501, "5.5.2"), (501, "5.5.2")]


def test_auth_line_limit() -> None:
    d = tls_driver()
    d.answers[AuthResponse] = Reply(334, None, "")
    d.feed(b"EHLO x\r\nAUTH LOGIN\r\n")
    fits = b"A" * (MAX_AUTH_LINE - 4) + b"\r\n"  # base64 comes in groups of four
    assert isinstance(d.feed(fits)[0], AuthResponse)
    log = d.feed(b"A" * MAX_AUTH_LINE + b"\r\nNOOP\r\n")
    assert refused_codes(log) == [(500, "5.5.6")]
    assert isinstance(log[-1], Noop)


def test_auth_refusals() -> None:
    d = tls_driver()
    log = d.feed(b"AUTH PLAIN\r\nEHLO x\r\nAUTH CRAM-MD5\r\nAUTH\r\nAUTH PLAIN a b\r\n")
    assert refused_codes(log) == [(503, "5.5.1"), (504, "5.5.4"), (501, "5.5.4"), (501, "5.5.4")]
    log = d.feed(b"MAIL FROM:<>\r\nAUTH PLAIN\r\n")
    assert refused_codes(log) == [(503, "5.5.1")]  # not during a transaction


def test_auth_before_tls_is_538_when_starttls_is_offered() -> None:
    d = CoreDriver()  # plaintext, STARTTLS offered, no AUTH offered
    assert refused_codes(d.feed(b"EHLO x\r\nAUTH PLAIN =\r\n")) == [(538, "5.7.11")]
    d = CoreDriver(ServerConnection(extensions=Extensions()))
    assert refused_codes(d.feed(b"EHLO x\r\nAUTH PLAIN =\r\n")) == [(503, "5.5.1")]


def test_failed_auth_leaves_the_session_unauthenticated() -> None:
    d = tls_driver()
    d.answers[AuthResponse] = Reply(535, "5.7.8", "bad")
    d.feed(b"EHLO x\r\nAUTH PLAIN\r\n" + b64(b"\x00a\x00b") + b"\r\n")
    assert not d.conn.authenticated
    assert d.conn.state is State.READY


# ------------------------------------------------------------------ STARTTLS


def test_starttls_resets_the_session() -> None:
    d = CoreDriver()
    d.feed(b"EHLO x\r\nSTARTTLS\r\n")
    assert d.conn.state is State.TLS_STARTING
    with pytest.raises(SmtpUsageError):
        d.conn.receive_data(b"plaintext")
    d.conn.tls_established(TLS_EXTENSIONS)
    assert d.conn.state is State.CONNECTED
    assert d.conn.helo_name is None
    log = d.feed(b"MAIL FROM:<>\r\nEHLO y\r\nSTARTTLS\r\n")
    assert refused_codes(log) == [(503, "5.5.1"), (503, "5.5.1")]  # EHLO first; no 2nd TLS


def test_starttls_refused_by_the_caller_keeps_plaintext_going() -> None:
    d = CoreDriver()
    d.answers[Ehlo] = EXTENSIONS.ehlo_reply("mx")
    from protocols.smtp.core import StartTls

    d.answers[StartTls] = Reply(454, "4.7.0", "TLS not available")
    log = d.feed(b"EHLO x\r\nSTARTTLS\r\nNOOP\r\n")
    assert isinstance(log[-1], Noop)
    assert d.conn.discarded_plaintext == 0


def test_starttls_not_offered() -> None:
    d = CoreDriver(ServerConnection(extensions=Extensions()))
    assert refused_codes(d.feed(b"EHLO x\r\nSTARTTLS\r\n")) == [(502, "5.5.1")]


def test_tls_established_without_starttls_is_a_usage_error() -> None:
    d = CoreDriver()
    with pytest.raises(SmtpUsageError):
        d.conn.tls_established(TLS_EXTENSIONS)


# ------------------------------------------------------------------ replies


def test_reply_rendering() -> None:
    assert Reply(250, "2.1.0", "OK").render() == b"250 2.1.0 OK\r\n"
    assert Reply(250, None, ("a", "b", "c")).render() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(550, "5.1.1", ("x", "y")).render() == b"550-5.1.1 x\r\n550 5.1.1 y\r\n"
    assert Reply(334, None, "").render() == b"334 \r\n"
    assert Reply.challenge(b"Username:").render() == b"334 VXNlcm5hbWU6\r\n"
    long = Reply(550, "5.0.0", "z" * 1000).render()
    assert len(long) == 512
    assert long.endswith(b"\r\n")


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (250, "2.0.0", "a\r\nb"),
        (250, "2.0.0", "a\x00"),
        (199, None, "x"),
        (600, None, "x"),
        (250, "5.0.0", "mismatch"),
        (250, "2.0", "short"),
    ],
)
def test_bad_replies_are_refused(code: int, enhanced: str | None, text: str) -> None:
    with pytest.raises(ValueError):
        Reply(code, enhanced, text)


def test_ehlo_keywords() -> None:
    keywords = Extensions(size=1000, starttls=True, auth=("PLAIN", "LOGIN")).keywords()
    assert keywords == (
        "PIPELINING",
        "SIZE 1000",
        "STARTTLS",
        "AUTH PLAIN LOGIN",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
        "BINARYMIME",
    )
    assert Extensions(dsn=False, chunking=False, binary_mime=False).keywords() == (
        "PIPELINING",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SMTPUTF8",
    )
    with pytest.raises(ValueError, match="CHUNKING"):
        Extensions(chunking=False)


def test_need_data_when_nothing_is_buffered() -> None:
    d = CoreDriver()
    assert d.conn.next_event() is NEED_DATA
