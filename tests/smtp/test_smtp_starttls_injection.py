"""STARTTLS command injection (CVE-2011-0411 and kin, checklist item 23).

Plaintext pipelined behind STARTTLS must never be executed: the core drops it when it
accepts STARTTLS, and the session then starts a fresh protocol state inside TLS.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

import pytest
import trio
from smtp_helpers import (
    HOSTNAME,
    TLS_EXTENSIONS,
    CoreDriver,
    SmtpTestClient,
    make_settings,
    tcp_server,
)

from protocols.smtp.core import Ehlo, Help, Mail, State
from protocols.smtp.fakes import DictBackend
from protocols.smtp.session import TlsContextProvider

INJECTIONS = [
    b"HELP\r\n",
    b"MAIL FROM:<attacker@evil.example>\r\nRCPT TO:<alice@example.org>\r\n",
    b"EHLO evil\r\n",
    b"HE",  # a partial line must go too
]


@pytest.mark.parametrize("injected", INJECTIONS, ids=repr)
def test_core_discards_plaintext_buffered_after_starttls(injected: bytes) -> None:
    d = CoreDriver()
    d.feed(b"EHLO client.example\r\nSTARTTLS\r\n" + injected)
    assert d.conn.state is State.TLS_STARTING
    assert d.conn.discarded_plaintext == len(injected)
    d.conn.tls_established(TLS_EXTENSIONS)
    log = d.feed(b"NOOP\r\n")
    assert [type(e).__name__ for e in log] == ["Noop"]
    assert sum(isinstance(e, Help | Mail) for e in d.log) == 0
    assert sum(isinstance(e, Ehlo) for e in d.log) == 1


def test_core_forgets_ehlo_after_tls() -> None:
    d = CoreDriver()
    d.feed(b"EHLO client.example\r\nSTARTTLS\r\n")
    d.conn.tls_established(TLS_EXTENSIONS)
    assert not d.conn.esmtp
    assert d.conn.helo_name is None
    assert d.feed(b"MAIL FROM:<>\r\n")[0].__class__.__name__ == "Refused"


async def starttls(client: SmtpTestClient, context: ssl.SSLContext) -> None:
    tls = trio.SSLStream(client.stream, context, server_hostname=HOSTNAME)
    await tls.do_handshake()
    assert not client.buffer, "the server said something after 220 in plaintext"
    client.stream = tls


@pytest.mark.parametrize("injected", INJECTIONS[:3], ids=repr)
async def test_session_executes_nothing_injected(
    memory_session: Callable[..., SmtpTestClient],
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
    backend: DictBackend,
    caplog: pytest.LogCaptureFixture,
    injected: bytes,
) -> None:
    client = memory_session(tls_context=tls_provider)
    assert (await client.reply())[0] == 220
    assert (await client.command("EHLO client.example"))[0] == 250
    caplog.set_level(logging.WARNING, logger="mailhost.smtp")
    await client.send(b"STARTTLS\r\n" + injected)  # one write, as the attack does
    assert (await client.reply())[0] == 220
    await starttls(client, client_ssl_context)
    # The first reply inside TLS answers our NOOP, not anything injected.
    assert await client.code("NOOP") == 250
    assert await client.code("MAIL FROM:<>") == 503  # EHLO forgotten (RFC 3207 4.2)
    code, lines = await client.command("EHLO client.example")
    assert code == 250
    assert "STARTTLS" not in lines
    assert "AUTH PLAIN LOGIN" in lines
    assert "command injection" in caplog.text
    assert backend.delivered == []


async def test_second_starttls_is_refused(
    memory_session: Callable[..., SmtpTestClient],
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
) -> None:
    client = memory_session(tls_context=tls_provider)
    await client.reply()
    await client.command("EHLO c")
    assert await client.code("STARTTLS") == 220
    await starttls(client, client_ssl_context)
    await client.command("EHLO c")
    assert await client.code("STARTTLS") == 503


async def test_injection_over_loopback(
    backend: DictBackend, tls_provider: TlsContextProvider, client_ssl_context: ssl.SSLContext
) -> None:
    async with tcp_server(make_settings(), backend, tls_context=tls_provider) as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = SmtpTestClient(stream)
        await client.reply()
        await client.command("EHLO client.example")
        await client.send(b"STARTTLS\r\nHELP\r\n")
        assert (await client.reply())[0] == 220
        try:
            await starttls(client, client_ssl_context)
        except trio.BrokenResourceError:
            # Had "HELP" arrived after the server started the handshake, it would have
            # been taken as TLS and the handshake would fail: also no injection.
            return
        assert await client.code("NOOP") == 250
        assert await client.code("QUIT") == 221
        await client.stream.aclose()
