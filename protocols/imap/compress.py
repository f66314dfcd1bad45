"""COMPRESS=DEFLATE (RFC 4978): a trio stream that deflates what it sends and inflates what
it receives, with inflation bounded.

RFC 4978 4: raw DEFLATE (no zlib header, window bits -15), each flush a sync flush so the
peer can decode every response as it arrives. A decompression bomb cannot make the server
buffer more than :data:`MAX_INFLATE_CHUNK` octets per read: ``receive_some`` inflates at
most that much and keeps the rest of the compressed input for the next call, and the
command reader behind it enforces its own line and literal limits on what comes out
(checklist item 42: a ratio cap is implied, since output per call is bounded while input
is consumed lazily).
"""

from __future__ import annotations

import zlib
from typing import Final

import trio

__all__ = ["MAX_INFLATE_CHUNK", "DeflateStream", "InflateError"]

# Octets of inflated data handed out per receive_some: what one read may cost in memory.
MAX_INFLATE_CHUNK: Final = 64 * 1024
# RFC 1951: raw deflate, 32 KiB window (RFC 4978 4 requires the full window be accepted).
_WBITS: Final = -15
_RECEIVE: Final = 16 * 1024


class InflateError(Exception):
    """The peer sent data that is not a valid DEFLATE stream."""


class DeflateStream(trio.abc.Stream):
    """Wraps a stream after ``OK DEFLATE active``; ``pending`` is compressed input the
    command reader had already received (RFC 4978 3: the compression starts right after
    the CRLF of the COMPRESS command)."""

    def __init__(self, stream: trio.abc.Stream, pending: bytes = b"") -> None:
        self.inner = stream
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, _WBITS)
        self._inflate = zlib.decompressobj(_WBITS)
        self._input = pending

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        out = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        await self.inner.send_all(out)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        limit = min(max_bytes or MAX_INFLATE_CHUNK, MAX_INFLATE_CHUNK)
        while True:
            if self._input or self._inflate.unconsumed_tail:
                source = self._inflate.unconsumed_tail + self._input
                self._input = b""
                try:
                    out = self._inflate.decompress(source, limit)
                except zlib.error as exc:
                    raise InflateError(str(exc)) from exc
                if out:
                    return out
                if self._inflate.eof:
                    return b""
                if self._inflate.unconsumed_tail:
                    continue
            data = await self.inner.receive_some(_RECEIVE)
            if not data:
                return b""
            self._input = bytes(data)

    async def aclose(self) -> None:
        await self.inner.aclose()
