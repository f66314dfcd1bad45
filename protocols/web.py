"""HTTP on our listeners: hypercorn's protocol layer over a stream we accepted.

The service owns the sockets and TLS (so a certificate reload reaches new handshakes
and shutdown follows the same rules as the mail listeners); hypercorn speaks HTTP/1.1
and HTTP/2 (by ALPN) on the stream and calls an ASGI app.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext

from protocols.connection import ConnectionInfo

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Limits for the HTTP layer (hypercorn enforces them).
MAX_REQUEST_HEAD = 16 * 1024  # request line + headers, HTTP/1.1 (h11's default, IIS is 16 KB)
MAX_H2_HEADER_LIST = 64 * 1024
MAX_H2_STREAMS = 100
KEEP_ALIVE_SECONDS = 120.0  # phones reuse the connection between Pings
# A response a client stops reading is abandoned after this long. hypercorn sends inside
# a shielded scope with no deadline, so the limit is put on the stream itself.
SEND_TIMEOUT = 60.0

log = logging.getLogger("mailhost.http")


class HttpServer:
    """Serves one ASGI app on the streams handed to `serve`."""

    def __init__(self, app: AsgiApp, *, secure: bool) -> None:
        config = HypercornConfig()
        config.accesslog = None
        config.errorlog = logging.getLogger("mailhost.http.server")
        config.include_server_header = False
        config.h11_max_incomplete_size = MAX_REQUEST_HEAD
        config.h2_max_header_list_size = MAX_H2_HEADER_LIST
        config.h2_max_concurrent_streams = MAX_H2_STREAMS
        config.keep_alive_timeout = KEEP_ALIVE_SECONDS
        self._config = config
        self._raw_app = app
        self._app = ASGIWrapper(cast(Any, app))  # our app takes the ASGI dicts untyped
        self._context = WorkerContext(None)
        self.secure = secure

    async def serve(self, stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        if info.over_peer_limit:
            # No response: an HTTP/2 client may not even read HTTP/1.1; closing says enough.
            log.info("refused a connection from %s: too many from that address", info.peer[0])
            return
        if info.drain.started:
            await self._context.terminated.set()
        app = self._app
        certificate = peer_certificate_pem(stream)
        if certificate is not None:
            app = ASGIWrapper(cast(Any, with_client_certificate(self._raw_app, certificate)))
        timed = _SendTimeout(stream, SEND_TIMEOUT)
        server = _TcpServer(app, self._config, self._context, {}, timed)  # type: ignore[arg-type]
        await server.run()

    async def drain(self) -> None:
        """Keep-alive connections close after their current request."""
        await self._context.terminated.set()


class _TcpServer(TCPServer):
    """hypercorn's connection, ended when the client has gone. hypercorn handles the
    client's EOF but leaves its keep-alive timer running, and the connection (with its
    slot in the per-address limit) lingers in CLOSE-WAIT for KEEP_ALIVE_SECONDS: fifty
    requests in two minutes from one address (phones behind an office NAT) would lock
    that address out."""

    async def _read_data(self) -> None:
        await super()._read_data()
        await self.idle_task.stop()


class _SendTimeout(trio.abc.Stream):
    """`stream` whose sends give up after `timeout` seconds: the connection is closed and
    the sender sees it broken. Everything else (the TLS details hypercorn reads) is the
    wrapped stream's."""

    def __init__(self, stream: trio.abc.Stream, timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        with trio.move_on_after(self._timeout) as scope:
            await self._stream.send_all(data)
        if scope.cancelled_caught:
            await trio.aclose_forcefully(self._stream)
            raise trio.BrokenResourceError("the client stopped reading the response")

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


def peer_certificate_pem(stream: trio.abc.Stream) -> str | None:
    """The client certificate of a TLS stream (verified by the handshake), as PEM."""
    if not isinstance(stream, trio.SSLStream):
        return None
    try:
        der = stream.getpeercert(binary_form=True)
    except (trio.NeedHandshakeError, ValueError, AttributeError, ssl.SSLError):
        return None  # no handshake yet (a server that handshakes later) or no certificate
    return ssl.DER_cert_to_PEM_cert(der) if der else None


def with_client_certificate(app: AsgiApp, certificate: str) -> AsgiApp:
    """`app` seeing this connection's client certificate where the ASGI TLS extension
    puts it (`scope["extensions"]["tls"]["client_cert_chain"]`): hypercorn does not."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.setdefault("extensions", {})
        tls = extensions.setdefault("tls", {})
        tls["client_cert_chain"] = [certificate]
        await app(scope, receive, send)

    return wrapped


async def send_simple(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    all_headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    all_headers += headers or []
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


def redirect_app(hostname: Callable[[], str], https_port: Callable[[], int]) -> AsgiApp:
    """Port 80: everything moves to HTTPS. No credentials are ever asked for or read
    over plain HTTP (reliability-security item 46)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        host = _host_header(scope) or hostname()
        port = https_port()
        authority = host if port == 443 else f"{host}:{port}"
        target = scope.get("raw_path", b"/").decode("latin-1") or "/"
        query = scope.get("query_string", b"")
        location = f"https://{authority}{target}" + (f"?{query.decode('latin-1')}" if query else "")
        await send_simple(
            send, 301, b"Use HTTPS.\n", headers=[(b"location", location.encode("latin-1"))]
        )

    return app


def unavailable_app() -> AsgiApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send_simple(
            send, 503, b"Service not available.\n", headers=[(b"retry-after", b"120")]
        )

    return app


def _host_header(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"host":
            host = bytes(value).decode("latin-1").strip()
            host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            # A host header is only echoed back when it is a plausible name.
            if host and all(c.isalnum() or c in ".-[]:" for c in host):
                return host
    return None
