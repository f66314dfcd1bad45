"""HTTP plumbing shared by ActiveSync and Autodiscover: the response value, reading a
bounded request body from ASGI, and gzip in both directions with bounds.

Responses always carry Content-Length (never chunked: some devices cannot read chunked
bodies, grommunio-sync buffers for the same reason) and, on HTTPS, HSTS
(reliability-security item 46).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import trio

from protocols.web import Receive, Scope, Send

from .numbers import NumberError, parse_uint

HSTS: Final = "max-age=63072000"  # two years (reliability-security item 46)
# gzip request bodies (a few clients send them): the inflated body is held to the same
# limit as a plain one, and the ratio is bounded so a bomb stops early (item 42).
MAX_INFLATE_RATIO: Final = 1000
# Responses are gzipped only up to this size: bounds the CPU one response may take.
MAX_GZIP_RESPONSE: Final = 4 * 1024 * 1024
MIN_GZIP_RESPONSE: Final = 1024  # smaller bodies gain nothing
GZIP_LEVEL: Final = 6
_CHUNK: Final = 64 * 1024


class BodyTooLarge(Exception):
    """The request body (as sent or inflated) is over the limit: 413."""


class BadBody(Exception):
    """The body cannot be read (bad gzip, unknown Content-Encoding): 400 / 415."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


class BodyTimeout(Exception):
    """The body stopped arriving (408)."""


class BodiesBusy(Exception):
    """Request bodies already hold the memory allowed for them: 503 with Retry-After."""


class BodyMemory:
    """Request body bytes held in memory at once, over every request.

    Bodies are read whole before a request takes an overload slot (a slow upload must not
    hold a slot), so the slots alone do not bound them: a hundred simultaneous 36 MB
    uploads would be 3.6 GB. Each body counts its bytes here as they arrive (and the
    inflated copy of a gzip body), and gives them back when its request is answered; a
    body that would go past the limit is refused with 503, which devices retry later
    (MS-ASHTTP 3.1.5.2). Bytes, not bodies, are counted: a trickling client holds only
    what it has really sent."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self.held = 0

    def try_take(self, size: int) -> bool:
        if size > 0 and self.held + size > self._limit():
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def with_headers(self, *headers: tuple[str, str]) -> HttpResponse:
        return HttpResponse(self.status, self.body, self.content_type, self.headers + headers)


def request_headers(scope: Scope) -> dict[str, str]:
    """Header names lower-cased; a repeated header joined with ", " (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = bytes(raw_name).decode("latin-1").lower()
        value = bytes(raw_value).decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


# A response sent before the request body was read (401, 413, 503, ...) would leave the
# rest of the body on an HTTP/1.1 connection, which then cannot be reused: up to this
# much is read and discarded first (nginx's lingering close does the same); past it the
# connection is closed after the response.
MAX_DRAIN: Final = 1024 * 1024
DRAIN_SECONDS: Final = 5.0
# A body that stops arriving for this long is given up (408, RFC 9110 15.5.9): a client
# trickling bytes must not hold a request open for ever.
BODY_IDLE_TIMEOUT: Final = 60.0
# A Content-Length of more digits than this is past any limit (2**64 has 20 digits).
CONTENT_LENGTH_DIGITS: Final = 20


def declared_length(headers: Mapping[str, str]) -> int | None:
    """Content-Length as a number (RFC 9110 8.6: 1*DIGIT); None when absent or not one
    (the HTTP layer has refused such a request already; the body is read to its end)."""
    declared = headers.get("content-length")
    if declared is None:
        return None
    try:
        return parse_uint(declared, max_digits=CONTENT_LENGTH_DIGITS, what="Content-Length")
    except NumberError:
        return None


class RequestBody:
    """The ASGI request body, read once, bounded, and drained if left unread."""

    def __init__(
        self,
        receive: Receive,
        *,
        idle_timeout: float = BODY_IDLE_TIMEOUT,
        memory: BodyMemory | None = None,
    ) -> None:
        self._receive = receive
        self._idle_timeout = idle_timeout
        self._memory = memory
        self.held = 0  # bytes counted against `memory` for this request
        self.done = False  # the last body message has been received
        self.disconnected = False

    def hold(self, size: int) -> None:
        """Count `size` more bytes of this request against the shared body memory;
        BodiesBusy when there is no room (nothing is counted then)."""
        if self._memory is None:
            return
        if not self._memory.try_take(size):
            raise BodiesBusy(f"request bodies hold {self._memory.held} bytes")
        self.held += size

    def release(self) -> None:
        """Give back what this request held (once it is answered)."""
        if self._memory is not None and self.held:
            self._memory.give_back(self.held)
        self.held = 0

    async def _next(self, *, idle: bool = True) -> bytes:
        if idle:
            with trio.move_on_after(self._idle_timeout) as scope:
                message = await self._receive()
            if scope.cancelled_caught:
                raise BodyTimeout(f"no body data for {self._idle_timeout:.0f} s")
        else:
            message = await self._receive()
        if message["type"] == "http.disconnect":
            self.disconnected = True
            self.done = True
            raise ClientGone
        if not message.get("more_body", False):
            self.done = True
        return bytes(message.get("body", b""))

    async def read(self, headers: Mapping[str, str], limit: int) -> bytes:
        """The whole body, refused as soon as it is known to exceed `limit` (BodyTooLarge)
        or once the bodies of all requests would hold too much memory (BodiesBusy)."""
        declared = declared_length(headers)
        if declared is not None and declared > limit:
            raise BodyTooLarge(f"Content-Length {declared} over {limit}")
        chunks: list[bytes] = []
        size = 0
        while not self.done:
            chunk = await self._next()
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"body over {limit} bytes")
            self.hold(len(chunk))
            chunks.append(chunk)
        return b"".join(chunks)

    async def drain(self, headers: Mapping[str, str], limit: int = MAX_DRAIN) -> bool:
        """Read and discard what is left, up to `limit` bytes; True if nothing is left."""
        declared = declared_length(headers)
        if declared is not None and declared > limit:
            return self.done
        size = 0
        with trio.move_on_after(DRAIN_SECONDS):
            try:
                while not self.done and size <= limit:
                    size += len(await self._next())
            except ClientGone:
                return True
            except BodyTimeout:
                return False
        return self.done

    async def wait_disconnect(self) -> None:
        """Once the body is read: return when the client goes away."""
        while not self.disconnected:
            try:
                await self._next(idle=False)
            except ClientGone:
                return


def decode_content(body: bytes, headers: Mapping[str, str], limit: int) -> bytes:
    """Undo Content-Encoding: identity or gzip (inflated size bounded by `limit` and by
    MAX_INFLATE_RATIO). Anything else is 415 (RFC 9110 15.5.16)."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise BadBody(f"Content-Encoding {encoding!r} not supported", 415)
    bound = min(limit, max(len(body), 1) * MAX_INFLATE_RATIO)
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    out: list[bytes] = []
    size = 0
    try:
        data = body
        while data:
            piece = inflater.decompress(data, _CHUNK)
            size += len(piece)
            if size > bound:
                raise BodyTooLarge(f"gzip body inflates past {bound} bytes")
            out.append(piece)
            data = inflater.unconsumed_tail
        tail = inflater.flush()
        size += len(tail)
        if size > bound:
            raise BodyTooLarge(f"gzip body inflates past {bound} bytes")
        out.append(tail)
    except zlib.error as exc:
        raise BadBody(f"bad gzip body: {exc}") from None
    if not inflater.eof:
        raise BadBody("gzip body is truncated")
    return b"".join(out)


def accepts_gzip(headers: Mapping[str, str]) -> bool:
    """RFC 9110 12.5.3: gzip listed with a q-value above 0."""
    for item in headers.get("accept-encoding", "").split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip"):
            continue
        quality = params.strip().lower()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def maybe_gzip(response: HttpResponse, headers: Mapping[str, str]) -> HttpResponse:
    size = len(response.body)
    if not MIN_GZIP_RESPONSE <= size <= MAX_GZIP_RESPONSE or not accepts_gzip(headers):
        return response
    compressed = gzip.compress(response.body, compresslevel=GZIP_LEVEL, mtime=0)
    return HttpResponse(
        response.status,
        compressed,
        response.content_type,
        (*response.headers, ("content-encoding", "gzip"), ("vary", "Accept-Encoding")),
    )


async def send_response(send: Send, response: HttpResponse, *, https: bool) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(response.body)).encode()))
    if https:
        headers.append((b"strict-transport-security", HSTS.encode()))
    for name, value in response.headers:
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
