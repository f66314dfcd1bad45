"""Python's smtplib against serve_smtp on a real loopback listener (127.0.0.1, port 0)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage

import pytest
import trio
from smtp_helpers import make_settings, tcp_server

from protocols.smtp.address import Address
from protocols.smtp.fakes import DictBackend
from protocols.smtp.session import ConnectorKind, TlsContextProvider


def message(subject: str = "hello", body: str = "Hi there.\n.leading dot\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@example.net"
    msg["To"] = "alice@example.org"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


async def test_delivery_to_one_and_several_local_users(backend: DictBackend) -> None:
    async with tcp_server(make_settings(), backend) as port:

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as smtp:
                refused = smtp.send_message(message("one"), to_addrs=["alice@example.org"])
                assert refused == {}
                refused = smtp.send_message(
                    message("two"),
                    to_addrs=["alice@example.org", "bob@example.org", "ghost@example.org"],
                )
                assert set(refused) == {"ghost@example.org"}
                assert refused["ghost@example.org"][0] == 550

        await trio.to_thread.run_sync(client)
    assert [len(m.envelope.recipients) for m in backend.delivered] == [1, 2]
    first = backend.delivered[0]
    assert b"Subject: one" in first.content
    assert b"\n.leading dot" in first.content
    assert first.envelope.helo == "client.example"
    assert first.envelope.client[0] == "127.0.0.1"


async def test_starttls_on_the_default_connector(
    backend: DictBackend, tls_provider: TlsContextProvider, client_ssl_context: ssl.SSLContext
) -> None:
    async with tcp_server(make_settings(), backend, tls_context=tls_provider) as port:

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as smtp:
                smtp.starttls(context=client_ssl_context)
                smtp.send_message(message(), to_addrs=["alice@example.org"])

        await trio.to_thread.run_sync(client)
    [delivered] = backend.delivered
    assert delivered.envelope.tls is not None
    assert delivered.envelope.tls.version in ("TLSv1.2", "TLSv1.3")
    assert delivered.envelope.protocol == "ESMTPS"


async def test_submission_with_starttls_and_spoofing_refused(
    backend: DictBackend, tls_provider: TlsContextProvider, client_ssl_context: ssl.SSLContext
) -> None:
    settings = make_settings(connector=ConnectorKind.CLIENT)
    async with tcp_server(settings, backend, tls_context=tls_provider) as port:

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example") as smtp:
                smtp.starttls(context=client_ssl_context)
                smtp.login("alice", "correct horse")
                with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                    smtp.sendmail(
                        "bob@example.org", ["bob@example.org"], b"Subject: x\r\n\r\nx\r\n"
                    )
                assert refused.value.smtp_code == 553
                smtp.sendmail(
                    "alice@example.org",
                    ["bob@example.org", "friend@elsewhere.example"],
                    b"Subject: x\r\n\r\nx\r\n",
                )

        await trio.to_thread.run_sync(client)
    [delivered] = backend.delivered
    assert delivered.envelope.protocol == "ESMTPSA"
    assert delivered.envelope.sender == Address("alice", "example.org")


async def test_implicit_tls_submission(
    backend: DictBackend, tls_provider: TlsContextProvider, client_ssl_context: ssl.SSLContext
) -> None:
    settings = make_settings(connector=ConnectorKind.CLIENT, implicit_tls=True)
    async with tcp_server(settings, backend, tls_context=tls_provider) as port:

        def client() -> None:
            with smtplib.SMTP_SSL(
                "127.0.0.1", port, local_hostname="client.example", context=client_ssl_context
            ) as smtp:
                smtp.login("bob", "battery staple")
                smtp.sendmail("bob@example.org", ["alice@example.org"], b"Subject: x\r\n\r\nx\r\n")

        await trio.to_thread.run_sync(client)
    [delivered] = backend.delivered
    assert delivered.envelope.auth_user == "bob"
    assert delivered.envelope.protocol == "ESMTPSA"


async def test_anonymous_relay_is_refused(backend: DictBackend) -> None:
    async with tcp_server(make_settings(), backend) as port:

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                    smtp.sendmail("a@example.net", ["victim@elsewhere.example"], b"x")
                assert refused.value.recipients["victim@elsewhere.example"][0] == 554

        await trio.to_thread.run_sync(client)
    assert backend.delivered == []


async def test_size_is_announced_and_enforced(backend: DictBackend) -> None:
    async with tcp_server(make_settings(max_message_size=2000), backend) as port:

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                smtp.ehlo()
                assert smtp.esmtp_features["size"] == "2000"
                with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                    smtp.sendmail("a@example.net", ["alice@example.org"], b"x" * 3000)
                assert refused.value.smtp_code == 552

        await trio.to_thread.run_sync(client)
    assert backend.delivered == []


async def test_smtputf8_addresses(backend: DictBackend) -> None:
    backend.mailboxes = backend.mailboxes | {"jörg@example.org"}
    async with tcp_server(make_settings(), backend) as port:

        def client() -> None:
            with smtplib.SMTP("127.0.0.1", port) as smtp:
                smtp.ehlo()
                smtp.sendmail(
                    "zoë@bücher.example",
                    ["jörg@example.org"],
                    "Subject: grüße\r\n\r\nhallo\r\n".encode(),
                    mail_options=["SMTPUTF8", "BODY=8BITMIME"],
                )

        await trio.to_thread.run_sync(client)
    [delivered] = backend.delivered
    assert delivered.envelope.protocol == "UTF8SMTP"
    assert delivered.envelope.sender == Address("zoë", "bücher.example")
