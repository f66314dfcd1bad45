"""The queue runner's memory bound: an attempt reads its whole message into memory, so the
messages in flight share a byte budget (max_active_bytes) besides the count limit."""

from __future__ import annotations

import trio

from transport.delivery import (
    MAX_ACTIVE_BYTES,
    DeliverySettings,
    LocalDelivery,
    LocalOutcome,
    QueueRunner,
)
from transport.dns import FakeResolver
from transport.envelope import RecipientSpec
from transport.routing import SendConnector

MX = SendConnector(name="Internet", address_spaces=("*",))
LOCAL_DOMAIN = "local.test"  # what the harness's local delivery takes
ALICE = f"alice@{LOCAL_DOMAIN}"


class GatedLocal:
    """Holds every local delivery at a gate before handing it on, counting how many
    messages wait there at once and the content bytes the runner reports in flight."""

    def __init__(self, runner: QueueRunner) -> None:
        self.runner = runner
        self.inner: LocalDelivery = runner.local
        self.delivered: list[bytes] = []
        self.gate = trio.Event()
        self.inside = 0
        self.peak = 0
        self.peak_bytes = 0

    async def __call__(self, recipient: str, message: bytes) -> LocalOutcome:
        self.inside += 1
        self.peak = max(self.peak, self.inside)
        self.peak_bytes = max(self.peak_bytes, self.runner.statistics().active_bytes)
        try:
            await self.gate.wait()
        finally:
            self.inside -= 1
        outcome = await self.inner(recipient, message)
        self.delivered.append(message)
        return outcome


def message_of(size: int, n: int) -> bytes:
    head = f"Subject: {n}\r\nMessage-ID: <{n}@{LOCAL_DOMAIN}>\r\n\r\n".encode()
    return head + b"x" * (size - len(head))


async def wait_inside(local: GatedLocal, count: int) -> None:
    with trio.fail_after(5):
        while local.inside < count:
            await trio.sleep(0.005)


def test_the_budget_defaults_to_256_mib() -> None:
    assert MAX_ACTIVE_BYTES == 256 * 1024 * 1024
    assert DeliverySettings(hostname="h").max_active_bytes == MAX_ACTIVE_BYTES


async def test_messages_in_flight_share_a_byte_budget(harness) -> None:
    size, budget = 40_000, 100_000  # two fit, a third would not
    async with harness(FakeResolver(), (MX,), max_active_bytes=budget) as h:
        local = GatedLocal(h.runner)
        h.runner.local = local
        for n in range(5):  # all due at once, far under max_active_messages
            h.queue.enqueue(
                message_of(size, n), sender=None, recipients=[RecipientSpec(ALICE, local=True)]
            )
        await wait_inside(local, 2)
        # Every due message that fits was started in one pass: what is in flight now
        # stays so until one of them finishes.
        stats = h.runner.statistics()
        assert (stats.active_messages, stats.active_bytes) == (2, 2 * size)
        local.gate.set()
        await h.settle()
        assert h.queue.statistics().messages == 0
        assert h.runner.statistics().active_bytes == 0
    assert len(local.delivered) == 5
    assert local.peak == 2
    assert local.peak_bytes <= budget


async def test_a_message_larger_than_the_budget_goes_alone(harness) -> None:
    budget = 10_000
    async with harness(FakeResolver(), (MX,), max_active_bytes=budget) as h:
        local = GatedLocal(h.runner)
        h.runner.local = local
        for n, size in enumerate((50_000, 1_000, 1_000)):  # oldest first
            h.queue.enqueue(
                message_of(size, n), sender=None, recipients=[RecipientSpec(ALICE, local=True)]
            )
            h.clock.advance(1)
        await wait_inside(local, 1)
        stats = h.runner.statistics()
        assert (stats.active_messages, stats.active_bytes) == (1, 50_000)
        local.gate.set()
        await h.settle()
        assert h.queue.statistics().messages == 0
    assert [len(m) for m in local.delivered] == [50_000, 1_000, 1_000]
    assert local.peak_bytes == 50_000  # never accompanied; the small ones went together after
