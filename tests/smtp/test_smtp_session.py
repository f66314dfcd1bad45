"""The trio session over memory streams: delivery, spooling, time, errors, shutdown."""

from __future__ import annotations

import errno
import logging
import os
import ssl
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from smtp_helpers import HOSTNAME, PEER, SmtpTestClient, make_settings

from protocols.connection import Drain
from protocols.smtp import session as session_module
from protocols.smtp.address import Address
from protocols.smtp.esmtp import BodyType, DsnNotify, DsnReturn
from protocols.smtp.fakes import DictBackend
from protocols.smtp.replies import Reply
from protocols.smtp.session import (
    ClientConnectionLimiter,
    ConnectorKind,
    Envelope,
    MessageContent,
    SmtpSettings,
    SmtpTimeouts,
    TlsContextProvider,
    serve_smtp,
    with_protocol,
)

Start = Callable[..., SmtpTestClient]


async def hello(client: SmtpTestClient) -> list[str]:
    code, _ = await client.reply()
    assert code == 220
    code, lines = await client.command("EHLO client.example")
    assert code == 250
    return lines


async def transaction(client: SmtpTestClient, *rcpts: str, sender: str = "a@example.net") -> None:
    assert await client.code(f"MAIL FROM:<{sender}>") == 250
    for rcpt in rcpts:
        assert await client.code(f"RCPT TO:<{rcpt}>") == 250


# ------------------------------------------------------------------ conversation


async def test_greeting_and_ehlo_keywords(memory_session: Start) -> None:
    client = memory_session(make_settings(max_message_size=5_000_000))
    code, lines = await client.reply()
    assert (code, lines) == (220, [f"{HOSTNAME} ESMTP"])
    code, lines = await client.command("EHLO client.example")
    assert lines == [
        HOSTNAME,
        "PIPELINING",
        "SIZE 5000000",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "DSN",
        "SMTPUTF8",
        "CHUNKING",
        "BINARYMIME",
    ]  # no STARTTLS without a TLS context, no AUTH without TLS


async def test_starttls_offered_with_a_context(
    memory_session: Start, tls_provider: TlsContextProvider
) -> None:
    client = memory_session(tls_context=tls_provider)
    assert "STARTTLS" in await hello(client)
    client = memory_session(make_settings(starttls=False), tls_context=tls_provider)
    assert "STARTTLS" not in await hello(client)


async def test_delivery_with_envelope_details(memory_session: Start, backend: DictBackend) -> None:
    client = memory_session()
    await hello(client)
    assert await client.code("MAIL FROM:<a@example.net> BODY=8BITMIME RET=HDRS ENVID=id1") == 250
    assert await client.code("RCPT TO:<alice@example.org> NOTIFY=SUCCESS,FAILURE") == 250
    assert await client.code("RCPT TO:<nobody@example.org>") == 550
    assert await client.code("RCPT TO:<bob@Example.ORG> ORCPT=rfc822;bob+40example.org") == 250
    assert await client.code("RCPT TO:<x@elsewhere.example>") == 554
    assert await client.code("DATA") == 354
    assert await client.code(b"Subject: hi\r\n\r\n..dot\r\n.") == 250
    [message] = backend.delivered
    envelope = message.envelope
    assert message.content == b"Subject: hi\r\n\r\n.dot\r\n"
    assert envelope.sender == Address("a", "example.net")
    assert [str(r.address) for r in envelope.recipients] == ["alice@example.org", "bob@Example.ORG"]
    assert envelope.recipients[0].params.notify == {DsnNotify.SUCCESS, DsnNotify.FAILURE}
    assert envelope.recipients[1].params.orcpt is not None
    assert envelope.mail_params.body is BodyType.EIGHT_BIT_MIME
    assert envelope.mail_params.ret is DsnReturn.HEADERS
    assert envelope.mail_params.envid == "id1"
    assert envelope.helo == "client.example"
    assert envelope.client == PEER
    assert envelope.protocol == "ESMTP"
    assert envelope.tls is None
    assert envelope.auth_user is None
    assert envelope.hostname == HOSTNAME
    assert envelope.connector is ConnectorKind.DEFAULT


async def test_two_messages_on_one_connection_and_null_sender(
    memory_session: Start, backend: DictBackend
) -> None:
    client = memory_session()
    await hello(client)
    for sender in ("a@example.net", ""):
        await transaction(client, "alice@example.org", sender=sender)
        assert await client.code("DATA") == 354
        assert await client.code(b"x\r\n.") == 250
    assert [m.envelope.sender for m in backend.delivered] == [Address("a", "example.net"), None]


async def test_bdat_delivery(memory_session: Start, backend: DictBackend) -> None:
    client = memory_session()
    await hello(client)
    assert await client.code("MAIL FROM:<a@example.net> BODY=BINARYMIME") == 250
    assert await client.code("RCPT TO:<alice@example.org>") == 250
    await client.send(b"BDAT 6\r\n\x00\xff\r\n.\nBDAT 3 LAST\r\nend")  # pipelined chunks
    assert [(await client.reply())[0] for _ in range(2)] == [250, 250]
    [message] = backend.delivered
    assert message.content == b"\x00\xff\r\n.\nend"
    assert message.envelope.mail_params.body is BodyType.BINARY_MIME


async def test_pipelined_group_gets_replies_in_order(memory_session: Start) -> None:
    client = memory_session()
    await hello(client)
    await client.send(
        b"MAIL FROM:<a@example.net>\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<zz@example.org>\r\n"
        b"RCPT TO:<bob@example.org>\r\nDATA\r\n"
    )
    assert [(await client.reply())[0] for _ in range(5)] == [250, 250, 550, 250, 354]
    assert await client.code(b"hi\r\n.") == 250


async def test_large_message_is_spooled_to_disk_and_removed(
    memory_session: Start, backend: DictBackend, tmp_path: Path
) -> None:
    client = memory_session(make_settings(memory_spool_limit=1000, spool_directory=str(tmp_path)))
    await hello(client)
    await transaction(client, "alice@example.org")
    assert await client.code("DATA") == 354
    body = b"".join(b"line %05d of a long message\r\n" % i for i in range(500))
    assert await client.code(body + b".") == 250
    [message] = backend.delivered
    assert message.spooled_to_disk
    assert message.content == body
    assert os.listdir(tmp_path) == []


async def test_aborted_large_message_leaves_no_spool_file(
    memory_session: Start, backend: DictBackend, tmp_path: Path
) -> None:
    client = memory_session(make_settings(memory_spool_limit=100, spool_directory=str(tmp_path)))
    await hello(client)
    await transaction(client, "alice@example.org")
    assert await client.code("DATA") == 354
    await client.send(b"x" * 500 + b"\r\n" * 10)
    await client.send(b"bad\nline\r\n.\r\n")  # refused at the end
    assert (await client.reply())[0] == 550
    assert await client.code("MAIL FROM:<>") == 250
    assert await client.code("RCPT TO:<alice@example.org>") == 250
    await client.send(b"BDAT 300\r\n" + b"y" * 300)
    assert (await client.reply())[0] == 250
    assert await client.code("RSET") == 250
    assert await client.code("NOOP") == 250
    assert os.listdir(tmp_path) == []
    assert backend.delivered == []


async def test_connection_lost_during_data(backend: DictBackend, tmp_path: Path) -> None:
    settings = make_settings(memory_spool_limit=10, spool_directory=str(tmp_path))
    client_stream, server_stream = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:  # waits for serve_smtp to finish
        nursery.start_soon(
            partial(serve_smtp, server_stream, PEER, settings=settings, backend=backend)
        )
        client = SmtpTestClient(client_stream)
        await hello(client)
        await transaction(client, "alice@example.org")
        assert await client.code("DATA") == 354
        await client.send(b"some content\r\nmore\r\n")
        await client.stream.aclose()
    assert backend.delivered == []
    assert os.listdir(tmp_path) == []


async def test_message_size_limit(memory_session: Start, backend: DictBackend) -> None:
    client = memory_session(make_settings(max_message_size=100))
    await hello(client)
    assert await client.code("MAIL FROM:<a@example.net> SIZE=101") == 552
    await transaction(client, "alice@example.org")
    assert await client.code("DATA") == 354
    assert await client.code(b"x" * 98 + b"\r\ny\r\n.") == 552
    assert backend.delivered == []


async def test_delivery_failure_reply_is_passed_on(
    memory_session: Start, backend: DictBackend
) -> None:
    backend.deliver_reply = Reply(451, "4.3.0", "store unavailable")
    client = memory_session()
    await hello(client)
    await transaction(client, "alice@example.org")
    assert await client.code("DATA") == 354
    assert await client.command(b"x\r\n.") == (451, ["4.3.0 store unavailable"])


async def test_simple_commands(memory_session: Start) -> None:
    client = memory_session()
    await hello(client)
    assert await client.code("VRFY alice") == 252
    assert await client.code("EXPN staff") == 502
    assert await client.code("HELP") == 214
    assert await client.code("NOOP") == 250
    assert await client.code("HELO client.example") == 250
    assert await client.code("QUIT") == 221
    assert await client.closed()


async def test_starttls_without_a_certificate_is_454(memory_session: Start) -> None:
    client = memory_session(tls_context=lambda: None)
    await hello(client)
    assert await client.code("STARTTLS") == 454
    assert await client.code("NOOP") == 250


async def test_a_failing_tls_provider_is_454_not_a_crash(
    memory_session: Start, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> ssl.SSLContext:
        raise OSError("certificate file vanished")

    client = memory_session(tls_context=broken)
    await hello(client)
    assert await client.code("STARTTLS") == 454
    assert await client.code("NOOP") == 250
    assert "certificate file vanished" in caplog.text


async def test_tls_context_is_fetched_at_each_handshake(
    memory_session: Start, server_ssl_context: ssl.SSLContext, client_ssl_context: ssl.SSLContext
) -> None:
    calls: list[int] = []

    def provider() -> ssl.SSLContext:
        calls.append(1)
        return server_ssl_context

    for _ in range(2):
        client = memory_session(tls_context=provider)
        await hello(client)
        assert await client.code("STARTTLS") == 220
        tls = trio.SSLStream(client.stream, client_ssl_context, server_hostname=HOSTNAME)
        await tls.do_handshake()
        await tls.aclose()
    assert len(calls) == 2


async def test_tls_handshake_failure_closes(
    memory_session: Start, tls_provider: TlsContextProvider
) -> None:
    client = memory_session(tls_context=tls_provider)
    await hello(client)
    assert await client.code("STARTTLS") == 220
    await client.send(b"this is not a TLS client hello\r\n" * 10)
    assert await client.closed()


def test_with_protocol_names() -> None:
    assert with_protocol(esmtp=False, tls=True, authenticated=False, smtputf8=False) == "SMTP"
    assert with_protocol(esmtp=True, tls=False, authenticated=False, smtputf8=False) == "ESMTP"
    assert with_protocol(esmtp=True, tls=True, authenticated=False, smtputf8=False) == "ESMTPS"
    assert with_protocol(esmtp=True, tls=False, authenticated=True, smtputf8=False) == "ESMTPA"
    assert with_protocol(esmtp=True, tls=True, authenticated=True, smtputf8=False) == "ESMTPSA"
    assert with_protocol(esmtp=True, tls=True, authenticated=True, smtputf8=True) == "UTF8SMTPSA"


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="SASL"):
        SmtpSettings(hostname="mx", auth_mechanisms=("CRAM-MD5",))
    with pytest.raises(ValueError, match="single lines"):
        SmtpSettings(hostname="mx\r\n250 fake")
    with pytest.raises(ValueError, match="minimum"):
        SmtpSettings(hostname="mx", max_recipients=10)
    assert SmtpSettings(hostname="mx", connector=ConnectorKind.CLIENT).requires_auth
    assert not SmtpSettings(hostname="mx").requires_auth
    assert SmtpSettings(hostname="mx", anonymous_allowed=False).requires_auth


# ------------------------------------------------------------------ time


async def test_timeout_before_ehlo_is_shorter(
    memory_session: Start, autojump_clock: trio.testing.MockClock
) -> None:
    client = memory_session(make_settings(timeouts=SmtpTimeouts(before_ehlo=60, command=300)))
    start = trio.current_time()
    assert (await client.reply())[0] == 220
    code, lines = await client.reply()
    assert (code, lines[0].split()[0]) == (421, "4.4.2")
    assert trio.current_time() - start == pytest.approx(60)
    assert await client.closed()


async def test_command_timeout_after_ehlo(
    memory_session: Start, autojump_clock: trio.testing.MockClock
) -> None:
    client = memory_session(make_settings(timeouts=SmtpTimeouts(before_ehlo=60, command=300)))
    await hello(client)
    start = trio.current_time()
    assert (await client.reply())[0] == 421
    assert trio.current_time() - start == pytest.approx(300)


async def test_session_time_cap(
    memory_session: Start, autojump_clock: trio.testing.MockClock
) -> None:
    client = memory_session(make_settings(timeouts=SmtpTimeouts(session=100, command=30)))
    await hello(client)
    start = trio.current_time()
    codes = []
    while not codes or codes[-1] == 250:  # a client that would keep the session forever
        await trio.sleep(20)
        codes.append(await client.code("NOOP"))
    assert codes[-1] == 421
    assert trio.current_time() - start == pytest.approx(100, abs=20)
    assert await client.closed()


async def _lockstep_session(
    nursery: trio.Nursery, backend: DictBackend, settings: SmtpSettings
) -> tuple[SmtpTestClient, list[float]]:
    """serve_smtp over a lockstep stream (a send waits until the client reads); the
    list gets the trio time at which serve_smtp returned."""
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    ended: list[float] = []

    async def serve() -> None:
        await serve_smtp(server_stream, PEER, settings=settings, backend=backend)
        ended.append(trio.current_time())

    nursery.start_soon(serve)
    return SmtpTestClient(client_stream), ended


async def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
    nursery: trio.Nursery, backend: DictBackend, autojump_clock: trio.testing.MockClock
) -> None:
    settings = make_settings(timeouts=SmtpTimeouts(send=45, before_ehlo=600, command=600))
    client, ended = await _lockstep_session(nursery, backend, settings)
    start = trio.current_time()
    await trio.sleep(1000)  # the greeting is never read
    assert ended and ended[0] - start == pytest.approx(45)
    # Closed: what the lockstep stream still holds of the greeting, then the end.
    assert await client.line() == b"220 mx.example ESMTP"
    assert await client.closed()


async def test_the_250_after_a_stored_message_is_bounded_by_the_send_timeout(
    nursery: trio.Nursery, backend: DictBackend, autojump_clock: trio.testing.MockClock
) -> None:
    """The 250 goes out shielded (see the session cap test below), but a client that
    stops reading still cannot hold the session past the send timeout."""
    settings = make_settings(timeouts=SmtpTimeouts(send=45, command=600))
    client, ended = await _lockstep_session(nursery, backend, settings)
    await hello(client)
    await transaction(client, "alice@example.org")
    assert await client.code("DATA") == 354
    await client.send(b"Subject: unread\r\n\r\nbody\r\n.\r\n")
    start = trio.current_time()
    await trio.sleep(1000)  # the 250 is never read
    assert len(backend.delivered) == 1
    assert ended and ended[0] - start == pytest.approx(45)


async def test_waits_and_sends_do_not_wake_the_deadline_task(
    memory_session: Start, mock_clock: trio.testing.MockClock
) -> None:
    """Deadlines are plain numbers that one task per run enforces: 20 sessions trading
    200 commands and replies cost it no pass over the sessions (time stands still here,
    so only a wake-up by a session would show)."""
    clients = [memory_session() for _ in range(20)]
    for client in clients:
        await hello(client)
    deadlines = session_module._Deadlines.of_this_run()
    before = deadlines.passes
    for _ in range(10):
        for client in clients:
            assert await client.code("NOOP") == 250
    assert deadlines.passes == before
    # The deadlines still hold: once time moves, an idle session times out.
    mock_clock.jump(300)
    code, lines = await clients[0].reply()
    assert (code, lines[0].split()[0]) == (421, "4.4.2")


async def test_draining_closes_every_idle_session_of_the_server(memory_session: Start) -> None:
    drain = Drain()
    clients = [memory_session(drain=drain) for _ in range(3)]
    for client in clients:
        await hello(client)
    busy = memory_session(drain=drain)
    await hello(busy)
    await transaction(busy, "alice@example.org")
    assert await busy.code("DATA") == 354
    await trio.testing.wait_all_tasks_blocked()
    drain.start()
    for client in clients:
        code, lines = await client.reply()
        assert (code, lines[0].split()[0]) == (421, "4.3.2")
        assert await client.closed()
    # A session inside a message is not idle: it finishes, then hears 421.
    await busy.send(b"Subject: late\r\n\r\nbody\r\n.\r\n")
    assert (await busy.reply())[0] == 250
    assert (await busy.reply())[0] == 421


async def test_tls_handshake_timeout(
    memory_session: Start, tls_provider: TlsContextProvider, autojump_clock: trio.testing.MockClock
) -> None:
    client = memory_session(
        make_settings(timeouts=SmtpTimeouts(tls_handshake=30)), tls_context=tls_provider
    )
    await hello(client)
    assert await client.code("STARTTLS") == 220
    start = trio.current_time()
    assert await client.closed()
    assert trio.current_time() - start == pytest.approx(30)


async def test_errors_past_the_soft_limit_are_slowed_and_the_hard_limit_closes(
    memory_session: Start, autojump_clock: trio.testing.MockClock
) -> None:
    timeouts = SmtpTimeouts(error_sleep=1.0)
    client = memory_session(
        make_settings(soft_error_limit=3, hard_error_limit=6, timeouts=timeouts)
    )
    await hello(client)
    times = []
    for _ in range(6):
        start = trio.current_time()
        assert await client.code("BOGUS") == 500
        times.append(trio.current_time() - start)
    assert times == pytest.approx([0, 0, 0, 1, 1, 1])
    code, lines = await client.reply()  # at the hard limit the server ends it at once
    assert (code, lines[0].split()[0]) == (421, "4.7.0")
    assert await client.closed()


async def test_failed_auth_attempts_are_slowed(
    memory_session: Start,
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
    autojump_clock: trio.testing.MockClock,
) -> None:
    import base64

    settings = make_settings(
        connector=ConnectorKind.CLIENT, soft_error_limit=2, timeouts=SmtpTimeouts(error_sleep=1.0)
    )
    client = memory_session(settings, tls_context=tls_provider)
    await hello(client)
    assert await client.code("STARTTLS") == 220
    tls = trio.SSLStream(client.stream, client_ssl_context, server_hostname=HOSTNAME)
    await tls.do_handshake()
    client.stream = tls
    await client.command("EHLO c")
    wrong = "AUTH PLAIN " + base64.b64encode(b"\0alice\0guess").decode()
    start = trio.current_time()
    for _ in range(5):
        assert await client.code(wrong) == 535
    assert trio.current_time() - start == pytest.approx(3)


# ------------------------------------------------------------------ robustness


class ExplodingBackend(DictBackend):
    async def deliver(self, envelope: Envelope, message: MessageContent) -> Reply:
        raise RuntimeError("secret internal detail")


async def test_internal_error_is_421_without_a_traceback(
    memory_session: Start, caplog: pytest.LogCaptureFixture
) -> None:
    backend = ExplodingBackend(
        local_domains=frozenset({"example.org"}), mailboxes=frozenset({"a@example.org"})
    )
    client = memory_session(session_backend=backend)
    await hello(client)
    await transaction(client, "a@example.org")
    assert await client.code("DATA") == 354
    code, lines = await client.command(b"x\r\n.")
    assert (code, lines) == (421, ["4.3.0 Internal error, closing connection"])
    assert await client.closed()
    assert "secret internal detail" in caplog.text  # logged for us, never sent


class SlowBackend(DictBackend):
    """A delivery that cannot be interrupted (the store's fsync in a worker thread)."""

    async def deliver(self, envelope: Envelope, message: MessageContent) -> Reply:
        with trio.CancelScope(shield=True):
            await trio.sleep(200)
        return await super().deliver(envelope, message)


async def test_a_delivered_message_gets_its_250_even_when_the_session_is_cut(
    memory_session: Start, autojump_clock: trio.testing.MockClock
) -> None:
    """The session cap passes while the message is being stored: the message is ours, so
    the client must hear 250 before the 421, or it would send the message again."""
    backend = SlowBackend(
        local_domains=frozenset({"example.org"}), mailboxes=frozenset({"a@example.org"})
    )
    client = memory_session(
        make_settings(timeouts=SmtpTimeouts(session=100, command=300)), session_backend=backend
    )
    await hello(client)
    await transaction(client, "a@example.org")
    assert await client.code("DATA") == 354
    await client.send(b"Subject: slow\r\n\r\nbody\r\n.\r\n")
    assert (await client.reply())[0] == 250
    assert (await client.reply())[0] == 421
    assert await client.closed()
    assert len(backend.delivered) == 1


async def test_a_message_that_cannot_be_spooled_gets_a_4xx_and_the_session_goes_on(
    memory_session: Start, backend: DictBackend, tmp_path: Path
) -> None:
    """The spool folder is gone (or the disk full) while a large message arrives: the rest
    of the message is read and dropped, its end is answered 451/452, and the session can
    send the next message."""
    settings = make_settings(memory_spool_limit=100, spool_directory=str(tmp_path / "gone"))
    client = memory_session(settings)
    await hello(client)
    for _ in range(2):
        await transaction(client, "alice@example.org")
        assert await client.code("DATA") == 354
        await client.send(b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n" + b"y" * 500)
        code, lines = await client.command(b"\r\n.")
        assert (code, lines[0].split()[0]) == (451, "4.3.0")
    assert backend.delivered == []
    assert await client.code("NOOP") == 250


def test_a_full_disk_is_452_mail_system_full() -> None:
    reply = session_module._spool_failure_reply(OSError(errno.ENOSPC, "No space left"))
    assert (reply.code, reply.enhanced) == (452, "4.3.1")
    reply = session_module._spool_failure_reply(OSError(errno.EIO, "I/O error"))
    assert (reply.code, reply.enhanced) == (451, "4.3.0")


async def test_draining_closes_an_idle_session_at_once(memory_session: Start) -> None:
    drain = Drain()
    client = memory_session(drain=drain)
    await hello(client)
    drain.start()
    code, lines = await client.reply()
    assert (code, lines[0].split()[0]) == (421, "4.3.2")
    assert await client.closed()


async def test_draining_lets_a_message_finish(memory_session: Start, backend: DictBackend) -> None:
    drain = Drain()
    client = memory_session(drain=drain)
    await hello(client)
    await transaction(client, "alice@example.org")
    assert await client.code("DATA") == 354
    await client.send(b"first part\r\n")
    await trio.testing.wait_all_tasks_blocked()
    drain.start()
    await client.send(b"second part\r\n.\r\nNOOP\r\n")
    assert (await client.reply())[0] == 250
    assert (await client.reply())[0] == 421
    assert len(backend.delivered) == 1


async def test_connections_per_client_are_limited(memory_session: Start) -> None:
    limiter = ClientConnectionLimiter(max_per_client=1)
    first = memory_session(limiter=limiter)
    await hello(first)
    second = memory_session(limiter=limiter)
    code, lines = await second.reply()
    assert (code, lines[0].split()[0]) == (421, "4.7.0")
    assert limiter.statistics().connections == 1
    assert await first.code("QUIT") == 221
    await first.closed()
    await trio.testing.wait_all_tasks_blocked()
    assert limiter.statistics().connections == 0
    third = memory_session(limiter=limiter)
    assert (await third.reply())[0] == 220


async def test_serve_smtp_closes_the_stream_when_the_peer_vanishes(backend: DictBackend) -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    await client_stream.aclose()
    with trio.fail_after(5):
        await serve_smtp(server_stream, PEER, settings=make_settings(), backend=backend)


async def test_refusals_are_logged_with_their_reason(
    memory_session: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailhost.smtp")
    client = memory_session()
    await hello(client)
    await transaction(client)
    assert await client.code("RCPT TO:<x@elsewhere.example>") == 554
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "x@elsewhere.example" in refusals[0]
    assert "554 5.7.1 Relay access denied" in refusals[0]
    assert "client=192.0.2.10" in refusals[0]
