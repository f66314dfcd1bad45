"""Outbound queue throughput: messages per second from enqueue to delivered at a loopback sink.

    .venv/bin/python -m bench.queue [--messages 2000] [--size 10240] [--destinations 1,20]
                                    [--senders 20] [--sink aiosmtpd|smtp-sink]

Each run makes a fresh spool (durable writes, fsync on), starts the queue runner, and has
`--senders` tasks enqueue the messages through worker threads, as SMTP sessions would,
while the runner delivers them over SMTP to a sink on 127.0.0.1. With N destinations the
recipients' domains d0.test ... d<N-1>.test each get an MX record pointing at the sink, so
the runner keeps a separate set of connections per destination. The clock stops when the
runner has seen the sink's 250 for every message and the spool is empty.

The sink is aiosmtpd in a process of its own (it answers 250 to everything), or
Postfix's smtp-sink when `--sink smtp-sink` is given and the tool is installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from transport.delivery import DeliverySettings, LocalOutcome, QueueRunner
from transport.dns import FakeResolver
from transport.envelope import RecipientSpec
from transport.queue import Queue
from transport.routing import Router, SendConnector, StaticConnectors


class _NothingLocal:
    async def __call__(self, recipient: str, message: bytes) -> LocalOutcome:
        return LocalOutcome.NOT_LOCAL


_AIOSMTPD_SINK = r"""
import sys, threading
from aiosmtpd.controller import Controller


class Handler:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 ok"


class Ephemeral(Controller):
    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


controller = Ephemeral(Handler(), hostname="127.0.0.1", port=0)
controller.start()
print(controller.port, flush=True)
sys.stdin.read()
controller.stop()
"""


class _AiosmtpdSink:
    """aiosmtpd in a process of its own, so it does not share our interpreter's GIL."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _AIOSMTPD_SINK],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())
        self.name = "aiosmtpd 1.4 sink (separate process)"

    def stop(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)
        self.process.stdout.close()


class _PostfixSink:
    def __init__(self) -> None:
        tool = shutil.which("smtp-sink")
        if tool is None:
            raise SystemExit("smtp-sink not found (Debian package postfix)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [tool, "-u", "nobody", f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        self.name = "Postfix smtp-sink"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def _message(i: int, size: int) -> bytes:
    head = (
        f"From: bench@local.test\r\nTo: r{i}@dest.test\r\nSubject: bench {i}\r\n"
        f"Message-ID: <bench-{i}@local.test>\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * max(0, (size - len(head)) // len(line))
    return head + body


async def _run(
    messages: int, size: int, destinations: int, senders: int, port: int, preload: bool
) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    try:
        queue = Queue(folder / "queue")
        domains = [f"d{i}.test" for i in range(destinations)]
        resolver = FakeResolver(
            mx={d: [(10, f"mx.{d}")] for d in domains},
            a={f"mx.{d}": ["127.0.0.1"] for d in domains},
        )
        router = Router(
            StaticConnectors((SendConnector(name="Internet"),)),
            resolver,
            mx_port=port,
            allow_local_addresses=True,
        )
        runner = QueueRunner(
            queue,
            router,
            settings=DeliverySettings(hostname="bench.local.test"),
            local=_NothingLocal(),
        )
        payloads = [_message(i, size) for i in range(messages)]
        enqueue_times: list[float] = []
        limiter = trio.CapacityLimiter(senders)
        if preload:
            queue.open()
            for i in range(messages):
                queue.enqueue(
                    payloads[i],
                    sender="bench@local.test",
                    recipients=[RecipientSpec(f"r{i}@{domains[i % destinations]}")],
                )
            enqueue_times.append(0.0)
        async with trio.open_nursery() as nursery:
            start = time.perf_counter()
            await nursery.start(runner.run)

            async def sender(first: int) -> None:
                for i in range(first, messages, senders):
                    domain = domains[i % destinations]
                    t0 = time.perf_counter()
                    await trio.to_thread.run_sync(
                        lambda i=i, domain=domain: queue.enqueue(
                            payloads[i],
                            sender="bench@local.test",
                            recipients=[RecipientSpec(f"r{i}@{domain}")],
                        ),
                        limiter=limiter,
                    )
                    enqueue_times.append(time.perf_counter() - t0)

            async with trio.open_nursery() as senders_nursery:
                for first in range(senders if not preload else 0):
                    senders_nursery.start_soon(sender, first)
            enqueued = time.perf_counter() - start
            while runner.statistics().delivered < messages:
                await trio.sleep(0.02)
            await runner.wait_idle()
            elapsed = time.perf_counter() - start
            stats = runner.statistics()
            nursery.cancel_scope.cancel()
        if stats.deferred or stats.bounced or stats.queue.messages:
            raise SystemExit(f"not everything was delivered: {stats}")
        return {
            "elapsed": elapsed,
            "rate": messages / elapsed,
            "enqueue_rate": messages / enqueued,
            "enqueue_p50_ms": statistics.median(enqueue_times) * 1000,
            "enqueue_p99_ms": sorted(enqueue_times)[max(0, int(len(enqueue_times) * 0.99) - 1)]
            * 1000,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--destinations", default="1,20")
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--sink", choices=["aiosmtpd", "smtp-sink"], default="aiosmtpd")
    parser.add_argument(
        "--preload",
        action="store_true",
        help="queue every message first, then time the runner alone (delivery only)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    sink: _AiosmtpdSink | _PostfixSink = (
        _AiosmtpdSink() if args.sink == "aiosmtpd" else _PostfixSink()
    )
    print(f"queue benchmark: {args.messages} messages of {args.size} bytes, fsync on")
    python = sys.version.split()[0]
    print(f"sink: {sink.name} on 127.0.0.1:{sink.port}; {os.cpu_count()} CPUs; Python {python}")
    try:
        for destinations in (int(d) for d in args.destinations.split(",")):
            result = trio.run(
                _run, args.messages, args.size, destinations, args.senders, sink.port, args.preload
            )
            if args.preload:
                print(
                    f"{destinations:>3} destination(s): {result['rate']:7.0f} msg/s delivered "
                    f"from a full queue ({result['elapsed']:.2f} s)"
                )
                continue
            print(
                f"{destinations:>3} destination(s): {result['rate']:7.0f} msg/s enqueue->delivered "
                f"({result['elapsed']:.2f} s); enqueue alone {result['enqueue_rate']:.0f} msg/s, "
                f"p50 {result['enqueue_p50_ms']:.2f} ms, p99 {result['enqueue_p99_ms']:.2f} ms"
            )
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
