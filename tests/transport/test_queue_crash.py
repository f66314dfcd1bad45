"""kill -9 with messages in the queue (reliability items D.2 and D.7): after a restart every
message is delivered or still queued, none is lost, duplicates are limited to the deliveries
that were in flight, and the attempts recorded before the crash prevent a retry storm."""

from __future__ import annotations

import email
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from transport.envelope import RecipientSpec
from transport.queue import Queue

CHILD = r"""
import sys, time
from pathlib import Path
import trio
from transport.delivery import DeliverySettings, LocalOutcome, QueueRunner
from transport.dns import FakeResolver
from transport.envelope import RecipientSpec
from transport.queue import Queue
from transport.routing import Router, SendConnector, StaticConnectors

folder, port, mode, offset = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])


class OffsetClock:
    def now(self):
        return time.time() + offset


class NothingLocal:
    async def __call__(self, recipient, message):
        return LocalOutcome.NOT_LOCAL


queue = Queue(folder, clock=OffsetClock())
if mode == "enqueue":
    queue.open()
    for i in range(100000):
        message = f"Message-ID: <e{i}@local.test>\r\nSubject: {i}\r\n\r\n".encode() + b"x" * 2000
        entry = queue.enqueue(message, sender="a@local.test", recipients=[RecipientSpec(f"r{i}@remote.test")])
        print(entry.id, flush=True)
resolver = FakeResolver(mx={"remote.test": [(10, "mx.remote.test")]}, a={"mx.remote.test": ["127.0.0.1"]})
router = Router(StaticConnectors((SendConnector(name="Internet"),)), resolver, mx_port=port, allow_local_addresses=True)
settings = DeliverySettings(hostname="mail.local.test", max_per_destination=4, connection_idle=0.1)
runner = QueueRunner(queue, router, settings=settings, local=NothingLocal(), clock=OffsetClock())


async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        print("started", flush=True)
        if mode == "drain":
            await runner.wait_idle()
            nursery.cancel_scope.cancel()


trio.run(main)
"""


def child(
    tmp_path: Path, folder: Path, port: int, mode: str, offset: float = 0.0
) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return subprocess.Popen(
        [sys.executable, str(script), str(folder), str(port), mode, str(offset)],
        stdout=subprocess.PIPE if mode == "enqueue" else subprocess.DEVNULL,
        text=True,
    )


def message_ids(sink) -> list[str]:
    return [email.message_from_bytes(m.content)["Message-ID"] for m in sink.messages]


async def test_kill_9_during_delivery_loses_nothing(make_sink, tmp_path: Path) -> None:
    sink = make_sink()
    sink.delay = 0.05  # keep deliveries in flight when the kill comes
    folder = tmp_path / "queue"
    queue = Queue(folder)
    queue.open()
    expected = set()
    for i in range(40):
        message = f"Message-ID: <m{i}@local.test>\r\nSubject: {i}\r\n\r\nbody\r\n".encode()
        queue.enqueue(
            message, sender="a@local.test", recipients=[RecipientSpec(f"r{i}@remote.test")]
        )
        expected.add(f"<m{i}@local.test>")

    runner = child(tmp_path, folder, sink.port, "run")
    try:
        with trio.fail_after(30):
            while len(sink.messages) < 8:
                await trio.sleep(0.01)
        runner.send_signal(signal.SIGKILL)
    finally:
        runner.kill()
        runner.wait()
    delivered_before = set(message_ids(sink))
    after_crash = Queue(folder)
    report = after_crash.open()
    assert report.quarantined == ()
    queued = after_crash.entries()
    queued_ids = {
        email.message_from_bytes(after_crash.read_message(e.id))["Message-ID"] for e in queued
    }
    assert delivered_before | queued_ids == expected  # nothing lost at the moment of the kill
    in_flight = [e for e in queued if e.attempts > 0]
    for entry in in_flight:  # the attempt was recorded before it was made: no retry storm
        assert entry.last_attempt is not None
        assert entry.next_attempt >= entry.last_attempt + 300
    assert in_flight  # attempts were under way

    # Restart an hour later, so the interrupted attempts are due again, and drain.
    again = child(tmp_path, folder, sink.port, "drain", offset=3600)
    try:
        assert again.wait(timeout=60) == 0
    finally:
        again.kill()
    ids = message_ids(sink)
    assert set(ids) == expected
    duplicates = {i for i in ids if ids.count(i) > 1}
    # At-least-once: only a transaction between the remote 250 and our bookkeeping can
    # repeat, at most one per connection (max_per_destination = 4).
    assert len(duplicates) <= 4
    assert duplicates <= delivered_before
    final = Queue(folder)
    assert final.open().loaded == 0


async def test_kill_9_during_enqueue_keeps_every_acknowledged_message(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    Queue(folder).open()
    writer = child(tmp_path, folder, 1, "enqueue")
    acknowledged = []
    try:
        assert writer.stdout is not None
        deadline = time.monotonic() + 30
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            acknowledged.append(writer.stdout.readline().strip())
        writer.send_signal(signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    queue = Queue(folder)
    report = queue.open()
    assert report.quarantined == ()
    present = set(queue.ids())
    assert set(acknowledged) <= present  # acknowledged means durable
    for id in acknowledged:
        entry = queue.get(id)
        body = queue.read_message(id)
        assert len(body) == entry.size
        assert body.endswith(b"x" * 2000)
