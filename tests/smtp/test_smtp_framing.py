"""The core fed whole, byte by byte, split at every boundary, and fuzzed with Hypothesis."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smtp_helpers import EXTENSIONS, POSITIVE, TLS_EXTENSIONS, CoreDriver, Refused, normalized

from protocols.smtp.address import Address
from protocols.smtp.core import (
    MAX_AUTH_LINE,
    NEED_DATA,
    Data,
    Event,
    Mail,
    ProtocolLimits,
    Rcpt,
    ServerConnection,
    StartTls,
    State,
)
from protocols.smtp.esmtp import BodyType, DsnNotify, DsnReturn, MailParams, RcptParams
from protocols.smtp.replies import Reply, SmtpError

# Each script is a list of client turns: a turn is sent only after the server has
# answered everything before it (as after 354 or at the end of a pipelined group).
SCRIPTS: dict[str, list[bytes]] = {
    "plain": [
        b"EHLO client.example\r\n",
        b"MAIL FROM:<a@example.net> SIZE=40 BODY=8BITMIME\r\n"
        b"RCPT TO:<b@example.org> NOTIFY=FAILURE\r\nRCPT TO:<c@example.org>\r\nDATA\r\n",
        b"Subject: hi\r\n\r\n..stuffed\r\n.x\r\nend\r\n.\r\n",
        b"QUIT\r\n",
    ],
    "bdat": [
        b"EHLO c\r\nMAIL FROM:<> BODY=BINARYMIME\r\nRCPT TO:<b@example.org>\r\n"
        b"BDAT 7\r\n\r\n.\r\n\x00\nxBDAT 0\r\nBDAT 5 LAST\r\nab\rcdRSET\r\nQUIT\r\n",
    ],
    "errors": [
        b"NOOP\r\nRCPT TO:<x@y.example>\r\nBOGUS\r\nEHLO c\r\nMAIL FROM:<bad\r\n"
        b"MAIL FROM:<a@b.example> FOO=1\r\nVRFY x\r\n" + b"N" * 600 + b"\r\nNOOP\n"
        b"BDAT 4\r\nabcdHELP\r\n",
    ],
    "auth": [
        b"EHLO c\r\nAUTH LOGIN\r\n",
        base64.b64encode(b"alice") + b"\r\n*\r\nAUTH PLAIN\r\n!!\r\nAUTH PLAIN =\r\nNOOP\r\n",
    ],
    "smuggling": [
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
        b"body\n.\nMAIL FROM:<s@x.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\nsmuggled\r\n"
        b"\r\n.\r\nNOOP\r\n",
    ],
    "starttls": [b"EHLO c\r\nSTARTTLS\r\nRSET\r\n", b"EHLO again\r\nNOOP\r\n"],
}


def run_turns(turns: list[list[bytes]], auth: bool = False) -> CoreDriver:
    """Feed each turn in the given pieces; a turn starts after the previous is answered."""
    conn = ServerConnection(extensions=TLS_EXTENSIONS if auth else EXTENSIONS, tls_active=auth)
    d = CoreDriver(conn)
    for pieces in turns:
        if conn.state is State.TLS_STARTING:
            conn.tls_established(TLS_EXTENSIONS)
        for piece in pieces:
            # After 220 to STARTTLS, later bytes of the turn belong to the handshake.
            if conn.state in (State.CLOSED, State.TLS_STARTING):
                break
            d.feed(piece)
    return d


def outcome(d: CoreDriver) -> tuple[list[object], bytes, State]:
    return normalized(d.log), bytes(d.out), d.conn.state


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_whole_byte_by_byte_and_every_split_agree(name: str) -> None:
    script = SCRIPTS[name]
    auth = name == "auth"
    whole = outcome(run_turns([[turn] for turn in script], auth))
    bytewise = outcome(
        run_turns([[turn[i : i + 1] for i in range(len(turn))] for turn in script], auth)
    )
    assert bytewise == whole
    for index, turn in enumerate(script):
        for cut in range(1, len(turn)):
            turns = [[t] for t in script]
            turns[index] = [turn[:cut], turn[cut:]]
            assert outcome(run_turns(turns, auth)) == whole, (index, cut)


def test_the_scripts_do_what_they_say() -> None:
    smuggling = run_turns([[turn] for turn in SCRIPTS["smuggling"]])
    assert sum(isinstance(e, Mail) for e in smuggling.log) == 1
    starttls = run_turns([[turn] for turn in SCRIPTS["starttls"]])
    assert starttls.conn.discarded_plaintext == len(b"RSET\r\n")
    assert starttls.replies() == [250, 220, 250, 250]


# ------------------------------------------------------------------ fuzzing

_WORDS = [
    b"EHLO x",
    b"HELO x",
    b"MAIL FROM:<a@b.example>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<a@b.example> BODY=BINARYMIME",
    b"RCPT TO:<c@d.example>",
    b"RCPT TO:<postmaster>",
    b"DATA",
    b"BDAT 3",
    b"BDAT 0 LAST",
    b"BDAT 2 LAST",
    b"AUTH PLAIN",
    b"AUTH LOGIN YWxpY2U=",
    b"AUTH PLAIN AGEAYg==",
    b"*",
    b"STARTTLS",
    b"RSET",
    b"NOOP",
    b"VRFY u",
    b"QUIT",
    b".",
    b"..",
    b"",
    b"\x00",
    b"\xff\xfe",
]
_SEPARATORS = [b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b" ", b"\r\r\n"]

_line = st.tuples(
    st.one_of(st.sampled_from(_WORDS), st.sampled_from(_WORDS), st.binary(max_size=40)),
    st.sampled_from(_SEPARATORS),
).map(lambda parts: parts[0] + parts[1])
_body = st.lists(
    st.one_of(
        st.sampled_from([b"text", b".", b"..", b".\r", b"\n.", b"\x00", b"\r\n.\r\r\n"]),
        st.binary(max_size=30),
        st.integers(min_value=900, max_value=1100).map(lambda n: b"L" * n),
    ),
    max_size=8,
).map(lambda parts: b"\r\n".join(parts))
# Blocks that walk into the deeper states; each is fed as its own piece (a DATA body is
# only sent after 354), and may be cut once more anywhere.
_block = st.one_of(
    st.just(b"EHLO x\r\n"),
    st.just(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"),
    st.just(b"DATA\r\n"),
    _body.map(lambda body: body + b"\r\n.\r\n"),
    st.tuples(st.binary(max_size=50), st.booleans()).map(
        lambda c: b"BDAT %d%s\r\n%s" % (len(c[0]), b" LAST" if c[1] else b"", c[0])
    ),
    st.just(b"AUTH LOGIN\r\n"),
    st.lists(_line, min_size=1, max_size=5).map(b"".join),
)


def _answers(data: st.DataObject, event: Event) -> Reply:
    positive = POSITIVE[type(event)]
    negative = (
        Reply(550, "5.0.0", "no") if not isinstance(event, Data) else Reply(451, "4.0.0", "no")
    )
    if isinstance(event, StartTls):
        choices = [positive, Reply(454, "4.7.0", "no TLS")]
    elif type(event).__name__ in ("Auth", "AuthResponse"):
        choices = [positive, Reply(235, "2.7.0", "ok"), Reply(334, None, ""), negative]
    else:
        choices = [positive, negative]
    return data.draw(st.sampled_from(choices))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(st.tuples(_block, st.integers(min_value=0, max_value=60)), max_size=25),
    data=st.data(),
)
def test_no_input_crashes_the_core(blocks: list[tuple[bytes, int]], data: st.DataObject) -> None:
    limits = ProtocolLimits(max_message_size=5000, hard_error_limit=1000)
    conn = ServerConnection(extensions=EXTENSIONS, limits=limits)
    conn.send(Reply(220, None, "hi"))
    pieces: list[bytes] = []
    for block, cut in blocks:
        pieces += [block[:cut], block[cut:]] if 0 < cut < len(block) else [block]
    codes: list[int] = []
    for piece in [*pieces, b""]:
        if conn.state is State.CLOSED:
            break
        if conn.state is State.TLS_STARTING:
            conn.tls_established(TLS_EXTENSIONS)
        conn.receive_data(piece)
        while conn.state not in (State.CLOSED, State.TLS_STARTING):
            try:
                event = conn.next_event()
            except SmtpError as error:
                codes.append(error.reply.code)
                conn.send(error.reply)
                continue
            if event is NEED_DATA:
                break
            if event.expects_reply:
                conn.send(_answers(data, event))
        # Whatever was sent, what the core holds back stays bounded.
        assert len(conn._buffer) <= MAX_AUTH_LINE
    assert all(400 <= code <= 599 for code in codes)


# ------------------------------------------------------------------ round trips

_local = st.from_regex(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\.[a-z0-9_-]{1,8}){0,2}", fullmatch=True)
_domain = st.from_regex(r"([a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?\.){1,3}[a-z]{2,5}", fullmatch=True)
_address = st.builds(Address, _local, _domain)
_printable = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)
_mail_params = st.builds(
    MailParams,
    size=st.one_of(st.none(), st.integers(min_value=0, max_value=10_240_000)),
    body=st.one_of(st.none(), st.sampled_from(BodyType)),
    smtputf8=st.booleans(),
    ret=st.one_of(st.none(), st.sampled_from(DsnReturn)),
    envid=st.one_of(
        st.none(),
        st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20),
    ),
)
_rcpt_params = st.builds(
    RcptParams,
    notify=st.one_of(st.none(), st.just(frozenset({DsnNotify.NEVER}))),
)


@given(
    sender=st.one_of(st.none(), _address),
    params=_mail_params,
    recipient=_address,
    rcpt_params=_rcpt_params,
)
def test_valid_commands_round_trip(
    sender: Address | None, params: MailParams, recipient: Address, rcpt_params: RcptParams
) -> None:
    d = CoreDriver()
    path = sender.path() if sender is not None else "<>"
    mail_line = " ".join([f"MAIL FROM:{path}", *params.to_esmtp()])
    rcpt_line = " ".join([f"RCPT TO:{recipient.path()}", *rcpt_params.to_esmtp()])
    log = d.feed(f"EHLO x\r\n{mail_line}\r\n{rcpt_line}\r\n".encode())
    assert not [e for e in log if isinstance(e, Refused)]
    assert log[1] == Mail(sender=sender, params=params)
    assert log[2] == Rcpt(recipient=recipient, params=rcpt_params)
