"""Helpers shared by the SMTP tests: a core driver and a small async SMTP client."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from protocols.smtp.core import (
    NEED_DATA,
    Auth,
    AuthResponse,
    ConnectionClosed,
    Data,
    Ehlo,
    EndOfChunk,
    EndOfMessage,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    Noop,
    ProtocolLimits,
    Quit,
    Rcpt,
    Rset,
    ServerConnection,
    StartTls,
    State,
    Vrfy,
)
from protocols.smtp.esmtp import Extensions
from protocols.smtp.replies import Reply, SmtpError
from protocols.smtp.session import SmtpSettings, SmtpTimeouts, TlsContextProvider, serve_smtp

EXTENSIONS = Extensions(size=10_240_000, starttls=True)
TLS_EXTENSIONS = Extensions(size=10_240_000, auth=("PLAIN", "LOGIN"))

POSITIVE: dict[type[Event], Reply] = {
    Ehlo: EXTENSIONS.ehlo_reply("mx.example"),
    Helo: Reply(250, None, "mx.example"),
    Mail: Reply(250, "2.1.0", "Sender OK"),
    Rcpt: Reply(250, "2.1.5", "Recipient OK"),
    Data: Reply(354, None, "Go ahead"),
    EndOfChunk: Reply(250, "2.0.0", "chunk OK"),
    EndOfMessage: Reply(250, "2.0.0", "queued"),
    Rset: Reply(250, "2.0.0", "OK"),
    Noop: Reply(250, "2.0.0", "OK"),
    Quit: Reply(221, "2.0.0", "Bye"),
    Vrfy: Reply(252, "2.5.2", "Cannot VRFY"),
    Expn: Reply(502, "5.5.1", "No EXPN"),
    Help: Reply(214, "2.0.0", "Help"),
    StartTls: Reply(220, "2.0.0", "Ready to start TLS"),
    Auth: Reply(334, None, ""),
    AuthResponse: Reply(235, "2.7.0", "Authenticated"),
}


@dataclass(frozen=True)
class Refused:
    """An SmtpError the core raised, as it appears in a driver's log."""

    reply: Reply


Answer = Callable[[Event], Reply]


@dataclass
class CoreDriver:
    """Feeds a ServerConnection and answers each event; records events and refusals."""

    conn: ServerConnection = field(
        default_factory=lambda: ServerConnection(extensions=EXTENSIONS, limits=ProtocolLimits())
    )
    answers: dict[type[Event], Reply] = field(default_factory=dict)
    log: list[Event | Refused] = field(default_factory=list)
    out: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        self.out += self.conn.send(Reply(220, None, "mx.example ESMTP"))

    def answer(self, event: Event) -> Reply:
        return self.answers.get(type(event)) or POSITIVE[type(event)]

    def feed(self, data: bytes) -> list[Event | Refused]:
        """Feed `data` (b"" for EOF) and run until the core needs more."""
        start = len(self.log)
        self.conn.receive_data(data)
        self.run()
        return self.log[start:]

    def run(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except SmtpError as error:
                self.log.append(Refused(error.reply))
                self.out += self.conn.send(error.reply)
                if self.conn.state is State.CLOSED:
                    return
                continue
            if event is NEED_DATA:
                return
            self.log.append(event)
            if isinstance(event, ConnectionClosed):
                return
            if event.expects_reply:
                self.out += self.conn.send(self.answer(event))
                if self.conn.state in (State.TLS_STARTING, State.CLOSED):
                    return

    def replies(self) -> list[int]:
        """Reply codes written so far (the last line of each reply), greeting excluded."""
        return reply_codes(bytes(self.out))[1:]


def reply_codes(data: bytes) -> list[int]:
    return [int(line[:3]) for line in data.split(b"\r\n") if len(line) > 3 and line[3:4] == b" "]


def normalized(log: Iterable[Event | Refused]) -> list[object]:
    """Merge adjacent MessageData events: chunking depends on how the bytes arrived."""
    merged: list[object] = []
    for item in log:
        if isinstance(item, MessageData) and merged and isinstance(merged[-1], bytearray):
            merged[-1] += item.data
        elif isinstance(item, MessageData):
            merged.append(bytearray(item.data))
        else:
            merged.append(item)
    return [bytes(x) if isinstance(x, bytearray) else x for x in merged]


def message_bodies(log: Iterable[Event | Refused]) -> list[bytes]:
    """The content of each message that reached EndOfMessage."""
    bodies: list[bytes] = []
    current = bytearray()
    for item in log:
        if isinstance(item, MessageData):
            current += item.data
        elif isinstance(item, EndOfMessage):
            bodies.append(bytes(current))
            current = bytearray()
        elif isinstance(item, Refused | Rset | Mail):
            current = bytearray()
    return bodies


_REPLY_LINE = re.compile(rb"(\d{3})([ -])(.*)")


class SmtpTestClient:
    """A minimal SMTP client over any trio stream, for transcripts."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {bytes(self.buffer)!r}")
            self.buffer += chunk
        end = self.buffer.index(b"\r\n")
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    async def reply(self) -> tuple[int, list[str]]:
        lines: list[str] = []
        while True:
            match = _REPLY_LINE.fullmatch(await self.line())
            assert match is not None, "malformed reply line"
            lines.append(match.group(3).decode("utf-8"))
            if match.group(2) == b" ":
                return int(match.group(1)), lines

    async def command(self, line: str | bytes) -> tuple[int, list[str]]:
        data = line.encode("utf-8") if isinstance(line, str) else line
        await self.send(data + b"\r\n")
        return await self.reply()

    async def code(self, line: str | bytes) -> int:
        return (await self.command(line))[0]

    async def closed(self) -> bool:
        """True when the server has closed (EOF after any pending bytes)."""
        try:
            chunk = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            return True
        return chunk == b"" and not self.buffer


HOSTNAME = "mx.example"
PEER = ("192.0.2.10", 40000)
FAST = SmtpTimeouts(error_sleep=0.0)


def make_settings(**overrides: Any) -> SmtpSettings:
    """Session settings for tests: our hostname, no error sleep unless asked."""
    values: dict[str, Any] = {"hostname": HOSTNAME, "timeouts": FAST}
    values.update(overrides)
    return SmtpSettings(**values)


@asynccontextmanager
async def tcp_server(
    settings: SmtpSettings,
    backend: Any,
    *,
    tls_context: TlsContextProvider | None = None,
) -> AsyncIterator[int]:
    """serve_smtp behind a real listener on 127.0.0.1, port 0; yields the port."""

    async def handler(stream: trio.SocketStream) -> None:
        host, port = stream.socket.getpeername()[:2]
        await serve_smtp(
            stream, (host, port), settings=settings, backend=backend, tls_context=tls_context
        )

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()
