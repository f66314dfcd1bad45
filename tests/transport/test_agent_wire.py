"""What the server and its delivery agent send each other comes back as it went."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import trio

from transport.agent import (
    AgentClient,
    AgentRecipient,
    AgentUnavailable,
    DeliveryRequest,
    decode_request,
    encode_request,
    report_from_wire,
    report_to_wire,
)
from transport.hub import DeliveryReport, MessageInfo


def _round_trip(request: DeliveryRequest) -> tuple[int, DeliveryRequest]:
    return decode_request(msgpack.unpackb(encode_request(7, request), raw=False))


def test_a_request_comes_back_whole() -> None:
    info = MessageInfo("HDRS", "env-1", "ann@example.test", "helo.example", "192.0.2.1",
                       "mail.example.test", "8BITMIME", True)  # fmt: skip
    recipients = [
        AgentRecipient("ann@example.test", "Ann@example.test"),
        AgentRecipient(
            '"b c"@example.test', '"b c"@Example.test', ("FAILURE", "SUCCESS"), "rfc822;b@x.test"
        ),
    ]
    for content in (b"Subject: x\r\n\r\nbody\r\n", Path("/spool/message-1")):
        request = DeliveryRequest(content, b"Received: x\r\n", None, recipients, True, "ID1", info)
        assert _round_trip(request) == (7, request)
    request = DeliveryRequest(b"x", b"", "s@x.test", [], False, "ID2", MessageInfo())
    assert _round_trip(request) == (7, request)


def test_a_report_comes_back_whole() -> None:
    report = DeliveryReport(
        "ID1",
        delivered=["ann@example.test"],
        queued=["far@remote.test"],
        temporary={"t@example.test": "disk"},
        quota={"q@example.test": "full"},
        permanent={"p@example.test": "gone"},
        folders=[("mailbox-1", "inbox-1")],
    )
    wire = msgpack.unpackb(msgpack.packb(report_to_wire(report)), raw=False)
    assert report_from_wire(wire) == report


# A stand-in for the agent process (the outside world of the client): it answers with a
# byte msgpack never uses, then waits for the server to close its end.
_GARBLING_AGENT = """
import os, sys
fd = int(sys.argv[1])
os.read(fd, 65536)
os.write(fd, bytes.fromhex(sys.argv[2]))
while os.read(fd, 65536):
    pass
"""


@pytest.mark.timeout(30)  # before the fixes the delivery waited forever
@pytest.mark.parametrize(
    "answer",
    [
        b"\xc1",  # a byte msgpack never uses: the reader died
        msgpack.packb([1, [1, 2], None]),  # the first request's id, a report that is not one
        msgpack.packb([1]),  # the id and nothing else
    ],
    ids=["not msgpack", "not a report", "short frame"],
)
async def test_an_agent_that_answers_garbage_is_a_failed_delivery_not_a_crash(
    caplog: pytest.LogCaptureFixture, answer: bytes
) -> None:
    def launch(sock: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", _GARBLING_AGENT, str(sock.fileno()), answer.hex()],
            pass_fds=(sock.fileno(),),
        )

    request = DeliveryRequest(b"x", b"", None, [], False, "ID1", MessageInfo())
    async with trio.open_nursery() as nursery:
        client = AgentClient(launch, nursery)
        with pytest.raises(AgentUnavailable):
            await client.deliver(request)
    assert "sent a bad answer" in caplog.text


# A stand-in agent that answers its first request after a pause, with the report given.
_SLOW_AGENT = """
import os, sys, time
import msgpack
fd = int(sys.argv[1])
unpacker = msgpack.Unpacker(raw=False)
while True:
    unpacker.feed(os.read(fd, 65536))
    frames = list(unpacker)
    if frames:
        break
open(sys.argv[3], "w").close()  # the test cancels its caller now
time.sleep(0.3)
os.write(fd, msgpack.packb([frames[0][0], msgpack.unpackb(bytes.fromhex(sys.argv[2])), None]))
while os.read(fd, 65536):
    pass
"""


@pytest.mark.timeout(30)
async def test_a_sent_request_is_answered_even_when_its_caller_is_cancelled(
    tmp_path: Path,
) -> None:
    # Once sent, the message may be landing: the caller learns the outcome before a
    # cancellation reaches it (a shielded wait, without a scope per message).
    report = DeliveryReport("ID1", delivered=["ann@example.test"], folders=[("m", "f")])
    wire = msgpack.packb(report_to_wire(report)).hex()
    received = tmp_path / "received"

    def launch(sock: socket.socket) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", _SLOW_AGENT, str(sock.fileno()), wire, str(received)],
            pass_fds=(sock.fileno(),),
        )

    request = DeliveryRequest(b"x", b"", None, [], False, "ID1", MessageInfo())
    got: list[DeliveryReport] = []
    scope = trio.CancelScope()

    async def deliver() -> None:
        with scope:
            got.append(await client.deliver(request))
            await trio.sleep(0)  # the cancellation arrives here, after the answer

    async with trio.open_nursery() as nursery:
        client = AgentClient(launch, nursery)
        nursery.start_soon(deliver)
        for _ in range(1000):  # bounded: ten seconds
            if received.exists():
                break
            await trio.sleep(0.01)
        assert received.exists()
        scope.cancel()
        with trio.fail_after(10):
            while not scope.cancelled_caught:
                await trio.sleep(0.01)
        client.close()
    assert got == [report]
