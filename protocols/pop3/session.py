"""POP3 over trio: the thin I/O layer around `Pop3Core`, owning TLS, time and the maildrop.

The Inbox only, as Exchange serves POP3. Message numbers are fixed when the session
enters TRANSACTION; DELE only marks; the marks are carried out when the client says
QUIT (RFC 1939 6), through the store, so IMAP and ActiveSync sessions see it. A
dropped connection, a timeout or a server shutdown removes nothing.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from protocols.auth import Account, LoginOutcome, PasswordChecker, SaslError, decode_sasl_plain
from protocols.connection import ConnectionInfo, is_loopback
from protocols.pop3 import core
from protocols.pop3.core import RespCode, err, ok
from store.errors import StoreError

# RFC 1939 3: the autologout timer must be at least 10 minutes once logged in.
IDLE_TIMEOUT: Final = 600.0
PREAUTH_TIMEOUT: Final = 60.0  # before login a client has no business idling
SEND_TIMEOUT: Final = 300.0
RECEIVE_CHUNK: Final = 16 * 1024
# Messages up to this size are read on the event loop (a page-cache read costs less than
# a thread hand-off); larger ones in a worker thread (ARCHITECTURE: long disk work).
INLINE_READ_LIMIT: Final = 64 * 1024

log = logging.getLogger("mailhost.pop3")


@dataclass(frozen=True, slots=True)
class DropMessage:
    uid: int
    size: int


@dataclass(frozen=True, slots=True)
class Listing:
    """The maildrop at login: UIDs and sizes by message number - 1 (two arrays, so a
    100,000-message Inbox costs no object per message)."""

    uids: Sequence[int]
    sizes: Sequence[int]

    def __len__(self) -> int:
        return len(self.uids)

    def __getitem__(self, index: int) -> DropMessage:
        return DropMessage(self.uids[index], self.sizes[index])


class Maildrop(Protocol):
    """A user's Inbox as POP3 needs it. Every method blocks; the session runs them in a
    worker thread."""

    @property
    def uidvalidity(self) -> int: ...

    def messages(self) -> Listing: ...

    def read(self, uid: int) -> bytes | None:
        """The message, or None when it is gone (expunged by another session)."""
        ...

    def read_cached(self, uid: int) -> bytes | None:
        """The message if it can be read without waiting for the store (no lock), else
        None (then `read` in a worker thread)."""
        ...

    def delete(self, uids: Sequence[int]) -> None:
        """Remove durably; when this returns the messages are gone for every protocol."""
        ...


class MaildropOpener(Protocol):
    def open(self, account: Account) -> Maildrop: ...


class MaildropLocks:
    """One POP3 session per mailbox at a time (RFC 1939 8: the maildrop is locked);
    IMAP and ActiveSync sessions are not affected."""

    def __init__(self) -> None:
        self._held: set[str] = set()

    def acquire(self, mailbox_id: str) -> bool:
        if mailbox_id in self._held:
            return False
        self._held.add(mailbox_id)
        return True

    def release(self, mailbox_id: str) -> None:
        self._held.discard(mailbox_id)


@dataclass(frozen=True, slots=True)
class Pop3Settings:
    hostname: str
    plaintext_on_loopback: bool = False  # allow USER/PASS without TLS from 127.0.0.0/8, ::1
    idle_timeout: float = IDLE_TIMEOUT
    preauth_timeout: float = PREAUTH_TIMEOUT


def uidl(uid: int, uidvalidity: int) -> str:
    # Dovecot's pop3_uidl_format %08Xu%08Xv: stable across sessions and restarts.
    return f"{uid:08X}{uidvalidity:08X}"


class _Closed(Exception):
    pass


class Pop3Session:
    def __init__(
        self,
        stream: trio.abc.Stream,
        info: ConnectionInfo,
        *,
        settings: Pop3Settings,
        checker: PasswordChecker,
        maildrops: MaildropOpener,
        locks: MaildropLocks,
        tls_available: bool = True,
    ) -> None:
        self.stream = stream
        self.info = info
        self.settings = settings
        self.checker = checker
        self.maildrops = maildrops
        self.locks = locks
        self.tls_available = tls_available
        self.core = core.Pop3Core()
        self.tls_active = info.tls
        self.account: Account | None = None
        self.drop: Maildrop | None = None
        self.uidvalidity = 0
        self.listing = Listing((), ())
        self.total_size = 0
        self.deleted: set[int] = set()  # message numbers marked by DELE

    @property
    def plaintext_ok(self) -> bool:
        if self.tls_active:
            return True
        return self.settings.plaintext_on_loopback and is_loopback(self.info.peer[0])

    async def run(self) -> None:
        try:
            if self.info.over_peer_limit:
                await self._send(err("too many connections from your address", RespCode.SYS_TEMP))
                return
            await self._send(ok(f"{self.settings.hostname} POP3 server ready"))
            await self._loop()
        except _Closed:
            pass
        except trio.TooSlowError:
            log.info("pop3: %s timed out", self.info.peer[0])
        finally:
            if self.account is not None:
                self.locks.release(self.account.mailbox_id)

    async def _loop(self) -> None:
        while True:
            command = self.core.next_command()
            if isinstance(command, core.NeedData):
                await self._receive()
                continue
            if isinstance(command, core.BadCommand):
                await self._send(err(command.reason))
                if command.fatal:
                    return
                continue
            if self.info.drain.started:
                await self._send(
                    err("server shutting down; nothing was deleted", RespCode.SYS_TEMP)
                )
                return
            if not await self._dispatch(command):
                return

    async def _receive(self) -> None:
        timeout = self.settings.idle_timeout if self.account else self.settings.preauth_timeout
        data: bytes | bytearray = b""
        with self.info.drain.idle(timeout) as idle:
            data = await self.stream.receive_some(RECEIVE_CHUNK)
        if idle.cancelled_caught:
            if not self.info.drain.started:
                raise trio.TooSlowError
            await self._send(err("server shutting down; nothing was deleted", RespCode.SYS_TEMP))
            raise _Closed
        if not data:
            raise _Closed
        self.core.receive_data(data)

    async def _send(self, data: bytes) -> None:
        with trio.fail_after(SEND_TIMEOUT):
            await self.stream.send_all(data)

    async def _dispatch(self, command: core.Command) -> bool:
        """Carry out one command; False ends the session."""
        match command:
            case core.Capa():
                caps = core.capabilities(
                    tls_active=self.tls_active,
                    tls_available=self.tls_available,
                    plaintext_ok=self.plaintext_ok,
                )
                await self._send(core.multiline(ok("Capability list follows"), caps))
            case core.Stls():
                await self._starttls()
            case core.User(name):
                if not self.plaintext_ok:
                    await self._send(err("use STLS first: no plaintext passwords", RespCode.AUTH))
                    self.core.user = None
                    return True
                self.core.user = name
                await self._send(ok("send PASS"))
            case core.Pass(password):
                user = self.core.user or ""
                self.core.user = None
                await self._login(user, password)
            case core.Auth(mechanism, initial):
                await self._auth(mechanism, initial)
            case core.Apop():
                await self._send(err("APOP is not offered; use USER/PASS or AUTH over TLS"))
            case core.Quit():
                return await self._quit()
            case _:
                await self._transaction(command)
        return True

    async def _starttls(self) -> None:
        if self.tls_active or not self.tls_available:
            await self._send(err("TLS is already active" if self.tls_active else "TLS unavailable"))
            return
        await self._send(ok("begin TLS negotiation"))
        self.core.starttls()  # RFC 2595 4: nothing buffered before the handshake survives
        tls = trio.SSLStream(self.stream, self.info.tls_context(), server_side=True)
        try:
            with trio.fail_after(30):
                await tls.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError):
            raise _Closed from None
        self.stream = tls
        self.tls_active = True

    async def _auth(self, mechanism: str | None, initial: str | None) -> None:
        if mechanism is None:
            mechanisms = [b"PLAIN"] if self.plaintext_ok else []
            await self._send(core.multiline(ok("SASL mechanisms follow"), mechanisms))
            return
        if mechanism != "PLAIN":
            await self._send(err(f"unsupported mechanism {mechanism[:20]}"))
            return
        if not self.plaintext_ok:
            await self._send(err("use STLS first: no plaintext passwords", RespCode.AUTH))
            return
        response = initial
        if response is None or response == "=":
            # RFC 5034 4: an empty challenge, then the response on its own line.
            await self._send(b"+ \r\n")
            self.core.begin_sasl()
            try:
                while isinstance(line := self.core.next_command(), core.NeedData):
                    await self._receive()
            finally:
                self.core.end_sasl()
            if isinstance(line, core.BadCommand):
                await self._send(err(line.reason))
                return
            assert isinstance(line, core.SaslResponse)
            response = line.data
        if response == "*":
            await self._send(err("authentication cancelled"))
            return
        try:
            authzid, authcid, password = decode_sasl_plain(response)
        except SaslError as exc:
            await self._send(err(f"malformed response: {exc}"))
            return
        if authzid and authzid.lower() != authcid.lower():
            await self._send(err("authorization identity must be the user itself", RespCode.AUTH))
            return
        await self._login(authcid, password)

    async def _login(self, login: str, password: str) -> None:
        result = await self.checker.authenticate(
            login, password, peer=self.info.peer[0], protocol="pop3"
        )
        if result.outcome is LoginOutcome.THROTTLED:
            await self._send(err("too many failed logins; try again later", RespCode.LOGIN_DELAY))
            return
        if not result.ok or result.account is None:
            await self._send(err("invalid user name or password", RespCode.AUTH))
            return
        account = result.account
        if not self.locks.acquire(account.mailbox_id):
            await self._send(err("another POP3 session holds this mailbox", RespCode.IN_USE))
            return
        self.account = account
        try:
            self.drop = await trio.to_thread.run_sync(self.maildrops.open, account)
            self.listing = await trio.to_thread.run_sync(self.drop.messages)
            self.total_size = sum(self.listing.sizes)
            self.uidvalidity = self.drop.uidvalidity
        except (OSError, StoreError) as exc:
            log.error("pop3: cannot open the mailbox of %s: %s", account.address, exc)
            self.locks.release(account.mailbox_id)
            self.account = None
            await self._send(err("mailbox unavailable; try again later", RespCode.SYS_TEMP))
            return
        self.core.authenticated()
        log.info(
            "pop3: login %s from %s, %d messages",
            account.address,
            self.info.peer[0],
            len(self.listing),
        )
        await self._send(ok(f"{len(self.listing)} messages"))

    def _message(self, msg: int) -> DropMessage | bytes:
        """The message numbered `msg`, or the -ERR line to answer with."""
        if msg > len(self.listing):
            return err(f"no message {msg}")
        if msg in self.deleted:
            return err(f"message {msg} is deleted")
        return self.listing[msg - 1]

    async def _transaction(self, command: core.Command) -> None:
        match command:
            case core.Stat():
                gone = sum(self.listing.sizes[i - 1] for i in self.deleted)
                count = len(self.listing) - len(self.deleted)
                await self._send(ok(f"{count} {self.total_size - gone}"))
            case core.ListCmd(None):
                deleted = self.deleted
                lines = [
                    b"%d %d" % (i, size)
                    for i, size in enumerate(self.listing.sizes, 1)
                    if i not in deleted
                ]
                await self._send(core.multiline(ok(f"{len(lines)} messages"), lines))
            case core.ListCmd(int(msg)):
                found = self._message(msg)
                await self._send(found if isinstance(found, bytes) else ok(f"{msg} {found.size}"))
            case core.Uidl(None):
                deleted = self.deleted
                tail = b"%08X" % self.uidvalidity
                lines = [
                    b"%d %08X%s" % (i, uid, tail)  # uidl(): UID then UIDVALIDITY, hex
                    for i, uid in enumerate(self.listing.uids, 1)
                    if i not in deleted
                ]
                await self._send(core.multiline(ok("unique-id listing follows"), lines))
            case core.Uidl(int(msg)):
                found = self._message(msg)
                if isinstance(found, bytes):
                    await self._send(found)
                else:
                    await self._send(ok(f"{msg} {uidl(found.uid, self.uidvalidity)}"))
            case core.Retr(msg):
                await self._send_message(msg, None)
            case core.Top(msg, lines):
                await self._send_message(msg, lines)
            case core.Dele(msg):
                found = self._message(msg)
                if isinstance(found, bytes):
                    await self._send(found)
                else:
                    self.deleted.add(msg)
                    await self._send(ok(f"message {msg} deleted"))
            case core.Noop():
                await self._send(ok())
            case core.Rset():
                self.deleted.clear()
                await self._send(ok(f"{len(self.listing)} messages"))

    async def _send_message(self, msg: int, body_lines: int | None) -> None:
        found = self._message(msg)
        if isinstance(found, bytes):
            await self._send(found)
            return
        assert self.drop is not None
        data = self.drop.read_cached(found.uid) if found.size <= INLINE_READ_LIMIT else None
        if data is None:
            try:
                data = await trio.to_thread.run_sync(self.drop.read, found.uid)
            except StoreError as exc:
                log.error("pop3: reading message %d failed: %s", msg, exc)
                await self._send(err("mailbox unavailable; try again later", RespCode.SYS_TEMP))
                return
        if data is None:
            await self._send(err(f"message {msg} was removed by another session"))
            return
        await self._send(core.retr_payload(ok(f"{found.size} octets"), data, body_lines=body_lines))

    async def _quit(self) -> bool:
        if self.core.state is not core.State.TRANSACTION or self.drop is None:
            await self._send(ok(f"{self.settings.hostname} POP3 server signing off"))
            return False
        self.core.enter_update()
        uids = [self.listing.uids[i - 1] for i in sorted(self.deleted)]
        if uids:
            try:
                await trio.to_thread.run_sync(self.drop.delete, uids)
            except (OSError, StoreError) as exc:
                log.error("pop3: removing %d messages failed: %s", len(uids), exc)
                await self._send(err("some deleted messages not removed", RespCode.SYS_TEMP))
                return False
            assert self.account is not None
            log.info("pop3: %s removed %d message(s)", self.account.address, len(uids))
        await self._send(ok(f"{self.settings.hostname} POP3 server signing off"))
        return False


async def serve_pop3(
    stream: trio.abc.Stream,
    info: ConnectionInfo,
    *,
    settings: Pop3Settings,
    checker: PasswordChecker,
    maildrops: MaildropOpener,
    locks: MaildropLocks,
) -> None:
    session = Pop3Session(
        stream, info, settings=settings, checker=checker, maildrops=maildrops, locks=locks
    )
    await session.run()
