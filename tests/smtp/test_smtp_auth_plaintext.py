"""Plaintext authentication (checklist item 32) and AUTH behaviour per connector.

AUTH is never offered before TLS; on the client connector (587) MAIL needs TLS and
AUTH; on 465 TLS comes first and AUTH is offered at once. SASL framing errors (item 36)
get clean replies.
"""

from __future__ import annotations

import base64
import smtplib
import ssl
from collections.abc import Callable

import pytest
import trio
from smtp_helpers import HOSTNAME, SmtpTestClient, make_settings, tcp_server

from protocols.smtp.fakes import DictBackend
from protocols.smtp.session import ConnectorKind, TlsContextProvider

SUBMISSION = make_settings(connector=ConnectorKind.CLIENT)


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


async def starttls(client: SmtpTestClient, context: ssl.SSLContext) -> None:
    assert await client.code("STARTTLS") == 220
    tls = trio.SSLStream(client.stream, context, server_hostname=HOSTNAME)
    await tls.do_handshake()
    client.stream = tls


async def test_submission_refuses_everything_useful_before_tls(
    memory_session: Callable[..., SmtpTestClient], tls_provider: TlsContextProvider
) -> None:
    client = memory_session(SUBMISSION, tls_context=tls_provider)
    await client.reply()
    code, lines = await client.command("EHLO client.example")
    assert code == 250
    assert "STARTTLS" in lines
    assert not any(line.startswith("AUTH") for line in lines)
    assert (await client.command("AUTH PLAIN " + plain("alice", "correct horse")))[0] == 538
    assert (await client.command("AUTH LOGIN"))[0] == 538
    code, lines = await client.command("MAIL FROM:<alice@example.org>")
    assert (code, lines[0].split()[0]) == (530, "5.7.0")
    assert "STARTTLS" in lines[0]


async def test_submission_after_tls_needs_auth_then_works(
    memory_session: Callable[..., SmtpTestClient],
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
    backend: DictBackend,
) -> None:
    client = memory_session(SUBMISSION, tls_context=tls_provider)
    await client.reply()
    await client.command("EHLO client.example")
    await starttls(client, client_ssl_context)
    code, lines = await client.command("EHLO client.example")
    assert "AUTH PLAIN LOGIN" in lines
    assert "STARTTLS" not in lines
    code, lines = await client.command("MAIL FROM:<alice@example.org>")
    assert (code, lines[0]) == (530, "5.7.0 Authentication required")
    assert await client.code("AUTH PLAIN " + plain("alice", "wrong")) == 535
    assert await client.code("AUTH PLAIN " + plain("alice", "correct horse")) == 235
    assert await client.code("AUTH PLAIN " + plain("alice", "correct horse")) == 503
    assert await client.code("MAIL FROM:<bob@example.org>") == 553  # spoofing (item 25)
    assert await client.code("MAIL FROM:<alice@example.org>") == 250
    assert await client.code("RCPT TO:<someone@elsewhere.example>") == 250  # may relay
    assert await client.code("RCPT TO:<bob@example.org>") == 250
    assert await client.code("DATA") == 354
    assert await client.code(b"Subject: hi\r\n\r\nhello\r\n.") == 250
    [message] = backend.delivered
    assert message.envelope.auth_user == "alice"
    assert message.envelope.protocol == "ESMTPSA"
    assert message.envelope.tls is not None
    assert backend.auth_attempts == [("alice", False), ("alice", True)]


async def test_login_mechanism_and_cancel(
    memory_session: Callable[..., SmtpTestClient],
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
) -> None:
    client = memory_session(SUBMISSION, tls_context=tls_provider)
    await client.reply()
    await client.command("EHLO c")
    await starttls(client, client_ssl_context)
    await client.command("EHLO c")
    assert await client.command("AUTH LOGIN") == (334, ["VXNlcm5hbWU6"])
    assert await client.command(base64.b64encode(b"bob")) == (334, ["UGFzc3dvcmQ6"])
    assert (await client.command("*"))[0] == 501  # RFC 4954 4: cancelled
    assert await client.code("AUTH LOGIN") == 334
    assert await client.code(base64.b64encode(b"bob")) == 334
    assert await client.code(base64.b64encode(b"battery staple")) == 235


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("AUTH PLAIN !!!!", (501, "5.5.2")),
        ("AUTH PLAIN " + base64.b64encode(b"no-separators").decode(), (501, "5.5.2")),
        ("AUTH PLAIN " + base64.b64encode(b"\0alice\0pw\0x").decode(), (501, "5.5.2")),
        ("AUTH PLAIN " + plain("a" * 300, "pw"), (501, "5.5.2")),
        ("AUTH PLAIN " + plain("bob", "battery staple", authzid="alice"), (535, "5.7.8")),
        ("AUTH DIGEST-MD5", (504, "5.5.4")),
        ("AUTH", (501, "5.5.4")),
    ],
)
async def test_sasl_errors_get_clean_replies(
    memory_session: Callable[..., SmtpTestClient],
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
    line: str,
    expected: tuple[int, str],
) -> None:
    client = memory_session(SUBMISSION, tls_context=tls_provider)
    await client.reply()
    await client.command("EHLO c")
    await starttls(client, client_ssl_context)
    await client.command("EHLO c")
    code, lines = await client.command(line)
    assert (code, lines[0].split()[0]) == expected
    assert await client.code("NOOP") == 250  # the session goes on


async def test_default_connector_offers_auth_only_after_tls(
    memory_session: Callable[..., SmtpTestClient],
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
) -> None:
    client = memory_session(make_settings(), tls_context=tls_provider)
    await client.reply()
    _, lines = await client.command("EHLO c")
    assert not any(line.startswith("AUTH") for line in lines)
    assert await client.code("AUTH PLAIN " + plain("alice", "correct horse")) == 538
    assert await client.code("MAIL FROM:<x@elsewhere.example>") == 250  # anonymous is fine
    assert await client.code("RSET") == 250
    await starttls(client, client_ssl_context)
    _, lines = await client.command("EHLO c")
    assert "AUTH PLAIN LOGIN" in lines
    assert await client.code("AUTH PLAIN " + plain("alice", "correct horse")) == 235


async def test_default_connector_without_anonymous_needs_auth(
    memory_session: Callable[..., SmtpTestClient],
) -> None:
    client = memory_session(make_settings(anonymous_allowed=False))
    await client.reply()
    await client.command("EHLO c")
    code, lines = await client.command("MAIL FROM:<x@elsewhere.example>")
    assert (code, lines[0]) == (530, "5.7.0 Authentication required")


async def test_implicit_tls_offers_auth_at_once(
    memory_session: Callable[..., SmtpTestClient],
    tls_provider: TlsContextProvider,
    client_ssl_context: ssl.SSLContext,
) -> None:
    client = memory_session(
        make_settings(connector=ConnectorKind.CLIENT, implicit_tls=True), tls_context=tls_provider
    )
    tls = trio.SSLStream(client.stream, client_ssl_context, server_hostname=HOSTNAME)
    await tls.do_handshake()
    client.stream = tls
    assert (await client.reply())[0] == 220
    _, lines = await client.command("EHLO c")
    assert "AUTH PLAIN LOGIN" in lines
    assert "STARTTLS" not in lines
    assert await client.code("AUTH PLAIN " + plain("alice", "correct horse")) == 235


async def test_smtplib_cannot_login_before_starttls(
    backend: DictBackend, tls_provider: TlsContextProvider, client_ssl_context: ssl.SSLContext
) -> None:
    async with tcp_server(SUBMISSION, backend, tls_context=tls_provider) as port:

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as smtp:
                smtp.ehlo()
                with pytest.raises(smtplib.SMTPNotSupportedError):
                    smtp.login("alice", "correct horse")
                with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                    smtp.sendmail("alice@example.org", ["bob@example.org"], b"x")
                assert refused.value.smtp_code == 530
                smtp.starttls(context=client_ssl_context)
                smtp.login("alice", "correct horse")
                smtp.sendmail("alice@example.org", ["bob@example.org"], b"Subject: x\r\n\r\nhi\r\n")

        await trio.to_thread.run_sync(client)
    assert [m.envelope.auth_user for m in backend.delivered] == ["alice"]
