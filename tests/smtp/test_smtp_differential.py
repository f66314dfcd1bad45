"""Differential test against aiosmtpd 1.4.6, the reference implementation.

The same command sequences, malformed ones included, go over loopback to aiosmtpd
(its Controller, on its own asyncio thread) and to serve_smtp. Reply codes are
compared command by command; every place where they may differ is listed in
EXPECTED_DIFFERENCES with the reason, and the test fails on any other difference
and on any listed difference that no longer happens.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable

import pytest
import trio
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from smtp_helpers import SmtpTestClient, make_settings, tcp_server

from protocols.smtp.address import Address
from protocols.smtp.esmtp import MailParams, RcptParams
from protocols.smtp.replies import Reply
from protocols.smtp.sasl import Credentials
from protocols.smtp.session import AuthResult, MessageContent, SessionState
from protocols.smtp.session import Envelope as OurEnvelope

CRLF = b"\r\n"
ENVELOPE = [b"EHLO client.example", b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>"]

# name -> steps; each step is sent as is (lines get CRLF) and answered by one reply.
SEQUENCES: dict[str, list[bytes]] = {
    "basic": [*ENVELOPE, b"DATA", b"Subject: x\r\n\r\nhello\r\n..dot\r\n.", b"QUIT"],
    "helo": [
        b"HELO client.example",
        b"MAIL FROM:<a@b.example>",
        b"RCPT TO:<c@d.example>",
        b"DATA",
        b"hi\r\n.",
        b"QUIT",
    ],
    "sequence": [
        b"MAIL FROM:<a@b.example>",
        b"EHLO client.example",
        b"RCPT TO:<c@d.example>",
        b"DATA",
        b"MAIL FROM:<a@b.example>",
        b"MAIL FROM:<a@b.example>",
        b"DATA",
        b"RSET",
        b"RCPT TO:<c@d.example>",
        b"QUIT",
    ],
    "syntax": [
        b"EHLO",
        b"HELO",
        b"EHLO client.example",
        b"MAIL TO:<a@b.example>",
        b"MAIL FROM:<a@b.example> FOO=BAR",
        b"MAIL FROM:<a@b.example> SIZE=abc",
        b"MAIL FROM:<a@b.example> SIZE=100",
        b"RCPT TO:<c@d.example> FOO=BAR",
        b"RCPT TO:<c@d.example>",
        b"RSET x",
        b"QUIT x",
        b"QUIT",
    ],
    "bare-address": [
        b"EHLO client.example",
        b"MAIL FROM:a@b.example",
        b"RSET",
        b"MAIL FROM:<a@b.example",
        b"RSET",
        b"MAIL FROM:<a@b.example>",
        b"RCPT TO:c@d.example",
        b"QUIT",
    ],
    "simple": [
        b"NOOP",
        b"NOOP hello",
        b"VRFY",
        b"VRFY alice",
        b"EXPN staff",
        b"HELP",
        b"FOO",
        b"QUIT",
    ],
    "addresses": [
        b"EHLO client.example",
        b"MAIL FROM:<>",
        b"RCPT TO:<postmaster>",
        b'RCPT TO:<"john doe"@d.example>',
        b"RCPT TO:<@a.example,@b.example:u@c.example>",
        b"RCPT TO:<u@[192.0.2.1]>",
        b"RCPT TO:<u@d.example.>",
        b"RCPT TO:<u@v@d.example>",
        b"RCPT TO:<u%v@d.example>",
        b"QUIT",
    ],
    "extensions": [
        b"EHLO client.example",
        b"STARTTLS",
        b"AUTH PLAIN AGEAYg==",
        b"MAIL FROM:<a@b.example> BODY=8BITMIME",
        b"RCPT TO:<c@d.example> NOTIFY=SUCCESS",
        b"RSET",
        b"MAIL FROM:<a@b.example> RET=HDRS ENVID=x",
        b"RSET",
        b"MAIL FROM:<a@b.example> SMTPUTF8",
        b"RCPT TO:<c@d.example>",
        b"BDAT 0 LAST",
        b"QUIT",
    ],
    "bare-newlines": [b"EHLO client.example\n", b"NOOP\n", b"NOOP\r\n", b"QUIT"],
    "bare-lf-in-data": [*ENVELOPE, b"DATA", b"line one\nline two\r\n.", b"QUIT"],
    "smuggling": [*ENVELOPE, b"DATA", b"body\n.\nMAIL FROM:<s@x.example>\r\n.", b"QUIT"],
    "long-lines": [
        b"EHLO client.example",
        b"NOOP " + b"x" * 600,
        b"MAIL FROM:<a@b.example>",
        b"RCPT TO:<c@d.example> ORCPT=rfc822;" + b"o" * 490,
        b"QUIT",
    ],
    "long-text-line": [*ENVELOPE, b"DATA", b"y" * 1200 + b"\r\n.", b"QUIT"],
}

# (sequence, step index) -> (aiosmtpd code, our code, why)
EXPECTED_DIFFERENCES: dict[tuple[str, int], tuple[int, int, str]] = {
    ("sequence", 6): (503, 554, "DATA without recipients: RFC 5321 3.3 allows 503 or 554"),
    ("simple", 5): (250, 214, "HELP: RFC 5321 4.2 has 214 for help replies"),
    ("bare-address", 1): (250, 501, "RFC 5321 4.1.2 paths need <...>; aiosmtpd accepts bare ones"),
    ("bare-address", 3): (250, 501, "an unterminated path: aiosmtpd takes it anyway"),
    ("bare-address", 6): (250, 501, "bare address, for RCPT"),
    ("addresses", 6): (553, 501, "bad address syntax: 501 (RFC 5321 4.1.2/4.2.4) rather than 553"),
    ("addresses", 7): (553, 501, "same: two @ signs are a syntax error"),
    ("extensions", 1): (454, 502, "no TLS configured on either; STARTTLS is not offered, so 502"),
    ("extensions", 2): (
        538,
        503,
        "no TLS possible, so AUTH is not enabled at all (538 needs STARTTLS)",
    ),
    ("extensions", 4): (555, 250, "DSN (RFC 3461) NOTIFY: aiosmtpd lacks DSN"),
    ("extensions", 6): (555, 250, "DSN RET/ENVID: aiosmtpd lacks DSN"),
    ("extensions", 10): (500, 250, "CHUNKING/BDAT (RFC 3030): aiosmtpd lacks it"),
    ("bare-newlines", 0): (250, 500, "RFC 5321 2.3.8: commands end with CRLF; we refuse bare LF"),
    ("bare-newlines", 1): (250, 500, "same: bare LF command"),
    ("bare-lf-in-data", 4): (
        250,
        550,
        "bare LF in DATA refused (smuggling defence); aiosmtpd stores it",
    ),
    ("smuggling", 4): (
        250,
        550,
        "bare LF around the dot: one message, refused whole; aiosmtpd stores it",
    ),
    ("long-lines", 3): (
        500,
        250,
        "RCPT with ORCPT may pass 512 octets (RFC 3461 4.2); we allow 2048",
    ),
}


class _Handler:
    """aiosmtpd handler: accept every recipient and message (no policy on either side)."""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 OK"


class _BoundController(Controller):  # type: ignore[misc]  # aiosmtpd is untyped
    """A Controller on a socket we bound to port 0 ourselves (no port guessing)."""

    def __init__(self, sock: socket.socket, **kwargs: object) -> None:
        self._sock = sock
        super().__init__(_Handler(), hostname="127.0.0.1", port=sock.getsockname()[1], **kwargs)

    def _create_server(self) -> Awaitable[object]:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class _AcceptAll:
    """Our side of the same policy: every sender, recipient and message accepted."""

    async def authenticate(self, session: SessionState, credentials: Credentials) -> AuthResult:
        return AuthResult(None)

    async def check_sender(
        self, session: SessionState, sender: Address | None, params: MailParams
    ) -> Reply | None:
        return None

    async def check_recipient(
        self, session: SessionState, recipient: Address, params: RcptParams
    ) -> Reply | None:
        return None

    async def deliver(self, envelope: OurEnvelope, message: MessageContent) -> Reply:
        return Reply(250, "2.0.0", "OK")


async def run_sequence(port: int, steps: list[bytes]) -> list[int]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = SmtpTestClient(stream)
    codes: list[int] = []
    try:
        with trio.fail_after(10):
            await client.reply()  # greeting
            for step in steps:
                await client.send(step if step.endswith(b"\n") else step + CRLF)
                codes.append((await client.reply())[0])
    except (EOFError, trio.BrokenResourceError):
        codes.append(0)  # the server closed the connection
    finally:
        await stream.aclose()
    return codes


@pytest.fixture(scope="module")
def aiosmtpd_port() -> object:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    controller = _BoundController(sock, server_hostname="mx.example", enable_SMTPUTF8=True)
    controller.start()
    yield sock.getsockname()[1]
    controller.stop()


async def test_reply_codes_match_aiosmtpd_except_where_listed(aiosmtpd_port: int) -> None:
    ours: dict[str, list[int]] = {}
    theirs: dict[str, list[int]] = {}
    async with tcp_server(make_settings(hard_error_limit=100), _AcceptAll()) as port:
        for name, steps in SEQUENCES.items():
            ours[name] = await run_sequence(port, steps)
            theirs[name] = await run_sequence(aiosmtpd_port, steps)
    unexplained = []
    for name, steps in SEQUENCES.items():
        assert len(ours[name]) == len(theirs[name]) == len(steps), name
        for index, (a, b) in enumerate(zip(theirs[name], ours[name], strict=True)):
            expected = EXPECTED_DIFFERENCES.get((name, index))
            if expected is None:
                if a != b:
                    unexplained.append((name, index, steps[index][:60], a, b))
            elif (a, b) != expected[:2]:
                unexplained.append((name, index, steps[index][:60], a, b, "expected", expected))
    assert unexplained == []
