"""Accepting connections: bind, accept, implicit TLS, per-address limits, one task each.

A session's failure is logged and closes that connection only; it never reaches the
accept loop (trio's serve_listeners leaves catching per connection to the caller).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from protocols.connection import ConnectionInfo, Drain

# trio's own list (_highlevel_serve_listeners.py): out of descriptors or memory is a
# reason to pause accepting, not to stop.
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_PAUSE_SECONDS = 0.1
# trio's list too: a connection that failed between the client's SYN and our accept is
# that client's problem, not the listener's.
ACCEPT_SKIP_ERRNOS = {
    getattr(errno, name)
    for name in (
        "EPERM",
        "ECONNABORTED",
        "EPROTO",
        "ENETDOWN",
        "ENOPROTOOPT",
        "EHOSTDOWN",
        "ENONET",
        "EHOSTUNREACH",
        "EOPNOTSUPP",
        "ENETUNREACH",
    )
    if hasattr(errno, name)
}
# Connections accepted in a row before the accept loop lets other tasks run.
ACCEPT_BATCH = 16
LISTEN_BACKLOG = 511  # as nginx and Postfix; the kernel caps it at somaxconn

Handler = Callable[[trio.abc.Stream, ConnectionInfo], Awaitable[None]]

log = logging.getLogger("mailhost.service")


class ListenError(Exception):
    """A listener could not be bound; the message names it, its address and why."""


@dataclass(slots=True)
class Listener:
    name: str
    tls: str  # "implicit", "starttls" or "none"
    http: bool  # implicit TLS offers ALPN h2/http1.1
    sockets: list[trio.SocketListener]
    handler: Handler

    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for sock in self.sockets:
            host, port = sock.socket.getsockname()[:2]
            out.append((str(host), int(port)))
        return out


async def bind(name: str, address: str, port: int) -> list[trio.SocketListener]:
    host = None if address == "*" else address
    try:
        return await trio.open_tcp_listeners(port, host=host, backlog=LISTEN_BACKLOG)
    except OSError as exc:
        where = f"{address}:{port}"
        reason = {
            errno.EADDRINUSE: "the address is already in use (is another server running?)",
            errno.EACCES: "permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)",
            errno.EADDRNOTAVAIL: "no interface has this address",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        raise ListenError(f"cannot listen on {where} for {name}: {reason}") from None


class Sessions:
    """Counts and runs the sessions of every listener."""

    def __init__(
        self,
        *,
        mail_context: Callable[[], ssl.SSLContext],
        http_context: Callable[[], ssl.SSLContext],
        handshake_timeout: Callable[[], float],
        max_per_peer: Callable[[], int],
        drain: Drain,
    ) -> None:
        self._mail_context = mail_context
        self._http_context = http_context
        self._handshake_timeout = handshake_timeout
        self._max_per_peer = max_per_peer
        self.drain = drain
        self._per_peer: Counter[tuple[str, str]] = Counter()
        self._streams: set[trio.SocketStream] = set()

    def abort_all(self) -> int:
        """Close every session's socket now (the grace period is over): a task blocked in
        a send or receive, even inside a shielded scope, sees the connection closed."""
        streams, self._streams = list(self._streams), set()
        for stream in streams:
            trio.lowlevel.notify_closing(stream.socket)
            stream.socket.close()
        return len(streams)

    @property
    def open(self) -> int:
        return sum(self._per_peer.values())

    async def accept_loop(self, listener: Listener, nursery: trio.Nursery) -> None:
        async with trio.open_nursery() as loops:
            for sock in listener.sockets:
                loops.start_soon(self._accept_from, listener, sock, nursery)

    async def _accept_from(
        self, listener: Listener, sock: trio.SocketListener, nursery: trio.Nursery
    ) -> None:
        """Accept on the listening socket directly: every connection waiting is taken
        (up to ACCEPT_BATCH) at one wake-up, where trio's SocketListener.accept yields
        to the scheduler after each. Its own duplicate of the descriptor, closed when the
        loop ends, so the listener's socket object is not touched."""
        raw = socket.socket(fileno=os.dup(sock.socket.fileno()))
        raw.setblocking(False)
        in_a_row = 0
        try:
            while True:
                try:
                    conn, _ = raw.accept()
                except BlockingIOError:
                    in_a_row = 0
                    await trio.lowlevel.wait_readable(raw)
                    continue
                except OSError as exc:
                    if exc.errno in ACCEPT_SKIP_ERRNOS:
                        continue
                    if exc.errno in ACCEPT_CAPACITY_ERRNOS:
                        log.error("%s: cannot accept (%s); pausing", listener.name, exc.strerror)
                        await trio.sleep(ACCEPT_PAUSE_SECONDS)
                        continue
                    raise
                stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
                nursery.start_soon(self._run, listener, stream)
                in_a_row += 1
                if in_a_row >= ACCEPT_BATCH:
                    in_a_row = 0
                    await trio.lowlevel.checkpoint()
        finally:
            trio.lowlevel.notify_closing(raw)  # trio forgets its registration of it
            raw.close()

    async def _run(self, listener: Listener, stream: trio.SocketStream) -> None:
        try:
            peer_raw = stream.socket.getpeername()
            local_raw = stream.socket.getsockname()
        except OSError:  # the peer is gone already
            await trio.aclose_forcefully(stream)
            return
        peer = (str(peer_raw[0]), int(peer_raw[1]))
        local = (str(local_raw[0]), int(local_raw[1]))
        key = (listener.name, peer[0])
        self._per_peer[key] += 1
        # Counted at accept: a TLS handshake that finishes late must not push an earlier
        # connection over the limit in place of the newer one.
        from_peer = self._per_peer[key]
        self._streams.add(stream)
        session: trio.abc.Stream = stream
        try:
            if listener.tls == "implicit":
                context = self._http_context() if listener.http else self._mail_context()
                tls = trio.SSLStream(
                    stream, context, server_side=True, https_compatible=listener.http
                )
                session = tls
                with trio.move_on_after(self._handshake_timeout()):
                    await tls.do_handshake()
                if not tls.version():
                    log.info("%s: TLS handshake from %s timed out", listener.name, peer[0])
                    return
            mail_context = self._mail_context
            info = ConnectionInfo(
                listener=listener.name,
                peer=peer,
                local=local,
                tls=listener.tls == "implicit",
                tls_context=mail_context,
                drain=self.drain,
                sessions_from_peer=from_peer,
                max_sessions_per_peer=self._max_per_peer(),
            )
            await listener.handler(session, info)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("%s: connection from %s ended: %r", listener.name, peer[0], exc)
        except Exception:
            log.exception("%s: session from %s failed", listener.name, peer[0])
        finally:
            self._streams.discard(stream)
            self._per_peer[key] -= 1
            if self._per_peer[key] <= 0:
                del self._per_peer[key]
            if stream.socket.fileno() >= 0:  # the session did not close it (SMTP always does)
                await trio.aclose_forcefully(session)
