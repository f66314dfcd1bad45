"""What every protocol session is told about its connection.

The service (mailhost.listeners) accepts a connection, completes implicit TLS, and
hands the stream plus a `ConnectionInfo` to the protocol's session function.
"""

from __future__ import annotations

import ipaddress
import math
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio


class Drain:
    """The server's shutdown as sessions see it.

    A session waiting for its client's next command does so inside `idle()`; when
    the server starts draining, those waits are cancelled at once, so an idle session
    can say goodbye in its protocol and close, while a busy one finishes its command.
    """

    def __init__(self) -> None:
        self.event = trio.Event()
        self._idle: set[trio.CancelScope] = set()

    @property
    def started(self) -> bool:
        return self.event.is_set()

    def start(self) -> None:
        self.event.set()
        for scope in list(self._idle):
            scope.cancel()

    def waiting(self, scope: trio.CancelScope) -> None:
        """`scope` now waits idle for the client: cancelled when draining starts (at
        once if it has). A session with one scope for its whole life (SMTP) says so
        around each wait, without a scope per wait."""
        if self.event.is_set():
            scope.cancel()
        self._idle.add(scope)

    def busy(self, scope: trio.CancelScope) -> None:
        """`scope` no longer waits idle."""
        self._idle.discard(scope)

    @contextmanager
    def idle(self, timeout: float = math.inf) -> Iterator[trio.CancelScope]:
        """Wrap a wait for the client, at most `timeout` seconds. When
        `scope.cancelled_caught`, either draining began (`started`) or time ran out."""
        scope = trio.CancelScope(deadline=trio.current_time() + timeout)
        self.waiting(scope)
        try:
            with scope:
                yield scope
        finally:
            self.busy(scope)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    listener: str  # config name: smtp, submission, imaps, ...
    peer: tuple[str, int]
    local: tuple[str, int]
    tls: bool  # the stream is already TLS (implicit-TLS listener)
    # Contexts for STARTTLS: a callable so a certificate reload reaches new handshakes.
    tls_context: Callable[[], ssl.SSLContext]
    # The server's shutdown: finish the current command, then say goodbye.
    drain: Drain
    # Sessions this peer address holds on this listener, this one included.
    sessions_from_peer: int
    max_sessions_per_peer: int

    @property
    def over_peer_limit(self) -> bool:
        return self.sessions_from_peer > self.max_sessions_per_peer


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def tls_description(stream: trio.abc.Stream) -> str | None:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' for a TLS stream, None for plaintext."""
    if isinstance(stream, trio.SSLStream):
        cipher = stream.cipher()
        version = stream.version()
        if cipher and version:
            return f"{version} {cipher[0]}"
    return None
