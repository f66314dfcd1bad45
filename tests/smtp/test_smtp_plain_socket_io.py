"""PlainSocketIO: the SMTP session's direct send/receive on a plain TCP socket.

Each case runs over a real loopback TCP connection (what the SMTP listener hands a
session), never a memory stream.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio

from protocols.connection import PlainSocketIO


@pytest.fixture
async def pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = trio.socket.socket()
    await client.connect(listener.getsockname())
    server, _ = await listener.accept()
    listener.close()
    streams = trio.SocketStream(server), trio.SocketStream(client)
    try:
        yield streams
    finally:
        for stream in streams:
            await stream.aclose()


async def test_bytes_go_both_ways_and_end_of_stream_is_empty(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, client = pair
    io = PlainSocketIO(server)
    await client.send_all(b"EHLO client.example\r\n")
    assert await io.receive_some(65536) == b"EHLO client.example\r\n"
    await io.send_all(b"250 ok\r\n")
    assert await client.receive_some(65536) == b"250 ok\r\n"
    await client.send_eof()
    assert await io.receive_some(65536) == b""


async def test_a_receive_waits_for_data_and_can_be_cancelled(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, client = pair
    io = PlainSocketIO(server)
    with trio.move_on_after(0.05) as scope:
        await io.receive_some(65536)
    assert scope.cancelled_caught
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def receive() -> None:
            got.append(await io.receive_some(65536))

        nursery.start_soon(receive)
        await trio.sleep(0.05)
        assert got == []
        await client.send_all(b"QUIT\r\n")
    assert got == [b"QUIT\r\n"]


async def test_a_large_send_waits_for_the_reader(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, client = pair
    io = PlainSocketIO(server)
    payload = bytes(range(256)) * 40_000  # 10 MB: far more than the socket buffers hold
    received = bytearray()

    async def read_all() -> None:
        while len(received) < len(payload):
            await trio.sleep(0)  # a slow reader: the sender must wait for room
            received.extend(await client.receive_some(65536))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await io.send_all(payload)
    assert bytes(received) == payload


async def test_a_closed_stream_is_never_read_again_even_if_its_number_is_reused(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, _client = pair
    io = PlainSocketIO(server)
    number = server.socket.fileno()
    await server.aclose()
    # The next descriptor the process opens takes the freed number; what arrives on it
    # belongs to someone else and must not reach this session.
    other_a, other_b = socket.socketpair()
    try:
        assert number in (other_a.fileno(), other_b.fileno())
        other_a.sendall(b"not yours")
        other_b.sendall(b"not yours")
        with pytest.raises(trio.ClosedResourceError):
            await io.receive_some(65536)
        with pytest.raises(trio.ClosedResourceError):
            await io.send_all(b"221 bye\r\n")
    finally:
        other_a.close()
        other_b.close()


async def test_closing_the_stream_wakes_a_waiting_receive(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, _client = pair
    io = PlainSocketIO(server)
    outcome: list[BaseException] = []

    async def receive() -> None:
        try:
            await io.receive_some(65536)
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.sleep(0.05)
        await server.aclose()  # what the server's shutdown does to every session
    assert len(outcome) == 1


async def test_a_reset_connection_is_a_broken_resource(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, client = pair
    io = PlainSocketIO(server)
    # SO_LINGER with a zero timeout: close sends RST instead of FIN.
    client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await client.aclose()
    await trio.sleep(0.05)
    with pytest.raises(trio.BrokenResourceError):
        await io.receive_some(65536)
    with pytest.raises(trio.BrokenResourceError):
        await io.send_all(b"x" * 100_000)


async def test_a_client_that_never_pauses_cannot_starve_other_tasks(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, client = pair
    io = PlainSocketIO(server)
    await client.send_all(b"NOOP\r\n" * 20_000)  # all buffered: no receive has to wait
    other_ran_after: list[int] = []
    reads = 0

    async def other_task() -> None:
        other_ran_after.append(reads)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_task)
        while reads < 50:
            await io.receive_some(16)
            reads += 1
    assert other_ran_after and other_ran_after[0] < 50


async def test_a_send_to_a_reader_that_stopped_can_be_cancelled(
    pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    server, _client = pair  # the client never reads
    io = PlainSocketIO(server)
    with trio.move_on_after(0.2) as scope:
        await io.send_all(b"x" * 50_000_000)  # far past what the socket buffers take
    assert scope.cancelled_caught
