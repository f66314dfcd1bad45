"""Session-tier helpers: the real IMAP session over an in-memory stream, on a real store.

``ImapClient`` is a small transcript helper: it sends a command and collects the untagged
lines (literals folded in) up to the tagged completion.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field

import trio
import trio.testing

from protocols.auth import Account, Login, LoginOutcome
from protocols.connection import ConnectionInfo, Drain
from protocols.imap.server import ImapSettings, serve_imap
from protocols.imap.shared import ImapShared
from store import Store

PASSWORD = "secret-pw"
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


@dataclass
class FakeChecker:
    """A PasswordChecker built from data: users -> (password, account)."""

    users: dict[str, tuple[str, Account]] = field(default_factory=dict)
    throttled: set[str] = field(default_factory=set)  # peers refused outright
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def authenticate(self, login: str, password: str, *, peer: str, protocol: str) -> Login:
        self.calls.append((login, protocol))
        if peer in self.throttled:
            return Login(LoginOutcome.THROTTLED)
        entry = self.users.get(login.lower())
        if entry is None or entry[0] != password:
            return Login(LoginOutcome.FAILED)
        return Login(LoginOutcome.OK, entry[1])


def account(address: str, mailbox_id: str) -> Account:
    return Account(
        user_id=1,
        address=address,
        mailbox_id=mailbox_id,
        display_name=address,
        addresses=(address,),
    )


def _no_tls() -> ssl.SSLContext:
    raise AssertionError("no TLS in session tests")


def connection_info(
    *, peer: str = "127.0.0.1", tls: bool = True, drain: Drain | None = None
) -> ConnectionInfo:
    return ConnectionInfo(
        listener="imaps" if tls else "imap",
        peer=(peer, 40000),
        local=("127.0.0.1", 993),
        tls=tls,
        tls_context=_no_tls,
        drain=drain or Drain(),
        sessions_from_peer=1,
        max_sessions_per_peer=100,
    )


class ImapClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.counter = 0

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buffer += data

    async def read_line(self) -> bytes:
        """One response line with any literals folded in (CRLF kept at the end)."""
        out = bytearray()
        while True:
            while (nl := self.buffer.find(b"\n")) < 0:
                await self._fill()
            line = bytes(self.buffer[: nl + 1])
            del self.buffer[: nl + 1]
            out += line
            m = _LITERAL.search(line)
            if m is None:
                return bytes(out)
            size = int(m.group(1))
            while len(self.buffer) < size:
                await self._fill()
            out += self.buffer[:size]
            del self.buffer[:size]

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def command(self, text: str | bytes) -> tuple[list[bytes], bytes]:
        """Send ``<tag> text`` and return (untagged lines, tagged line)."""
        self.counter += 1
        tag = f"T{self.counter}".encode()
        raw = text.encode() if isinstance(text, str) else text
        await self.send(tag + b" " + raw + b"\r\n")
        return await self.until(tag)

    async def until(self, tag: bytes) -> tuple[list[bytes], bytes]:
        untagged: list[bytes] = []
        while True:
            line = await self.read_line()
            if line.startswith(tag + b" "):
                return untagged, line
            untagged.append(line)

    async def ok(self, text: str | bytes) -> list[bytes]:
        untagged, tagged = await self.command(text)
        assert b" OK" in tagged, (text, untagged, tagged)
        return untagged


@dataclass
class SessionWorld:
    store: Store
    checker: FakeChecker
    shared: ImapShared
    settings: ImapSettings
    nursery: trio.Nursery
    drain: Drain

    async def connect(
        self, *, peer: str = "127.0.0.1", tls: bool = True, login: bool = True
    ) -> ImapClient:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        info = connection_info(peer=peer, tls=tls, drain=self.drain)
        self.nursery.start_soon(self.serve, server_stream, info)
        client = ImapClient(client_stream)
        greeting = await client.read_line()
        assert greeting.startswith(b"* OK"), greeting
        if login:
            await client.ok(f"LOGIN alice@example.test {PASSWORD}")
        return client

    async def serve(self, stream: trio.abc.Stream, info: ConnectionInfo | None = None) -> None:
        """The real session served over ``stream`` until it ends."""
        await serve_imap(
            stream,
            info or connection_info(drain=self.drain),
            settings=self.settings,
            checker=self.checker,
            store=self.store,
            shared=self.shared,
        )

    def deliver(self, message: bytes, folder: str = "Inbox") -> int:
        (result,) = self.store.deliver(message, ["alice"], folder)
        return result.uid


def message(n: int = 1, *, subject: str | None = None, body: str = "hello") -> bytes:
    return (
        f"From: Bob Sender <bob@example.org>\r\n"
        f"To: Alice <alice@example.test>\r\n"
        f"Subject: {subject or f'message {n}'}\r\n"
        f"Message-ID: <m{n}@example.org>\r\n"
        f"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
        f"\r\n{body}\r\n"
    ).encode()
