"""The trio I/O layer for SMTP: one coroutine per connection around the sans-IO core.

`serve_smtp()` owns what the core cannot: the stream, TLS (STARTTLS and implicit TLS
with a context fetched at each handshake, so certificate reloads take effect), time
(state-dependent read timeouts, a total session cap, the TLS handshake deadline, the
sleep on errors), spooling message content (memory first, then a temporary file), and
shutdown (the server's drain answered with 421 at the next command boundary).

Policy arrives through `SmtpBackend`, a `typing.Protocol` the caller implements (the
hub transport does): who may authenticate, which senders and recipients are accepted,
and what happens to a received message. The connector kind decides the rest:

- `default` (port 25): STARTTLS offered; AUTH offered only after TLS; anonymous
  senders allowed unless `anonymous_allowed` is off (then 530 5.7.0 at MAIL).
- `client` (ports 587 and 465): MAIL needs TLS (530 5.7.0, RFC 3207 4) and AUTH
  (530 5.7.0, RFC 4954 6); AUTH itself is offered only after TLS, so AUTH in plaintext
  gets 538 5.7.11 from the core. Port 465 sets `implicit_tls`: this layer does the
  handshake before the greeting (RFC 8314 3.3).

Any unexpected exception ends the session with `421 4.3.0` and a logged traceback; no
traceback text ever reaches the peer. Logs go to the `mailhost.smtp` logger: one line
per refusal with its reason, one per accepted message.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import io
import logging
import math
import os
import secrets
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NoReturn, Protocol

import trio

from protocols.connection import Drain, PlainSocketIO
from protocols.smtp.address import Address
from protocols.smtp.core import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_RECIPIENTS,
    HARD_ERROR_LIMIT,
    JUNK_COMMAND_LIMIT,
    NEED_DATA,
    SOFT_ERROR_LIMIT,
    Auth,
    AuthResponse,
    Bdat,
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
from protocols.smtp.esmtp import Extensions, MailParams, RcptParams
from protocols.smtp.replies import MessageRejected, Reply, SmtpError
from protocols.smtp.sasl import MECHANISMS, Challenge, Credentials, SaslError, SaslExchange

__all__ = [
    "DEFAULT_CONNECTIONS_PER_CLIENT",
    "DEFAULT_MEMORY_SPOOL_LIMIT",
    "AuthResult",
    "ClientConnectionLimiter",
    "ConnectorKind",
    "Envelope",
    "EnvelopeRecipient",
    "LimiterStatistics",
    "MessageContent",
    "PeerAddress",
    "SessionState",
    "SmtpBackend",
    "SmtpSettings",
    "SmtpTimeouts",
    "TlsContextProvider",
    "TlsInfo",
    "serve_smtp",
    "with_protocol",
]

logger = logging.getLogger("mailhost.smtp")

PeerAddress = tuple[str, int]
TlsContextProvider = Callable[[], ssl.SSLContext | None]

# How much we ask the kernel for at once; also bounds one MessageData event.
RECEIVE_SIZE = 65536
# Messages up to this size stay in memory; larger ones go to a temporary file.
DEFAULT_MEMORY_SPOOL_LIMIT = 1024 * 1024
# Postfix smtpd_client_connection_count_limit.
DEFAULT_CONNECTIONS_PER_CLIENT = 50
# Boundaries at which a draining server may end the session (no message in flight).
_COMMAND_BOUNDARY = frozenset(
    {State.CONNECTED, State.READY, State.MAIL, State.RCPT, State.CHUNKING, State.REFUSED}
)


class ConnectorKind(enum.StrEnum):
    """The receive connector a listener belongs to (as Exchange names them)."""

    DEFAULT = "default"  # port 25: the Internet delivering to us
    CLIENT = "client"  # ports 587 and 465: users' mail programs submitting


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpTimeouts:
    """Seconds. The RFC 5321 4.5.3.2 values where the RFC gives one."""

    # RFC 5321 4.5.3.2.7: "server timeout ... at least 5 minutes" waiting for a command.
    command: float = 300.0
    # Until EHLO/HELO nothing is invested in the session: shorter, as Postfix does
    # under stress (${stress?10:300}s) and Stalwart does before authentication.
    before_ehlo: float = 60.0
    # Dovecot CVE-2014-3430: an unfinished handshake must not hold a slot forever.
    tls_handshake: float = 30.0
    # A cap on the whole session, whatever it does (slowloris dribbling bytes).
    session: float = 3600.0
    # A reply must get out within this (a peer that never reads).
    send: float = 60.0
    # Postfix smtpd_error_sleep_time: each error past the soft limit waits this long.
    error_sleep: float = 1.0
    # Grace for closing the stream (TLS close_notify).
    close: float = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    """One listener's SMTP settings, built once from the config."""

    hostname: str
    connector: ConnectorKind = ConnectorKind.DEFAULT
    # Port 465: serve_smtp() does the TLS handshake before the greeting.
    implicit_tls: bool = False
    # The "anonymous users" permission group of the default connector.
    anonymous_allowed: bool = True
    # Offer STARTTLS when a TLS context is available (ignored under implicit TLS).
    starttls: bool = True
    # SASL mechanisms offered after TLS (never before: item 32 of our checklist).
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    soft_error_limit: int = SOFT_ERROR_LIMIT
    hard_error_limit: int = HARD_ERROR_LIMIT
    junk_command_limit: int = JUNK_COMMAND_LIMIT
    memory_spool_limit: int = DEFAULT_MEMORY_SPOOL_LIMIT
    # Where larger messages are spooled (None: the system temporary directory). Put it
    # on the store's file system if the backend wants to link rather than copy.
    spool_directory: str | None = None
    timeouts: SmtpTimeouts = field(default_factory=SmtpTimeouts)
    eight_bit_mime: bool = True
    smtputf8: bool = True
    dsn: bool = True
    chunking: bool = True
    binary_mime: bool = True
    pipelining: bool = True
    banner: str = "ESMTP"

    def __post_init__(self) -> None:
        unknown = set(self.auth_mechanisms) - set(MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {sorted(unknown)}")
        if any(ch in self.hostname + self.banner for ch in "\r\n\x00"):
            raise ValueError("hostname and banner must be single lines")
        self.limits()  # validate the limits now, not at the first connection

    @property
    def requires_tls(self) -> bool:
        """MAIL needs TLS first (submission, RFC 3207 4 and RFC 8314)."""
        return self.connector is ConnectorKind.CLIENT

    @property
    def requires_auth(self) -> bool:
        """MAIL needs AUTH first (submission, or a default connector without anonymous)."""
        return self.connector is ConnectorKind.CLIENT or not self.anonymous_allowed

    def limits(self) -> ProtocolLimits:
        return ProtocolLimits(
            max_message_size=self.max_message_size,
            max_recipients=self.max_recipients,
            soft_error_limit=self.soft_error_limit,
            hard_error_limit=self.hard_error_limit,
            junk_command_limit=self.junk_command_limit,
        )

    def extensions(self, *, tls_active: bool, tls_possible: bool) -> Extensions:
        """What our EHLO offers in this TLS state; the core accepts exactly this."""
        return Extensions(
            size=self.max_message_size,
            eight_bit_mime=self.eight_bit_mime,
            smtputf8=self.smtputf8,
            pipelining=self.pipelining,
            starttls=self.starttls and tls_possible and not tls_active,
            auth=self.auth_mechanisms if tls_active else (),
            dsn=self.dsn,
            chunking=self.chunking,
            binary_mime=self.binary_mime and self.chunking,
        )


@dataclass(frozen=True, slots=True)
class TlsInfo:
    """The negotiated TLS parameters, for Received: and the logs."""

    version: str
    cipher: str
    bits: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionState:
    """A snapshot of the session, given to every backend call."""

    session_id: str
    peer: PeerAddress
    connector: ConnectorKind
    helo: str | None
    esmtp: bool
    tls: TlsInfo | None
    auth_user: str | None
    # The current transaction: the MAIL parameters (None outside a transaction), its
    # sender (None also for the null sender <>), and the recipients accepted so far.
    mail_params: MailParams | None
    sender: Address | None
    recipients: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The backend's verdict on credentials. `identity` is the user, None on failure.

    `reply` overrides the default answer (235 2.7.0 / 535 5.7.8), e.g. with
    `454 4.7.0` while the directory is unreachable.
    """

    identity: str | None
    reply: Reply | None = None

    @property
    def ok(self) -> bool:
        return self.identity is not None


@dataclass(frozen=True, slots=True)
class EnvelopeRecipient:
    """An accepted recipient with its DSN parameters (RFC 3461 NOTIFY, ORCPT)."""

    address: Address
    params: RcptParams


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """Everything the delivery (and its Received: header) needs to know."""

    session_id: str
    sender: Address | None  # None is the null reverse-path <>
    mail_params: MailParams  # BODY, SMTPUTF8, RET, ENVID, SIZE, AUTH=
    recipients: tuple[EnvelopeRecipient, ...]
    client: PeerAddress
    # The EHLO/HELO argument: printable, no CR/LF/NUL, but otherwise what the client
    # said; quote it before it goes into a header comment.
    helo: str
    tls: TlsInfo | None
    auth_user: str | None
    protocol: str  # RFC 3848 / RFC 6531 3.7.3 "with" value: ESMTPSA, UTF8SMTPS, ...
    connector: ConnectorKind
    hostname: str  # our name, the Received: "by"
    received_at: float  # time.time() at the end of the message


@dataclass(frozen=True, slots=True)
class MessageContent:
    """The message as received: DATA content unstuffed, BDAT octets as sent.

    Small messages are in `data`; larger ones in the spool file at `path`, which is
    removed once deliver() returns (link or copy it before returning).
    """

    size: int
    data: bytes | None = None
    path: str | None = None

    def open(self) -> BinaryIO:
        """A binary file object positioned at the start (blocking reads if on disk)."""
        if self.data is not None:
            return io.BytesIO(self.data)
        assert self.path is not None
        return open(self.path, "rb")


class SmtpBackend(Protocol):
    """Policy and delivery, supplied by the caller (the hub transport)."""

    async def authenticate(self, session: SessionState, credentials: Credentials) -> AuthResult:
        """Check credentials. Throttling failed attempts is the backend's job."""
        ...

    async def check_sender(
        self, session: SessionState, sender: Address | None, params: MailParams
    ) -> Reply | None:
        """None accepts the sender; a Reply refuses it (e.g. 553 5.7.1 not yours)."""
        ...

    async def check_recipient(
        self, session: SessionState, recipient: Address, params: RcptParams
    ) -> Reply | None:
        """None accepts the recipient; a Reply refuses it (550 5.1.1, 554 5.7.1 ...)."""
        ...

    async def deliver(self, envelope: Envelope, message: MessageContent) -> Reply:
        """Take responsibility for the message (RFC 5321 6.1) and answer for it."""
        ...


def with_protocol(*, esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The Received: `with` keyword (RFC 3848 2; RFC 6531 3.7.3 for SMTPUTF8)."""
    if not esmtp:
        return "SMTP"
    base = "UTF8SMTP" if smtputf8 else "ESMTP"
    return base + ("S" if tls else "") + ("A" if authenticated else "")


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    clients: int
    connections: int


class ClientConnectionLimiter:
    """Concurrent sessions per client address (Postfix's per-client connection count).

    Share one between the listeners that should count together; non-blocking.
    """

    def __init__(self, max_per_client: int = DEFAULT_CONNECTIONS_PER_CLIENT) -> None:
        if max_per_client < 1:
            raise ValueError("max_per_client must be at least 1")
        self.max_per_client = max_per_client
        self._counts: dict[str, int] = {}

    def try_acquire(self, client: str) -> bool:
        count = self._counts.get(client, 0)
        if count >= self.max_per_client:
            return False
        self._counts[client] = count + 1
        return True

    def release(self, client: str) -> None:
        count = self._counts.get(client, 0) - 1
        if count > 0:
            self._counts[client] = count
        else:
            self._counts.pop(client, None)

    def statistics(self) -> LimiterStatistics:
        return LimiterStatistics(len(self._counts), sum(self._counts.values()))


class _Spool:
    """Message content: in memory up to a limit, then in a temporary file."""

    def __init__(self, memory_limit: int, directory: str | None) -> None:
        self._memory_limit = memory_limit
        self._directory = directory
        self._parts: list[bytes] = []
        self._size = 0
        self._file: BinaryIO | None = None
        self._path: str | None = None
        # A write that failed (disk full, the spool folder gone): the rest of the message
        # is read and dropped, and its end gets a 4xx instead of the session breaking.
        self.failed: OSError | None = None

    async def write(self, data: bytes) -> None:
        self._size += len(data)
        if self.failed is not None:
            return
        file = self._file
        try:
            if file is None:
                self._parts.append(data)
                if self._size <= self._memory_limit:
                    return
                opened, self._path = await trio.to_thread.run_sync(self._open_file)
                self._file = file = opened
                data = b"".join(self._parts)
                self._parts = []
            await trio.to_thread.run_sync(file.write, data)
        except OSError as exc:
            await self._fail(exc)

    async def _fail(self, exc: OSError) -> None:
        self.failed = exc
        logger.warning("cannot spool a message: %s", exc.strerror or exc)
        with trio.CancelScope(shield=True):
            await self.discard()

    def _open_file(self) -> tuple[BinaryIO, str]:
        handle, path = tempfile.mkstemp(prefix="smtp-", suffix=".msg", dir=self._directory)
        return os.fdopen(handle, "wb"), path

    async def finish(self) -> MessageContent | None:
        """The message, or None when spooling failed (see `failed`)."""
        if self.failed is not None:
            return None
        if self._file is None:
            return MessageContent(self._size, data=b"".join(self._parts))
        try:
            await trio.to_thread.run_sync(self._file.flush)
        except OSError as exc:
            await self._fail(exc)
            return None
        return MessageContent(self._size, path=self._path)

    @property
    def in_memory(self) -> bool:
        return self._file is None

    async def discard(self) -> None:
        self._parts = []
        if self._file is not None:
            file, path = self._file, self._path
            self._file = self._path = None
            await trio.to_thread.run_sync(_close_and_remove, file, path)


def _close_and_remove(file: BinaryIO, path: str | None) -> None:
    with contextlib.suppress(OSError):  # a close that fails to flush: the file goes anyway
        file.close()
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _spool_failure_reply(exc: OSError) -> Reply:
    """RFC 3463 4.3.1 "mail system full" when the disk is, else a plain local error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Reply(452, "4.3.1", "Insufficient system storage, try again later")
    return Reply(451, "4.3.0", "Local error writing the message, try again later")


# What a session was waiting for when its scope was cancelled.
_RECEIVING, _SENDING = "receiving", "sending"


class _Deadlines:
    """The I/O deadlines of the SMTP sessions of one trio run, enforced by one system
    task that cancels a session's scope when its deadline passes.

    A session moves its deadline before every wait for its client and clears it after;
    that is two float assignments, where a trio cancel scope per wait (created, entered,
    registered with the run's deadlines, closed) cost a fifth of a session's CPU.

    The task sleeps until the earliest deadline it knows, but never longer than the
    shortest timeout any session has used (while there are sessions). So a deadline set
    while it sleeps (now + a timeout at least that short) is never earlier than its
    wake-up, and a wait costs the task nothing; it wakes early only when a shorter
    timeout than ever before appears. Each wake-up looks at every session: one pass per
    shortest timeout (a minute by default), however busy the sessions are.
    """

    _current: trio.lowlevel.RunVar[_Deadlines] = trio.lowlevel.RunVar("smtp_deadlines")

    def __init__(self) -> None:
        self.sessions: set[_Session] = set()
        self.wake_at = math.inf
        self.shortest = math.inf  # the shortest timeout used so far
        self.passes = 0  # looks at every session so far
        self._moved = trio.Event()

    @classmethod
    def of_this_run(cls) -> _Deadlines:
        try:
            return cls._current.get()
        except LookupError:
            deadlines = cls()
            cls._current.set(deadlines)
            trio.lowlevel.spawn_system_task(deadlines._enforce, name="smtp session deadlines")
            return deadlines

    def moved(self, deadline: float, timeout: float) -> None:
        if timeout < self.shortest:
            self.shortest = timeout
            self._moved.set()
        if deadline < self.wake_at:
            self.wake_at = deadline
            self._moved.set()

    async def _enforce(self) -> None:
        try:
            while True:
                now = trio.current_time()
                wake = math.inf
                self.passes += 1
                for session in list(self.sessions):
                    deadline = session.io_deadline
                    if deadline <= now:
                        session.expire()
                    elif deadline < wake:
                        wake = deadline
                if self.sessions:
                    wake = min(wake, now + self.shortest)
                if self._moved.is_set():
                    self._moved = trio.Event()
                self.wake_at = wake
                with trio.move_on_at(wake):
                    await self._moved.wait()
        except trio.Cancelled:
            return  # the run is ending


class _Closing(Exception):
    """The stream is gone or must go: stop serving without further replies."""


async def serve_smtp(
    stream: trio.abc.Stream,
    peer: PeerAddress,
    *,
    settings: SmtpSettings,
    backend: SmtpBackend,
    tls_context: TlsContextProvider | None = None,
    drain: Drain | None = None,
    limiter: ClientConnectionLimiter | None = None,
) -> None:
    """Serve one SMTP connection until it ends; always closes `stream`.

    `peer` is the client's (address, port). `tls_context` is called at each handshake
    (STARTTLS, or at once with `settings.implicit_tls`) and may return None when no
    certificate is available (STARTTLS then answers 454 and is not advertised if the
    provider is absent). `drain` started means the server is stopping: at the next
    command boundary the client gets `421 4.3.2` and the connection closes. `limiter`
    counts concurrent sessions per client address (over the limit: 421 4.7.0).
    Never raises for anything the peer does; only Cancelled propagates.
    """
    session = _Session(stream, peer, settings, backend, tls_context, drain)
    acquired = limiter.try_acquire(peer[0]) if limiter is not None else True
    try:
        await session.run(over_limit=not acquired)
    finally:
        if limiter is not None and acquired:
            limiter.release(peer[0])
        await session.aclose()


class _ByteIO(Protocol):
    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int) -> bytes | bytearray: ...


class _Session:
    def __init__(
        self,
        stream: trio.abc.Stream,
        peer: PeerAddress,
        settings: SmtpSettings,
        backend: SmtpBackend,
        tls_context: TlsContextProvider | None,
        drain: Drain | None,
    ) -> None:
        self.stream = stream
        # Plain TCP: send and receive on the socket directly (see PlainSocketIO);
        # after STARTTLS, through the TLS stream.
        self.io: _ByteIO = stream
        if isinstance(stream, trio.SocketStream):
            self.io = PlainSocketIO(stream)
        self.peer = peer
        self.settings = settings
        self.backend = backend
        self.tls_context = tls_context
        self.drain = drain
        self.id = secrets.token_hex(6)
        self.tls: TlsInfo | None = None
        self.auth_user: str | None = None
        self.recipients: list[EnvelopeRecipient] = []
        self.spool: _Spool | None = None
        self.sasl: SaslExchange | None = None
        self.out = bytearray()
        # One cancel scope for the whole session: its deadline is the session's time
        # limit, and _Deadlines cancels it when a wait for the client (the command
        # timeout) or a send (the send timeout) takes too long.
        self.session_deadline = math.inf
        self.scope = trio.CancelScope()
        self.io_deadline = math.inf  # enforced by _Deadlines
        self.deadlines = _Deadlines.of_this_run()
        self.in_scope = False
        self.waiting: str | None = None  # what the scope's deadline is guarding now
        self.conn = ServerConnection(
            extensions=self._extensions(), limits=settings.limits(), tls_active=False
        )

    # ---------------------------------------------------------------- plumbing

    def _extensions(self) -> Extensions:
        return self.settings.extensions(
            tls_active=self.tls is not None, tls_possible=self.tls_context is not None
        )

    def _log(self, level: int, message: str, *args: object) -> None:
        logger.log(level, "session=%s client=%s " + message, self.id, self.peer[0], *args)

    def _state(self) -> SessionState:
        mail = self.conn.mail
        return SessionState(
            session_id=self.id,
            peer=self.peer,
            connector=self.settings.connector,
            helo=self.conn.helo_name,
            esmtp=self.conn.esmtp,
            tls=self.tls,
            auth_user=self.auth_user,
            mail_params=mail.params if mail is not None else None,
            sender=mail.sender if mail is not None else None,
            recipients=tuple(r.address for r in self.recipients) if mail is not None else (),
        )

    def _wait_for(self, what: str, timeout: float) -> None:
        """A deadline for one wait (see _Deadlines)."""
        self.waiting = what
        self.io_deadline = deadline = trio.current_time() + timeout
        self.deadlines.moved(deadline, timeout)

    def _waited(self) -> None:
        self.waiting = None
        self.io_deadline = math.inf

    def expire(self) -> None:
        """The deadline of the current wait has passed."""
        self.io_deadline = math.inf
        self.scope.cancel()

    async def _flush(self, *, shielded: bool = False) -> None:
        """Send what is queued within the send timeout. `shielded`: the caller shields
        the send from cancellation, the session scope's deadline included."""
        if not self.out or self._send_now():
            return
        data = bytes(self.out)
        self.out.clear()
        if self.in_scope and not shielded:
            # Within the session scope (not shielded): its deadline bounds the send.
            self._wait_for(_SENDING, self.settings.timeouts.send)
            await self._send(data)
            self._waited()
            return
        with trio.move_on_after(self.settings.timeouts.send) as scope:
            await self._send(data)
        if scope.cancelled_caught:
            self._log(logging.INFO, "timeout sending a reply")
            raise _Closing

    def _send_now(self) -> bool:
        """On plain TCP, send what is queued if the socket takes it all now: no deadline
        and no cancel scope are needed for a send that cannot wait (the usual case). What
        it does not take stays queued for the waiting send. True when all went."""
        if not isinstance(self.io, PlainSocketIO):
            return False
        try:
            sent = self.io.send_nowait(bytes(self.out))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._log(logging.INFO, "connection lost while sending: %s", error or "closed")
            raise _Closing from None
        del self.out[:sent]
        return not self.out

    async def _send(self, data: bytes) -> None:
        try:
            await self.io.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._log(logging.INFO, "connection lost while sending: %s", error or "closed")
            raise _Closing from None

    async def _reply(self, reply: Reply, context: str) -> None:
        """Queue a reply (sent when input runs dry, RFC 2920 3.1); log refusals."""
        if reply.code >= 400:
            self._log(logging.INFO, "refused %s: %s", context, reply)
            if reply.code != 421 and self.conn.error_count >= self.settings.soft_error_limit:
                # Postfix smtpd_error_sleep_time: slow down a client that keeps failing.
                await self._flush()
                await trio.sleep(self.settings.timeouts.error_sleep)
        self.out += self.conn.send(reply)

    async def _receive(self) -> bytes:
        """Read more input within the state's timeout. A timeout or a drain cancels the
        session scope, and `run` says goodbye (see `_after_cancel`)."""
        idle = self.drain if self.conn.state in _COMMAND_BOUNDARY else None
        if idle is not None and idle.started:
            await self._close_with(_SHUTTING_DOWN)  # began while we were busy: do not wait
        timeouts = self.settings.timeouts
        timeout = (
            timeouts.before_ehlo
            if self.conn.state in (State.CONNECTED, State.REFUSED)
            else timeouts.command
        )
        self._wait_for(_RECEIVING, timeout)
        if idle is not None:
            idle.waiting(self.scope)  # the drain cancels the session scope
        try:
            data = await self.io.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._log(logging.INFO, "connection lost: %s", error or "closed")
            raise _Closing from None
        finally:
            if idle is not None:
                idle.busy(self.scope)
        self._waited()
        return bytes(data)

    async def _close_with(self, reply: Reply) -> NoReturn:
        if reply.code >= 400:
            self._log(logging.INFO, "closing: %s", reply)
        self.out += self.conn.send(reply)
        await self._flush()
        raise _Closing

    async def _start_tls(self, context: ssl.SSLContext) -> bool:
        tls_stream = trio.SSLStream(self.stream, context, server_side=True)
        with trio.move_on_after(self.settings.timeouts.tls_handshake) as scope:
            try:
                await tls_stream.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                cause = error.__cause__ or error
                self._log(logging.INFO, "TLS handshake failed: %s", cause)
                return False
        if scope.cancelled_caught:
            self._log(logging.INFO, "TLS handshake timed out")
            return False
        self._tls_established(tls_stream)
        return True

    def _tls_established(self, tls_stream: trio.SSLStream[trio.abc.Stream]) -> None:
        self.stream = self.io = tls_stream
        cipher = tls_stream.cipher()
        self.tls = TlsInfo(
            version=tls_stream.version() or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            bits=cipher[2] if cipher else None,
        )
        self._log(logging.DEBUG, "TLS established: %s %s", self.tls.version, self.tls.cipher)

    async def aclose(self) -> None:
        await self._drop_spool()
        if isinstance(self.io, PlainSocketIO):
            # Closing a TCP socket never waits (the kernel sends what is queued, then
            # FIN): no time limit, no checkpoint to pay for.
            self.io.close()
            return
        with trio.move_on_after(self.settings.timeouts.close):
            await self.stream.aclose()

    async def _drop_spool(self) -> None:
        if self.spool is not None:
            spool, self.spool = self.spool, None
            if spool.in_memory:
                await spool.discard()  # nothing on disk: it does not wait, no shield needed
                return
            with trio.CancelScope(shield=True):
                await spool.discard()

    # ---------------------------------------------------------------- the loop

    async def run(self, *, over_limit: bool) -> None:
        self.session_deadline = trio.current_time() + self.settings.timeouts.session
        self.scope.deadline = self.session_deadline
        self.deadlines.sessions.add(self)
        with self.scope:
            self.in_scope = True
            try:
                await self._serve_guarded(over_limit)
            finally:
                self.in_scope = False
                self.deadlines.sessions.discard(self)
                self.io_deadline = math.inf
        if self.scope.cancelled_caught:
            try:
                await self._after_cancel()
            except _Closing:
                pass

    async def _after_cancel(self) -> None:
        """Goodbye after the session scope was cancelled: by the drain, by a wait's
        timeout, or by the session's time limit."""
        if (
            self.drain is not None
            and self.drain.started
            and self.waiting == _RECEIVING
            and self.conn.state in _COMMAND_BOUNDARY
        ):
            await self._close_with(_SHUTTING_DOWN)  # idle when draining began
        if self.waiting == _SENDING:
            self._log(logging.INFO, "timeout sending a reply")
            return
        with trio.move_on_after(self.settings.timeouts.close):
            if self.waiting == _RECEIVING and trio.current_time() < self.session_deadline:
                self._log(logging.INFO, "timeout in state %s", self.conn.state)
                await self._close_with(
                    Reply(421, "4.4.2", f"{self.settings.hostname} Timeout, closing")
                )
            self._log(logging.INFO, "session time limit reached")
            await self._close_with(Reply(421, "4.4.2", "Session time limit exceeded"))

    async def _serve_guarded(self, over_limit: bool) -> None:
        try:
            await self._serve(over_limit)
        except _Closing:
            pass
        except Exception:
            # One bad connection logs and closes; it never takes the server down, and
            # the peer never sees more than a 421.
            logger.exception("session=%s client=%s internal error", self.id, self.peer[0])
            with contextlib.suppress(_Closing, Exception):
                await self._close_with(Reply(421, "4.3.0", "Internal error, closing connection"))

    async def _serve(self, over_limit: bool) -> None:
        if isinstance(self.stream, trio.SSLStream) and self.stream.version():
            # The listener completed implicit TLS before handing the stream over.
            self._tls_established(self.stream)
            self.conn = ServerConnection(
                extensions=self._extensions(), limits=self.settings.limits(), tls_active=True
            )
        elif self.settings.implicit_tls:
            context = self._current_tls_context()
            if context is None:
                self._log(logging.WARNING, "implicit TLS without a certificate, closing")
                return
            if not await self._start_tls(context):
                return
            self.conn = ServerConnection(
                extensions=self._extensions(), limits=self.settings.limits(), tls_active=True
            )
        if over_limit:
            await self._close_with(Reply(421, "4.7.0", "Too many connections from your address"))
        self._log(logging.DEBUG, "connected from port %s", self.peer[1])
        self.out += self.conn.send(
            Reply(220, None, f"{self.settings.hostname} {self.settings.banner}")
        )
        conn = self.conn
        while True:
            conn = self.conn
            if conn.state is State.CLOSED:
                await self._flush()
                return
            if self.drain is not None and self.drain.started and conn.state in _COMMAND_BOUNDARY:
                await self._close_with(
                    Reply(421, "4.3.2", "Service shutting down, try again later")
                )
            try:
                event = conn.next_event()
            except MessageRejected as error:
                await self._drop_spool()
                await self._reply(error.reply, "message")
                continue
            except SmtpError as error:
                await self._reply(error.reply, "command")
                continue
            if event is NEED_DATA:
                await self._flush()
                conn.receive_data(await self._receive())
                continue
            await _HANDLERS[type(event)](self, event)
            if self.spool is not None and not conn.in_transaction:
                await self._drop_spool()

    # ---------------------------------------------------------------- handlers

    async def _on_ehlo(self, event: Event) -> None:
        assert isinstance(event, Ehlo)
        await self._reply(self.conn.extensions.ehlo_reply(self.settings.hostname), "EHLO")

    async def _on_helo(self, event: Event) -> None:
        assert isinstance(event, Helo)
        await self._reply(Reply(250, None, self.settings.hostname), "HELO")

    async def _on_mail(self, event: Event) -> None:
        assert isinstance(event, Mail)
        context = f"MAIL FROM:<{event.sender or ''}>"
        reply: Reply | None
        if self.settings.requires_tls and not self.conn.tls_active:
            reply = Reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 4
        elif self.settings.requires_auth and self.auth_user is None:
            reply = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 6
        else:
            reply = await self.backend.check_sender(self._state(), event.sender, event.params)
        if reply is None:
            reply = _SENDER_OK
        if reply.is_positive:
            self.recipients = []
        await self._reply(reply, context)

    async def _on_rcpt(self, event: Event) -> None:
        assert isinstance(event, Rcpt)
        reply = await self.backend.check_recipient(self._state(), event.recipient, event.params)
        if reply is None:
            reply = _RECIPIENT_OK
        if reply.is_positive:
            self.recipients.append(EnvelopeRecipient(event.recipient, event.params))
        await self._reply(reply, f"RCPT TO:<{event.recipient}>")

    async def _on_data(self, event: Event) -> None:
        assert isinstance(event, Data)
        self.spool = _Spool(self.settings.memory_spool_limit, self.settings.spool_directory)
        await self._reply(_GO_AHEAD, "DATA")

    async def _on_bdat(self, event: Event) -> None:
        assert isinstance(event, Bdat)
        if self.spool is None:
            self.spool = _Spool(self.settings.memory_spool_limit, self.settings.spool_directory)

    async def _on_message_data(self, event: Event) -> None:
        assert isinstance(event, MessageData)
        assert self.spool is not None
        await self.spool.write(event.data)

    async def _on_end_of_chunk(self, event: Event) -> None:
        assert isinstance(event, EndOfChunk)
        await self._reply(Reply(250, "2.0.0", f"{event.size} octets received"), "BDAT")

    async def _on_end_of_message(self, event: Event) -> None:
        assert isinstance(event, EndOfMessage)
        assert self.spool is not None
        mail = self.conn.mail
        assert mail is not None
        message = await self.spool.finish()
        if message is None:
            assert self.spool.failed is not None
            reply = _spool_failure_reply(self.spool.failed)
            await self._drop_spool()
            await self._reply(reply, f"message from=<{mail.sender or ''}>")
            return
        envelope = Envelope(
            session_id=self.id,
            sender=mail.sender,
            mail_params=mail.params,
            recipients=tuple(self.recipients),
            client=self.peer,
            helo=self.conn.helo_name or "",
            tls=self.tls,
            auth_user=self.auth_user,
            protocol=with_protocol(
                esmtp=self.conn.esmtp,
                tls=self.tls is not None,
                authenticated=self.auth_user is not None,
                smtputf8=mail.params.smtputf8,
            ),
            connector=self.settings.connector,
            hostname=self.settings.hostname,
            received_at=time.time(),
        )
        try:
            reply = await self.backend.deliver(envelope, message)
        finally:
            await self._drop_spool()
        if not reply.is_positive:
            rcpts = ",".join(f"<{r.address}>" for r in envelope.recipients)
            await self._reply(reply, f"message from=<{envelope.sender or ''}> to={rcpts}")
            return
        if logger.isEnabledFor(logging.DEBUG):  # the backend logs each accepted message
            self._log(
                logging.DEBUG,
                "accepted from=<%s> to=%s size=%d tls=%s auth=%s proto=%s reply=%s",
                envelope.sender or "",
                ",".join(f"<{r.address}>" for r in envelope.recipients),
                message.size,
                self.tls.version if self.tls else "no",
                self.auth_user or "-",
                envelope.protocol,
                reply,
            )
        # The message is ours now (fsynced or queued). Its 250 goes out at once, shielded:
        # a session cut here (the session cap, a drain) would otherwise drop the reply
        # and the client would send the message again (RFC 5321 6.1; RFC 1047). The send
        # is still bounded by the send timeout, and a closed socket ends it.
        self.out += self.conn.send(reply)
        if self._send_now():
            return  # it went at once: nothing could have cut it
        with trio.CancelScope(shield=True):
            await self._flush(shielded=True)

    async def _on_simple(self, event: Event) -> None:
        reply = _SIMPLE_REPLIES[type(event)]
        await self._reply(reply, type(event).__name__.upper())

    def _current_tls_context(self) -> ssl.SSLContext | None:
        """Ask the provider at each handshake, so a reloaded certificate is used at once."""
        if self.tls_context is None:
            return None
        try:
            return self.tls_context()
        except Exception:
            logger.exception("session=%s TLS context provider failed", self.id)
            return None

    async def _on_starttls(self, event: Event) -> None:
        assert isinstance(event, StartTls)
        context = self._current_tls_context()
        if context is None:
            # RFC 3207 4: 454 TLS not available due to temporary reason.
            await self._reply(Reply(454, "4.7.0", "TLS not available"), "STARTTLS")
            return
        discarded = self.conn.discarded_plaintext
        await self._reply(Reply(220, "2.0.0", "Ready to start TLS"), "STARTTLS")
        if self.conn.discarded_plaintext > discarded:
            self._log(
                logging.WARNING,
                "discarded %d octets pipelined after STARTTLS (command injection attempt)",
                self.conn.discarded_plaintext - discarded,
            )
        await self._flush()
        if not await self._start_tls(context):
            raise _Closing
        # RFC 3207 4.2: forget everything learnt before TLS.
        self.auth_user = None
        self.recipients = []
        self.conn.tls_established(self._extensions())

    async def _on_auth(self, event: Event) -> None:
        assert isinstance(event, Auth)
        self.sasl = MECHANISMS[event.mechanism]()
        await self._sasl_step(event.initial_response)

    async def _on_auth_response(self, event: Event) -> None:
        assert isinstance(event, AuthResponse)
        await self._sasl_step(event.data)

    async def _sasl_step(self, response: bytes | None) -> None:
        assert self.sasl is not None
        try:
            result = self.sasl.step(response)
        except SaslError as error:
            self.sasl = None
            await self._reply(
                Reply(501, "5.5.2", f"Malformed authentication data: {error}"), "AUTH"
            )
            return
        if isinstance(result, Challenge):
            await self._reply(Reply.challenge(result.data), "AUTH")
            return
        self.sasl = None
        verdict = await self.backend.authenticate(self._state(), result)
        if verdict.ok:
            self.auth_user = verdict.identity
            self._log(
                logging.INFO,
                "authenticated user=%s mechanism=%s",
                verdict.identity,
                result.mechanism,
            )
            reply = verdict.reply or Reply(235, "2.7.0", "Authentication successful")
        else:
            reply = verdict.reply or Reply(535, "5.7.8", "Authentication credentials invalid")
        await self._reply(reply, f"AUTH {result.mechanism} user={result.authcid!r}")

    async def _on_connection_closed(self, event: Event) -> None:
        assert isinstance(event, ConnectionClosed)
        if self.spool is not None or self.conn.mail is not None:
            self._log(logging.INFO, "connection lost during a mail transaction")
        await self._drop_spool()


# What each event of the core runs in a session (one table for every session).
_HANDLERS: dict[type[Event], Callable[[_Session, Any], Awaitable[None]]] = {
    Ehlo: _Session._on_ehlo,
    Helo: _Session._on_helo,
    Mail: _Session._on_mail,
    Rcpt: _Session._on_rcpt,
    Data: _Session._on_data,
    Bdat: _Session._on_bdat,
    MessageData: _Session._on_message_data,
    EndOfChunk: _Session._on_end_of_chunk,
    EndOfMessage: _Session._on_end_of_message,
    Rset: _Session._on_simple,
    Noop: _Session._on_simple,
    Quit: _Session._on_simple,
    Vrfy: _Session._on_simple,
    Expn: _Session._on_simple,
    Help: _Session._on_simple,
    StartTls: _Session._on_starttls,
    Auth: _Session._on_auth,
    AuthResponse: _Session._on_auth_response,
    ConnectionClosed: _Session._on_connection_closed,
}


# RFC 3463 4.3.2: system not accepting network messages.
_SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
_SENDER_OK = Reply(250, "2.1.0", "Sender OK")
_RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
_GO_AHEAD = Reply(354, None, "End data with <CR><LF>.<CR><LF>")

# RFC 5321 3.5.3: VRFY answers 252 when it will not say; EXPN is not offered (item 30).
_SIMPLE_REPLIES: dict[type[Event], Reply] = {
    Rset: Reply(250, "2.0.0", "OK"),
    Noop: Reply(250, "2.0.0", "OK"),
    Quit: Reply(221, "2.0.0", "Bye"),
    Vrfy: Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery"),
    Expn: Reply(502, "5.5.1", "EXPN not available"),
    Help: Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP"),
}
