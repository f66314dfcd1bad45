"""Fixtures for the ActiveSync front-end tests: a TLS test PKI, and `make_env` which starts
the ASGI app on 127.0.0.1 over TLS with dependencies built from data."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from eas_env import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    BOB_PASSWORD,
    CAROL,
    CAROL_PASSWORD,
    DIRECTORY,
    EasEnv,
    default_settings,
)
from eas_server import (
    Clock,
    FakeChecker,
    FakeRecipients,
    MutablePolicySource,
    ServerThread,
)

from protocols.activesync.app import make_app
from protocols.activesync.commands import TrustStore, default_commands
from protocols.activesync.context import ActiveSyncSettings
from protocols.activesync.devices import DeviceRegistry, MemoryDeviceRegistry


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA(key_type=trustme.KeyType.ECDSA)


@pytest.fixture(scope="session")
def server_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate = tls_ca.issue_cert("localhost", "127.0.0.1", key_type=trustme.KeyType.ECDSA)
    certificate.configure_cert(context)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


@pytest.fixture(scope="session")
def client_context(tls_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def ca_file(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def make_env(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> Iterator[Any]:
    """`make_env(settings=..., registry=..., commands=..., trust=..., drain=...)` -> a
    running EasEnv."""
    running: list[EasEnv] = []

    def start(
        *,
        settings: ActiveSyncSettings | None = None,
        registry: DeviceRegistry | None = None,
        commands: Any = None,
        trust: TrustStore | None = None,
        accepted_domain: Any = None,
        drain: Any = None,
    ) -> EasEnv:
        checker = FakeChecker(
            [
                (ALICE, "alice", ALICE_PASSWORD),
                (BOB, "bob", BOB_PASSWORD),
                (CAROL, "carol", CAROL_PASSWORD),
            ]
        )
        devices = registry if registry is not None else MemoryDeviceRegistry()
        policies = MutablePolicySource()
        recipients = FakeRecipients(DIRECTORY)
        clock = Clock()
        current = settings or default_settings()
        table = (
            commands
            if commands is not None
            else default_commands(recipients=recipients, trust=trust or TrustStore.of([]))
        )
        app = make_app(
            settings=lambda: current,
            checker=checker,
            devices=devices,
            policies=policies,
            commands=table,
            clock=clock,
            accepted_domain=accepted_domain,
            drain=drain,
        )
        server = ServerThread(app, server_context)
        server.__enter__()
        env = EasEnv(app, server, checker, devices, policies, recipients, clock, client_context)
        running.append(env)
        return env

    yield start
    for env in running:
        for client in env.clients:
            client.close()
        env.server.__exit__(None, None, None)
        if env.server.error is not None:
            raise env.server.error


@pytest.fixture
def eas(make_env: Any) -> EasEnv:
    env: EasEnv = make_env()
    return env
