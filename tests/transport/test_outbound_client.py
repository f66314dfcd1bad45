"""The SMTP client against scripted servers: the protocol, and hostile servers (reliability
items 17, 18 and 52). Servers run over in-memory streams, so nothing here needs a socket."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
import trustme
from hypothesis import given
from hypothesis import strategies as st

from transport.client import (
    MAX_REPLY_BYTES,
    MAX_REPLY_LINE,
    MAX_REPLY_LINES,
    ClientTimeouts,
    OutboundRecipient,
    SessionError,
    SmtpClient,
    TlsFailure,
    Transaction,
    UnsafeAddress,
    check_address,
    encode_data,
    passes_data_unchanged,
    xtext_encode,
)
from transport.envelope import DsnReturn, Notify, OriginalRecipient, RecipientState

TIMEOUTS = ClientTimeouts()


class Script:
    """The server side of a memory stream: reads command lines, writes canned replies."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = b""
        self.lines: list[bytes] = []

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        self.lines.append(line)
        return line

    async def expect(self, prefix: bytes, reply: bytes) -> bytes:
        line = await self.line()
        assert line.upper().startswith(prefix), line
        await self.send(reply)
        return line


Server = Callable[[Script], Awaitable[None]]


async def run(
    server: Server,
    client_work: Callable[[SmtpClient], Awaitable[object]],
    *,
    timeouts: ClientTimeouts = TIMEOUTS,
) -> tuple[object, Script]:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    script = Script(server_stream)
    result: list[object] = []
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            try:
                await server(script)
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        nursery.start_soon(serve)
        client = SmtpClient(client_stream, timeouts=timeouts, peer="mx.test")
        try:
            result.append(await client_work(client))
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
    return result[0], script


EHLO_FULL = (
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n250-DSN\r\n250 ENHANCEDSTATUSCODES\r\n"
)


async def greet_and_ehlo(s: Script, ehlo: bytes = EHLO_FULL) -> None:
    await s.send(b"220 mx.test ESMTP\r\n")
    await s.expect(b"EHLO", ehlo)


async def hello(client: SmtpClient) -> None:
    await client.read_greeting()
    await client.hello("out.test")


# -- the protocol ------------------------------------------------------------------------


async def test_pipelined_transaction_with_dsn_parameters() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s)
        # Pipelining: all of MAIL and the RCPTs arrive before any reply is sent.
        lines = [await s.line() for _ in range(4)]
        assert lines[0].startswith(b"MAIL FROM:")
        await s.send(
            b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n450 4.2.1 busy\r\n"
        )
        await s.expect(b"DATA", b"354 go\r\n")
        while await s.line() != b".":
            pass
        await s.send(b"250 2.0.0 queued as X\r\n")

    tx = Transaction(
        sender="alice@local.test",
        recipients=(
            OutboundRecipient(
                "bob@remote.test",
                frozenset({Notify.SUCCESS, Notify.FAILURE}),
                OriginalRecipient("rfc822", "bob+x=y@remote.test"),
            ),
            OutboundRecipient("carol@remote.test"),
            OutboundRecipient("dave@remote.test"),
        ),
        eight_bit=True,
        ret=DsnReturn.HEADERS,
        envid="id+1",
    )

    async def work(client: SmtpClient) -> object:
        await hello(client)
        return await client.send_message(tx, b"Subject: x\r\n\r\nbody\r\n")

    verdicts, script = await run(server, work)
    mail, bob, *_ = script.lines[1:]
    assert mail == b"MAIL FROM:<alice@local.test> SIZE=20 BODY=8BITMIME RET=HDRS ENVID=id+2B1"
    assert (
        bob
        == b"RCPT TO:<bob@remote.test> NOTIFY=FAILURE,SUCCESS ORCPT=rfc822;bob+2Bx+3Dy@remote.test"
    )
    states = [(v.address, v.state, v.status, v.dsn_passed_on) for v in verdicts]
    assert states == [
        ("bob@remote.test", RecipientState.DELIVERED, "2.0.0", True),
        ("carol@remote.test", RecipientState.FAILED, "5.1.1", False),
        ("dave@remote.test", RecipientState.DEFERRED, "4.2.1", False),
    ]


async def test_helo_fallback_and_no_pipelining() -> None:
    async def server(s: Script) -> None:
        await s.send(b"220 old.test\r\n")
        await s.expect(b"EHLO", b"502 what?\r\n")
        await s.expect(b"HELO", b"250 old.test\r\n")
        mail = await s.expect(b"MAIL", b"250 ok\r\n")
        assert mail == b"MAIL FROM:<>"  # no extensions: no parameters
        await s.expect(b"RCPT", b"250 ok\r\n")
        await s.expect(b"DATA", b"354 go\r\n")
        while await s.line() != b".":
            pass
        await s.send(b"250 ok\r\n")

    async def work(client: SmtpClient) -> object:
        await client.read_greeting()
        caps = await client.hello("out.test")
        assert not caps.esmtp
        tx = Transaction(None, (OutboundRecipient("bob@remote.test", frozenset({Notify.NEVER})),))
        return await client.send_message(tx, b"x\r\n")

    verdicts, _ = await run(server, work)
    assert verdicts[0].state is RecipientState.DELIVERED
    assert verdicts[0].status == "2.0.0"


async def test_auth_login() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s, b"250-mx.test\r\n250 AUTH LOGIN\r\n")
        await s.expect(b"AUTH LOGIN", b"334 VXNlcm5hbWU6\r\n")
        assert await s.expect(b"", b"334 UGFzc3dvcmQ6\r\n") == b"dXNlcg=="
        assert await s.expect(b"", b"235 2.7.0 ok\r\n") == b"cGFzcw=="

    async def work(client: SmtpClient) -> object:
        await hello(client)
        await client.authenticate("user", "pass")
        return True

    assert (await run(server, work))[0] is True


async def test_size_limit_checked_before_sending() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s, b"250-mx.test\r\n250 SIZE 10\r\n")
        await s.line()
        raise AssertionError("nothing may be sent after EHLO")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction("a@local.test", (OutboundRecipient("b@remote.test"),))
        return await client.send_message(tx, b"Subject: too big\r\n\r\n")

    verdicts, script = await run(server, work)
    assert verdicts[0].state is RecipientState.FAILED
    assert verdicts[0].status == "5.3.4"
    assert len(script.lines) == 1


async def test_421_ends_the_session() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s, b"250 mx.test\r\n")
        await s.expect(b"MAIL", b"421 4.3.2 shutting down\r\n")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction("a@local.test", (OutboundRecipient("b@remote.test"),))
        with pytest.raises(SessionError) as caught:
            await client.send_message(tx, b"x")
        return caught.value

    error, _ = await run(server, work)
    assert error.status == "4.3.2"
    assert not error.committed


# -- hostile servers (item 17) -----------------------------------------------------------


async def hostile(greeting: bytes) -> SessionError:
    async def server(s: Script) -> None:
        await s.send(greeting)
        await trio.sleep_forever()

    async def work(client: SmtpClient) -> object:
        with pytest.raises(SessionError) as caught:
            await client.read_greeting()
        return caught.value

    return (await run(server, work))[0]


async def test_multiline_reply_that_never_ends() -> None:
    error = await hostile(b"220-hello\r\n" * (MAX_REPLY_LINES + 5))
    assert f"more than {MAX_REPLY_LINES} lines" in error.text


async def test_100_kb_reply() -> None:
    error = await hostile(b"220 " + b"a" * 100_000 + b"\r\n")
    assert f"longer than {MAX_REPLY_LINE}" in error.text


async def test_many_long_lines_cross_the_total_limit() -> None:
    line = b"220-" + b"b" * (MAX_REPLY_LINE - 10) + b"\r\n"
    error = await hostile(line * (MAX_REPLY_BYTES // len(line) + 2))
    assert f"longer than {MAX_REPLY_BYTES} bytes" in error.text


async def test_non_numeric_reply_code() -> None:
    error = await hostile(b"abc hello\r\n")
    assert "malformed reply" in error.text


async def test_code_changing_inside_a_multiline_reply() -> None:
    error = await hostile(b"220-hello\r\n250 there\r\n")
    assert "code changes" in error.text


async def test_reply_before_the_command() -> None:
    async def server(s: Script) -> None:
        await s.send(b"220 hi\r\n250 surprise\r\n")
        await trio.sleep_forever()

    async def work(client: SmtpClient) -> object:
        await client.read_greeting()
        with pytest.raises(SessionError) as caught:
            await client.hello("out.test")
        return caught.value

    error, script = await run(server, work)
    assert "before EHLO" in error.text
    assert script.lines == []


async def test_silent_server_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def server(s: Script) -> None:
        await trio.sleep_forever()

    async def work(client: SmtpClient) -> object:
        start = trio.current_time()
        with pytest.raises(SessionError) as caught:
            await client.read_greeting()
        assert trio.current_time() - start == pytest.approx(300)  # RFC 5321 4.5.3.2.1
        return caught.value

    error, _ = await run(server, work)
    assert "timeout" in error.text


async def test_data_termination_timeout_is_committed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s, b"250 mx.test\r\n")
        await s.expect(b"MAIL", b"250 ok\r\n")
        await s.expect(b"RCPT", b"250 ok\r\n")
        await s.expect(b"DATA", b"354 go\r\n")
        await trio.sleep_forever()

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction("a@local.test", (OutboundRecipient("b@remote.test"),))
        start = trio.current_time()
        with pytest.raises(SessionError) as caught:
            await client.send_message(tx, b"x\r\n")
        assert trio.current_time() - start == pytest.approx(600)  # 4.5.3.2.6: 10 minutes
        return caught.value

    error, _ = await run(server, work)
    assert error.committed


@pytest.fixture(scope="module")
def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("mx.test").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_starttls_response_injection_is_discarded(tls_pair) -> None:
    server_ctx, client_ctx = tls_pair

    async def server(s: Script) -> None:
        await greet_and_ehlo(s, b"250-mx.test\r\n250 STARTTLS\r\n")
        # The 220 and an injected reply in one segment (CVE-2011-0411 seen from the client).
        await s.expect(b"STARTTLS", b"220 go ahead\r\n250-injected\r\n250 AUTH PLAIN\r\n")
        tls = trio.SSLStream(s.stream, server_ctx, server_side=True)
        await tls.do_handshake()
        s.stream, s.buffer = tls, b""
        await s.expect(b"EHLO", b"250-mx.test\r\n250 SIZE 100\r\n")
        await s.expect(b"QUIT", b"221 bye\r\n")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        await client.starttls(client_ctx, "mx.test")
        caps = await client.hello("out.test")
        assert client.tls_version is not None
        await client.quit()
        return caps

    caps, _ = await run(server, work)
    assert caps.size == 100
    assert not caps.auth  # the injected "AUTH PLAIN" was never read


async def test_certificate_verification_failure(tls_pair) -> None:
    server_ctx, _ = tls_pair

    async def server(s: Script) -> None:
        await greet_and_ehlo(s, b"250-mx.test\r\n250 STARTTLS\r\n")
        await s.expect(b"STARTTLS", b"220 go ahead\r\n")
        tls = trio.SSLStream(s.stream, server_ctx, server_side=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            pass

    async def work(client: SmtpClient) -> object:
        await hello(client)
        with pytest.raises(TlsFailure):
            await client.starttls(ssl.create_default_context(), "mx.test")  # CA not trusted
        return True

    assert (await run(server, work))[0] is True


# -- envelope injection (item 52) and smuggling (item 18) --------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "a@b\r\nRCPT TO:<c@d>",
        "a@b\nDATA",
        "a@b\rx",
        "a\x00@b",
        "a@b> SIZE=1",
        "<a@b>",
        "a b@c",
        "",
        "nodomain",
    ],
)
def test_unsafe_addresses_refused(address: str) -> None:
    with pytest.raises(UnsafeAddress):
        check_address(address)


async def test_unsafe_sender_refused_before_anything_is_written() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s)
        await s.line()
        raise AssertionError("MAIL must not be written")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction("a@b\r\nRCPT TO:<c@d>", (OutboundRecipient("x@remote.test"),))
        with pytest.raises(UnsafeAddress):
            await client.send_message(tx, b"x")
        return True

    _, script = await run(server, work)
    assert len(script.lines) == 1  # EHLO only


def test_xtext() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_encode("é") == "+C3+A9"


@pytest.mark.parametrize(
    ("message", "payload"),
    [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".a\r\n", b"..a\r\n.\r\n"),
        (b"a\n.\r\nMAIL FROM:<x>\r\n", b"a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n"),
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\n.\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n\r\n.\r\n", b"a\r\n\r\n..\r\n.\r\n"),
    ],
)
def test_encode_data(message: bytes, payload: bytes) -> None:
    assert encode_data(message) == payload


@given(
    st.binary(max_size=300)
    | st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n"]), max_size=40).map(b"".join)
)
def test_encode_data_never_ends_early(message: bytes) -> None:
    payload = encode_data(message)
    assert payload.endswith(b"\r\n.\r\n") or payload == b".\r\n"
    body = payload[:-3]
    assert b"\r\n.\r\n" not in b"\r\n" + body[:-2] + b"\r\n" or body == b""
    lines = body.split(b"\r\n")[:-1] if body else []
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines)
    unstuffed = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    normalised = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert unstuffed == normalised


# -- BINARYMIME (RFC 3030) ------------------------------------------------------------------

BINARY = b"Content-Transfer-Encoding: binary\r\n\r\n\x00\x01\n.\r\n\r\r\n.\r\nend"
EHLO_CHUNKING = b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME\r\n"


async def test_binary_message_goes_with_bdat_as_it_is() -> None:
    received: list[bytes] = []

    async def server(s: Script) -> None:
        await greet_and_ehlo(s, EHLO_CHUNKING)
        assert await s.line() == b"MAIL FROM:<a@local.test> BODY=BINARYMIME"
        await s.line()
        await s.send(b"250 ok\r\n250 ok\r\n")
        command = await s.line()
        assert command == f"BDAT {len(BINARY)} LAST".encode()
        while len(s.buffer) < len(BINARY):
            s.buffer += await s.stream.receive_some(65536)
        received.append(s.buffer)
        await s.send(b"250 2.0.0 got it\r\n")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction("a@local.test", (OutboundRecipient("b@remote.test"),), binary=True)
        return await client.send_message(tx, BINARY)

    verdicts, _ = await run(server, work)
    assert received == [BINARY]  # no dot stuffing, no line-end changes
    assert verdicts[0].state is RecipientState.DELIVERED


async def test_binary_message_is_not_sent_where_data_would_change_it() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s)  # 8BITMIME, no CHUNKING or BINARYMIME
        await s.line()
        raise AssertionError("nothing may be sent after EHLO")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction("a@local.test", (OutboundRecipient("b@remote.test"),), binary=True)
        return await client.send_message(tx, BINARY)

    verdicts, script = await run(server, work)
    assert (verdicts[0].state, verdicts[0].status) == (RecipientState.FAILED, "5.6.3")
    assert len(script.lines) == 1


async def test_binary_message_that_data_carries_unchanged_goes_with_data() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s)
        assert (await s.line()).endswith(b"BODY=8BITMIME")
        await s.line()
        await s.send(b"250 ok\r\n250 ok\r\n")
        await s.expect(b"DATA", b"354 go\r\n")
        while await s.line() != b".":
            pass
        await s.send(b"250 ok\r\n")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction(
            "a@local.test", (OutboundRecipient("b@remote.test"),), eight_bit=True, binary=True
        )
        return await client.send_message(tx, "Subject: caf\u00e9\r\n\r\n.dot\r\n".encode())

    verdicts, _ = await run(server, work)
    assert verdicts[0].state is RecipientState.DELIVERED


@pytest.mark.parametrize(
    ("message", "unchanged"),
    [
        (b"", True),
        (b"a\r\n.b\r\n", True),  # dot stuffing is undone by the receiver
        (b"x" * 998 + b"\r\n", True),
        (b"x" * 999 + b"\r\n", False),  # RFC 5321 4.5.3.1.6: 998 octets a line
        (b"a\nb\r\n", False),
        (b"a\rb\r\n", False),
        (b"a\x00b\r\n", False),
        (b"no line end", False),  # DATA would add one
    ],
)
def test_what_data_carries_unchanged(message: bytes, unchanged: bool) -> None:
    assert passes_data_unchanged(message) is unchanged


async def test_a_refused_bdat_is_followed_by_rset() -> None:
    async def server(s: Script) -> None:
        await greet_and_ehlo(s, EHLO_CHUNKING)
        await s.line()
        await s.line()
        await s.send(b"250 ok\r\n250 ok\r\n")
        assert (await s.line()).startswith(b"BDAT")
        while len(s.buffer) < len(BINARY):
            s.buffer += await s.stream.receive_some(65536)
        s.buffer = b""
        await s.send(b"554 5.6.0 not today\r\n")
        await s.expect(b"RSET", b"250 ok\r\n")

    async def work(client: SmtpClient) -> object:
        await hello(client)
        tx = Transaction("a@local.test", (OutboundRecipient("b@remote.test"),), binary=True)
        verdicts = await client.send_message(tx, BINARY)
        assert client.needs_reset  # RFC 3030 leaves the server's state open
        await client.reset()
        return verdicts

    verdicts, _ = await run(server, work)
    assert (verdicts[0].state, verdicts[0].status) == (RecipientState.FAILED, "5.6.0")
