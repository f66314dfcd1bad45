"""The accept loop: a burst of connections is taken in batches, and it lets go of the port."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio

from mailhost.listeners import ACCEPT_BATCH, Listener, Sessions, bind
from protocols.connection import ConnectionInfo, Drain


def _no_tls() -> ssl.SSLContext:
    raise AssertionError("a plain listener asks for no TLS context")


async def test_a_burst_of_connections_is_served_and_the_port_is_released() -> None:
    sockets = await bind("smtp", "127.0.0.1", 0)
    port = sockets[0].socket.getsockname()[1]
    peers: list[tuple[str, int]] = []

    async def greet(stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        peers.append(info.peer)
        await stream.send_all(b"hi\n")
        await stream.aclose()

    sessions = Sessions(
        mail_context=_no_tls,
        http_context=_no_tls,
        handshake_timeout=lambda: 5.0,
        max_per_peer=lambda: 1000,
        drain=Drain(),
    )
    listener = Listener("smtp", "none", False, sockets, greet)
    # More than the loop takes in a row before it yields: all wait in the backlog at once.
    count = 3 * ACCEPT_BATCH + 1
    clients = []
    for _ in range(count):
        client = trio.socket.socket()
        await client.connect(("127.0.0.1", port))
        clients.append(client)
    with trio.fail_after(10):
        async with trio.open_nursery() as runs, trio.open_nursery() as acceptors:
            acceptors.start_soon(sessions.accept_loop, listener, runs)
            for client in clients:
                assert await client.recv(10) == b"hi\n"
            acceptors.cancel_scope.cancel()
    assert len(peers) == count
    assert sessions.open == 0
    for client in clients:
        client.close()
    for sock in sockets:
        sock.socket.close()
    # The loop's own descriptor for the listening socket is closed with it: nothing
    # listens any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
