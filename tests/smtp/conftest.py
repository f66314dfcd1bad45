"""Fixtures for the SMTP tests: certificates, a data-built backend, in-memory sessions."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from smtp_helpers import HOSTNAME, PEER, SmtpTestClient, make_settings

from protocols.connection import Drain
from protocols.smtp.fakes import DictBackend
from protocols.smtp.session import SmtpSettings, TlsContextProvider, serve_smtp


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture(scope="session")
def server_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert = tls_ca.issue_cert(HOSTNAME, "localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    cert.configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture
def tls_provider(server_ssl_context: ssl.SSLContext) -> TlsContextProvider:
    return lambda: server_ssl_context


@pytest.fixture
def backend() -> DictBackend:
    """Two users at example.org; example.org is ours, everything else is remote."""
    return DictBackend(
        passwords={"alice": "correct horse", "bob": "battery staple"},
        addresses={
            "alice": frozenset({"alice@example.org"}),
            "bob": frozenset({"bob@example.org"}),
        },
        local_domains=frozenset({"example.org"}),
        mailboxes=frozenset({"alice@example.org", "bob@example.org"}),
    )


@pytest.fixture
def memory_session(nursery: trio.Nursery, backend: DictBackend) -> Callable[..., SmtpTestClient]:
    """Start serve_smtp on one end of a memory stream pair; return a client on the other."""

    def start(
        settings: SmtpSettings | None = None,
        *,
        tls_context: TlsContextProvider | None = None,
        drain: Drain | None = None,
        session_backend: Any = None,
        **kwargs: Any,
    ) -> SmtpTestClient:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(
            partial(
                serve_smtp,
                server_stream,
                PEER,
                settings=settings or make_settings(),
                backend=session_backend or backend,
                tls_context=tls_context,
                drain=drain,
                **kwargs,
            )
        )
        return SmtpTestClient(client_stream)

    return start
