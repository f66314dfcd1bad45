"""Helpers for the outbound tests: aiosmtpd servers on 127.0.0.1 playing remote MXes and
smart hosts, a local-delivery fake that keeps what it is given, and a runner harness."""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trustme
from sinks import Sink

from store.clock import FixedClock
from transport.client import ClientTimeouts
from transport.delivery import (
    DeliverySettings,
    LocalDeliveryError,
    LocalOutcome,
    QueueRunner,
    RetrySchedule,
)
from transport.dns import FakeResolver
from transport.queue import Queue
from transport.routing import Router, SendConnector, StaticConnectors

LOCAL_DOMAIN = "local.test"
HOSTNAME = "mail.local.test"
FAST_TIMEOUTS = ClientTimeouts(
    connect=5,
    greeting=5,
    hello=5,
    starttls=5,
    auth=5,
    mail=5,
    rcpt=5,
    data_init=5,
    data_block=5,
    data_term=5,
    rset=5,
    quit=1,
)


class FakeLocal:
    """LocalDelivery for tests: `local.test` addresses are local; what arrives is kept."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, bytes]] = []
        self.fail_temporarily = 0

    async def __call__(self, recipient: str, message: bytes) -> LocalOutcome:
        if not recipient.endswith("@" + LOCAL_DOMAIN):
            return LocalOutcome.NOT_LOCAL
        if self.fail_temporarily:
            self.fail_temporarily -= 1
            raise LocalDeliveryError("mailbox locked")
        self.delivered.append((recipient, message))
        return LocalOutcome.DELIVERED


@pytest.fixture
def make_sink() -> Iterator[Callable[..., Sink]]:
    sinks: list[Sink] = []

    def make(**options: Any) -> Sink:
        sink = Sink(**options).start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.stop()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("smarthost.test", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@dataclass
class Harness:
    queue: Queue
    runner: QueueRunner
    clock: FixedClock
    local: FakeLocal
    resolver: FakeResolver

    async def settle(self) -> None:
        with trio.fail_after(20):
            await self.runner.wait_idle()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.runner.wake()
        await trio.testing.wait_all_tasks_blocked()
        await self.settle()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(time.time())


@pytest.fixture
def harness(
    tmp_path: Path, clock: FixedClock
) -> Callable[..., contextlib.AbstractAsyncContextManager[Harness]]:
    @contextlib.asynccontextmanager
    async def start(
        resolver: FakeResolver,
        connectors: tuple[SendConnector, ...],
        *,
        mx_port: int = 25,
        schedule: RetrySchedule | None = None,
        postmaster: str | None = f"postmaster@{LOCAL_DOMAIN}",
        signer: Any = None,
        **settings: Any,
    ) -> AsyncIterator[Harness]:
        queue = Queue(tmp_path / "queue", clock=clock)
        queue.open()
        router = Router(
            StaticConnectors(connectors), resolver, mx_port=mx_port, allow_local_addresses=True
        )
        local = FakeLocal()
        runner = QueueRunner(
            queue,
            router,
            settings=DeliverySettings(
                hostname=HOSTNAME,
                schedule=schedule or RetrySchedule(),
                timeouts=FAST_TIMEOUTS,
                postmaster=postmaster,
                connection_idle=0.05,
                **settings,
            ),
            local=local,
            clock=clock,
            signer=signer,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(runner.run)
            yield Harness(queue, runner, clock, local, resolver)
            nursery.cancel_scope.cancel()

    return start


@pytest.fixture(autouse=True)
def _transport_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mailhost")
