"""What every protocol session is told about its connection.

The service (mailhost.listeners) accepts a connection, completes implicit TLS, and
hands the stream plus a `ConnectionInfo` to the protocol's session function.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass

import trio


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    listener: str  # config name: smtp, submission, imaps, ...
    peer: tuple[str, int]
    local: tuple[str, int]
    tls: bool  # the stream is already TLS (implicit-TLS listener)
    # Contexts for STARTTLS: a callable so a certificate reload reaches new handshakes.
    tls_context: Callable[[], ssl.SSLContext]
    # Set when the server is shutting down: finish the current command, then say goodbye.
    draining: trio.Event
    # Sessions this peer address holds on this listener, this one included.
    sessions_from_peer: int
    max_sessions_per_peer: int

    @property
    def over_peer_limit(self) -> bool:
        return self.sessions_from_peer > self.max_sessions_per_peer


def tls_description(stream: trio.abc.Stream) -> str | None:
    """'TLSv1.3 TLS_AES_256_GCM_SHA384' for a TLS stream, None for plaintext."""
    if isinstance(stream, trio.SSLStream):
        cipher = stream.cipher()
        version = stream.version()
        if cipher and version:
            return f"{version} {cipher[0]}"
    return None
