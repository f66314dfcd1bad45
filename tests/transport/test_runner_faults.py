"""One bad message never takes the queue runner down: an unexpected exception in a local
delivery, in a destination worker or in the wake-up FIFO is logged with its traceback,
the recipients concerned are deferred (retried with the normal backoff), and every other
message is delivered as usual."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from mailhost.directory import Directory
from mailhost.outbound import StoreLocalDelivery
from store.store import Store
from transport.dns import FakeResolver, MxRecord
from transport.envelope import RecipientSpec, RecipientState
from transport.routing import SendConnector

MX = SendConnector(name="Internet", address_spaces=("*",))
LOCAL_DOMAIN = "local.test"  # what the harness's local delivery takes
SENDER = "sender@remote.test"
ALICE = f"alice@{LOCAL_DOMAIN}"
BOB = f"bob@{LOCAL_DOMAIN}"


def message(n: int) -> bytes:
    return (
        f"From: <{SENDER}>\r\nSubject: {n}\r\nMessage-ID: <{n}@remote.test>\r\n\r\nhi\r\n".encode()
    )


class FailingDiskStore(Store):
    """A store whose disk under the `broken` mailboxes fails with EIO in a way deliver()
    lets escape instead of turning it into a per-mailbox result (a store bug)."""

    def __init__(self, root: Path, **options: Any) -> None:
        super().__init__(root, **options)
        self.broken: set[str] = set()

    def deliver(self, message: Any, mailbox_ids: Iterable[str], *args: Any, **kw: Any) -> Any:
        ids = list(mailbox_ids)
        if self.broken.intersection(ids):
            raise OSError(errno.EIO, "Input/output error")
        return super().deliver(message, ids, *args, **kw)


class FaultyResolver(FakeResolver):
    """DNS from tables, except that an MX lookup of a `broken` domain raises what the
    Resolver protocol does not allow (a bug in the DNS library, say)."""

    def __init__(self, **tables: Any) -> None:
        super().__init__(**tables)
        self.broken: set[str] = set()

    async def mx(self, name: str) -> list[MxRecord]:
        if name in self.broken:
            raise ValueError(f"unexpected answer for {name}")
        return await super().mx(name)


def unexpected_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "mailhost.delivery" and r.levelno == logging.ERROR and r.exc_info
    ]


async def test_a_store_error_in_one_local_delivery_defers_only_that_recipient(
    harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = Directory(tmp_path / "directory.sqlite3")
    directory.add_domain(LOCAL_DOMAIN)
    alice = directory.add_user(ALICE, "correct horse battery")
    bob = directory.add_user(BOB, "correct horse battery")
    store = FailingDiskStore(tmp_path / "mailboxes", hostname="mail.local.test")
    store.broken.add(bob.guid)

    def inbox(guid: str) -> int:
        return store.open_mailbox(guid).inbox.status().messages

    async with harness(FakeResolver(), (MX,)) as h:
        h.runner.local = StoreLocalDelivery(directory, store)
        both = h.queue.enqueue(
            message(1),
            sender=SENDER,
            recipients=[RecipientSpec(ALICE, local=True), RecipientSpec(BOB, local=True)],
        )
        h.queue.enqueue(message(2), sender=SENDER, recipients=[RecipientSpec(ALICE, local=True)])
        await h.settle()

        assert inbox(alice.guid) == 2  # the other message, and the other recipient, went
        assert h.queue.ids() == [both.id]
        stored = h.queue.get(both.id)
        assert stored.attempts == 1
        assert stored.next_attempt == h.clock.now() + 300  # the normal first backoff
        done, deferred = stored.recipients
        assert done.state is RecipientState.DELIVERED
        assert deferred.state is RecipientState.DEFERRED
        assert deferred.diagnostic is not None and deferred.diagnostic.status == "4.3.0"
        assert "Input/output error" not in deferred.diagnostic.text  # details stay in the log
        [error] = unexpected_errors(caplog)
        assert error.exc_info is not None and isinstance(error.exc_info[1], OSError)
        assert BOB in error.getMessage() and both.id in error.getMessage()

        store.broken.clear()  # the disk is replaced; the retry comes with the backoff
        await h.advance(300)
        assert h.queue.statistics().messages == 0
    assert inbox(bob.guid) == 1
    assert inbox(alice.guid) == 2  # her copy was recorded, so the retry did not repeat it


async def test_an_error_in_a_destination_worker_defers_only_that_job(
    harness, make_sink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink()
    resolver = FaultyResolver(
        mx={"remote.test": [(10, "mx.remote.test")], "broken.test": [(10, "mx.broken.test")]},
        a={"mx.remote.test": ["127.0.0.1"], "mx.broken.test": ["127.0.0.1"]},
    )
    resolver.broken.add("broken.test")
    # One worker per destination: after the failed job, the same worker takes the next.
    async with harness(resolver, (MX,), mx_port=sink.port, max_per_destination=1) as h:
        good = h.queue.enqueue(
            message(1), sender=SENDER, recipients=[RecipientSpec("a@remote.test")]
        )
        bad = h.queue.enqueue(
            message(2), sender=SENDER, recipients=[RecipientSpec("b@broken.test")]
        )
        await h.settle()

        assert sink.recipients() == ["a@remote.test"]
        assert h.queue.ids() == [bad.id]
        assert good.id not in h.queue.ids()
        stored = h.queue.get(bad.id)
        [recipient] = stored.recipients
        assert recipient.state is RecipientState.DEFERRED
        assert recipient.diagnostic is not None and recipient.diagnostic.status == "4.3.0"
        assert stored.next_attempt == h.clock.now() + 300
        [error] = unexpected_errors(caplog)
        assert error.exc_info is not None and isinstance(error.exc_info[1], ValueError)

        resolver.broken.clear()
        await h.advance(300)  # the runner is still there to retry it
        assert h.queue.statistics().messages == 0
    assert sorted(sink.recipients()) == ["a@remote.test", "b@broken.test"]


async def test_a_corrupt_envelope_that_breaks_the_retry_computation_is_set_aside(
    harness, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness(FakeResolver(), (MX,)) as h:
        corrupt = h.queue.enqueue(
            message(1), sender=None, recipients=[RecipientSpec(ALICE, local=True)]
        )
        # Readable and well typed, but attempts + 1 no longer fits msgpack's 64 bits, so
        # recording the attempt (and its next retry time) raises OverflowError.
        h.queue.modify(corrupt.id, lambda e: replace(e, attempts=2**64 - 1))
        h.queue.enqueue(message(2), sender=None, recipients=[RecipientSpec(ALICE, local=True)])
        # Not settle(): the corrupt entry stays due, set aside for ERROR_PENALTY.
        with trio.fail_after(5):
            while not h.local.delivered or h.runner.statistics().active_messages:
                await trio.sleep(0.005)
        assert len(h.local.delivered) == 1  # the other message
        assert h.queue.ids() == [corrupt.id]
        [error] = unexpected_errors(caplog)
        assert error.exc_info is not None and isinstance(error.exc_info[1], OverflowError)
        assert h.runner.statistics().active_messages == 0


async def test_a_wakeup_path_that_is_not_a_fifo_leaves_the_runner_running(
    harness, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "queue"
    spool.mkdir()
    (spool / "wakeup").write_bytes(b"")  # restored from a backup as a plain file, say
    async with harness(FakeResolver(), (MX,)) as h:
        h.queue.enqueue(message(1), sender=None, recipients=[RecipientSpec(ALICE, local=True)])
        await h.settle()
        assert h.queue.statistics().messages == 0
    assert len(h.local.delivered) == 1
    assert "is not a FIFO; relying on rescans" in caplog.text
