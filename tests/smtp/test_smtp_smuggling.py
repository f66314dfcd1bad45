"""SMTP smuggling (CVE-2023-51764/51765/51766, CVE-2024-27305): only <CRLF>.<CRLF> ends DATA.

Every end-of-data look-alike from our checklist (item 21) is sent with a second
transaction behind it. The message must never end early, and no second message (and no
second MAIL) may appear: the whole thing is one message, refused for its bare CR/LF/NUL.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from smtp_helpers import (
    CoreDriver,
    Refused,
    SmtpTestClient,
    make_settings,
    message_bodies,
    tcp_server,
)

from protocols.smtp.core import EndOfMessage, Mail, MessageData, State
from protocols.smtp.fakes import DictBackend

SEQUENCES = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
]

ENVELOPE = (
    b"EHLO attacker.example\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nDATA\r\n"
)
SMUGGLED = (
    b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n"
    b"From: smuggled@evil.example\r\n\r\nsmuggled\r\n.\r\n"
)


def body_with(sequence: bytes) -> bytes:
    return b"From: a@example.net\r\nSubject: hi\r\n\r\nbody" + sequence + SMUGGLED


@pytest.mark.parametrize("sequence", SEQUENCES, ids=repr)
def test_core_never_ends_data_early(sequence: bytes) -> None:
    d = CoreDriver()
    d.feed(ENVELOPE)
    log = d.feed(body_with(sequence))
    assert not any(isinstance(e, Mail | EndOfMessage) for e in log)
    refusals = [e.reply for e in log if isinstance(e, Refused)]
    assert [(r.code, r.enhanced) for r in refusals] in ([(550, "5.5.2")], [(550, "5.6.0")])
    # Nothing of the message was handed out as content before the poison was seen...
    assert b"smuggled" not in b"".join(e.data for e in log if isinstance(e, MessageData))
    # ...and the session goes on in step with the client.
    assert d.conn.state is State.READY
    assert d.feed(b"NOOP\r\n")[0].__class__.__name__ == "Noop"
    assert sum(isinstance(e, Mail) for e in d.log) == 1


@pytest.mark.parametrize("sequence", SEQUENCES, ids=repr)
def test_core_byte_by_byte_agrees(sequence: bytes) -> None:
    d = CoreDriver()
    d.feed(ENVELOPE)
    for byte in body_with(sequence):
        d.feed(bytes([byte]))
    assert sum(isinstance(e, Mail) for e in d.log) == 1
    assert not any(isinstance(e, EndOfMessage) for e in d.log)


async def test_session_stores_no_second_message(
    memory_session: Callable[..., SmtpTestClient], backend: DictBackend
) -> None:
    client = memory_session()
    assert (await client.reply())[0] == 220
    for sequence in SEQUENCES:
        await client.send(ENVELOPE)
        assert [(await client.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
        await client.send(body_with(sequence))
        code, _ = await client.reply()
        assert code == 550, sequence
    assert backend.delivered == []
    await client.send(ENVELOPE)
    assert [(await client.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
    assert await client.code(b"clean message\r\n.") == 250
    assert len(backend.delivered) == 1
    assert backend.delivered[0].content == b"clean message\r\n"


async def test_smuggling_over_loopback(backend: DictBackend) -> None:
    async with tcp_server(make_settings(), backend) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = SmtpTestClient(stream)
        assert (await client.reply())[0] == 220
        for sequence in SEQUENCES:
            await client.send(ENVELOPE)
            assert [(await client.reply())[0] for _ in range(4)] == [250, 250, 250, 354]
            await client.send(body_with(sequence))
            assert (await client.reply())[0] == 550
        assert await client.code("QUIT") == 221
        await stream.aclose()
    assert backend.delivered == []
    senders = [m.envelope.sender for m in backend.delivered]
    assert not any(s is not None and s.local_part == "smuggled" for s in senders)


def stuff(body: bytes) -> bytes:
    """What a correct client sends (RFC 5321 4.5.2): a dot doubled at each line start."""
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


_piece = st.one_of(
    st.sampled_from(
        [b"\r\n", b"\r", b"\n", b".", b"\x00", b"\r\n.\r\n", b"MAIL FROM:<x@y.example>"]
    ),
    st.binary(max_size=20),
)


@given(st.lists(_piece, max_size=30).map(b"".join))
def test_a_message_is_either_received_intact_or_refused(body: bytes) -> None:
    d = CoreDriver()
    d.feed(ENVELOPE)
    log = d.feed(stuff(body + b"\r\n") + b".\r\n")
    received = message_bodies(log)
    if received:
        assert received == [body + b"\r\n"]
    else:
        assert any(isinstance(e, Refused) for e in log)
    assert d.conn.state is State.READY
    assert sum(isinstance(e, Mail) for e in d.log) == 1
