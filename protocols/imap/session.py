"""IMAP over trio: the thin I/O layer around the sans-IO reader, bound to the store.

One :class:`ImapSession` per connection. It owns the stream (TLS, COMPRESS), time
(timeouts that depend on the state, the command throttle), and the order in which
responses go out; what each command does lives in :mod:`.mailboxes` (authenticated-state
commands) and :mod:`.messages` (selected-state commands), reached through one dispatch
table, :data:`HANDLERS` (STYLE rule 3). The gate for every command is decided by
:func:`~protocols.imap.state.gate_refusal` (STYLE rule 2).

The command loop:

1. read an event from the :class:`~protocols.imap.parser.CommandReader` (feeding it
   bytes as needed, with a timeout that depends on the state and the server's drain);
2. literals: ``+`` only after the state table and, for APPEND, the quota agree;
3. a command: throttle, gate, handler; the handler returns its tagged completion;
4. before that completion goes out, changes other sessions made to the selected folder
   are announced (:meth:`ImapSession.sync`), except EXPUNGE during FETCH, STORE and SEARCH
   (RFC 3501 7.4.1);
5. output is buffered per command and flushed before the session waits for input.

Blocking store calls run in worker threads (``trio.to_thread.run_sync``).
"""

from __future__ import annotations

import base64
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, NoReturn, TypeVar

import trio

from protocols.auth import Account, LoginOutcome, PasswordChecker, SaslError, decode_sasl_plain
from protocols.connection import ConnectionInfo, is_loopback
from store import (
    FolderDeleted,
    Mailbox,
    ResyncNeeded,
    Store,
    StoreError,
    Subscription,
)

from . import commands as c
from . import responses as r
from .compress import DeflateStream, InflateError
from .limits import MAX_COMMAND_SIZE, MAX_LINE_LENGTH
from .parser import (
    NEED_DATA,
    BadCommand,
    CommandReader,
    ContinuationLine,
    ContinuationNeeded,
    Event,
)
from .responses import ResponseCode, Status
from .selected import Delta, SelectedFolder, ViewOptions
from .settings import (
    IDLE_UPDATE_TIMEOUT,
    MAX_BAD_COMMANDS,
    MAX_LOGIN_FAILURES,
    PREAUTH_MAX_LINE,
    SEND_AS_IS_BYTES,
    SEND_TIMEOUT,
    TLS_HANDSHAKE_TIMEOUT,
    ImapSettings,
)
from .shared import ImapShared
from .state import ConnectionState, Outcome, gate_refusal, literal_refusal, next_state
from .storemap import error_response

__all__ = ["HANDLERS", "Handler", "ImapSession", "SessionClosed"]

log = logging.getLogger("mailhost.imap")

RECEIVE_CHUNK: Final = 16 * 1024
# Buffered output is sent once it passes this size (large FETCH responses stream out);
# also the largest write that small pieces are joined into.
FLUSH_AT: Final = 256 * 1024

# Capabilities that ENABLE can turn on (RFC 5161, RFC 7162 3.1/3.2, RFC 6855, RFC 9051).
ENABLEABLE: Final = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT", "IMAP4REV2")

# Commands that must not be interrupted by EXPUNGE (RFC 3501 7.4.1); their UID forms may.
_NO_EXPUNGE: Final = (c.FetchCommand, c.StoreCommand, c.SearchCommand, c.SortCommand)

T = TypeVar("T")


class SessionClosed(Exception):
    """The session is over (client gone, LOGOUT, BYE sent): unwind quietly."""


# How a session ends without it being the server's fault: quietly. (A client too slow to
# take our output raises TooSlowError from the send timeout.)
_ENDINGS: Final = (
    SessionClosed,
    trio.TooSlowError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    ssl.SSLError,
    InflateError,
)


Handler = Callable[["ImapSession", Any], Awaitable[bytes | None]]


class ImapSession:
    """One IMAP connection (see the module docstring)."""

    __slots__ = (
        "_last_refill",
        "_out",
        "_out_size",
        "_sending",
        "_tokens",
        "account",
        "bad_commands",
        "checker",
        "compressed",
        "condstore",
        "dirty",
        "enabled",
        "full_resync",
        "info",
        "login_failures",
        "mailbox",
        "reader",
        "selected",
        "selected_deleted",
        "settings",
        "shared",
        "state",
        "store",
        "stream",
        "subscription",
        "tls_active",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        info: ConnectionInfo,
        *,
        settings: ImapSettings,
        checker: PasswordChecker,
        store: Store,
        shared: ImapShared,
    ) -> None:
        self.stream = stream
        self.info = info
        self.settings = settings
        self.checker = checker
        self.store = store
        self.shared = shared
        self.reader = CommandReader(
            append_limit=settings.append_limit,
            max_line=PREAUTH_MAX_LINE,
            max_command=PREAUTH_MAX_LINE,
        )
        self.state = ConnectionState.NOT_AUTHENTICATED
        self.tls_active = info.tls
        self.compressed = False
        self.account: Account | None = None
        self.mailbox: Mailbox | None = None
        self.selected: SelectedFolder | None = None
        self.subscription: Subscription | None = None
        self.dirty = False
        self.full_resync = False
        self.selected_deleted = False
        self.enabled: set[str] = set()
        self.condstore = False
        self.bad_commands = 0
        self.login_failures = 0
        self._out: list[bytes] = []
        self._out_size = 0
        self._sending = False
        self._tokens = settings.command_burst
        self._last_refill = 0.0

    # --- facts ----------------------------------------------------------------------------

    @property
    def plaintext_ok(self) -> bool:
        """RFC 3501 6.2.3 / RFC 8314: passwords only inside TLS (or on loopback if allowed)."""
        if self.tls_active:
            return True
        return self.settings.plaintext_on_loopback and is_loopback(self.info.peer[0])

    @property
    def rev2(self) -> bool:
        return "IMAP4REV2" in self.enabled

    @property
    def utf8(self) -> bool:
        return "UTF8=ACCEPT" in self.enabled or self.rev2

    @property
    def view_options(self) -> ViewOptions:
        qresync = "QRESYNC" in self.enabled
        return ViewOptions(
            condstore=self.condstore or qresync,
            qresync=qresync,
            rev2=self.rev2,
            utf8=self.utf8,
        )

    def capabilities(self) -> list[str]:
        """Only what works is advertised; before login only what a client needs to log in."""
        caps = ["IMAP4rev1", "IMAP4rev2"]
        if not self.tls_active and self.state is ConnectionState.NOT_AUTHENTICATED:
            caps.append("STARTTLS")
        if self.state is ConnectionState.NOT_AUTHENTICATED:
            caps.append("AUTH=PLAIN" if self.plaintext_ok else "LOGINDISABLED")
            caps += ["SASL-IR", "ID", "ENABLE", "IDLE", "LITERAL-"]
            return caps
        caps += [
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "CHILDREN",
            "UIDPLUS",
            "MOVE",
            self.reader.capability,
            "SPECIAL-USE",
            "CREATE-SPECIAL-USE",
            "LIST-EXTENDED",
            "LIST-STATUS",
            "ESEARCH",
            "SEARCHRES",
            "CONDSTORE",
            "QRESYNC",
            "QUOTA",
            "QUOTA=RES-STORAGE",
            f"APPENDLIMIT={self.settings.append_limit}",
            "BINARY",
            "MULTIAPPEND",
            "STATUS=SIZE",
            "SAVEDATE",
            "UTF8=ACCEPT",
            "SORT",
            "THREAD=REFERENCES",
            "THREAD=ORDEREDSUBJECT",
        ]
        if not self.compressed:
            caps.append("COMPRESS=DEFLATE")
        return caps

    # --- output ---------------------------------------------------------------------------

    def emit(self, data: bytes) -> None:
        if data:
            self._out.append(data)
            self._out_size += len(data)

    def emit_all(self, lines: list[bytes]) -> None:
        self._out.extend(lines)
        self._out_size += sum(map(len, lines))

    @property
    def flush_due(self) -> bool:
        """Whether enough output is buffered to send it now (FETCH checks per message)."""
        return self._out_size >= FLUSH_AT

    async def flush(self, within: float = SEND_TIMEOUT) -> None:
        """Send the buffered output, all of it within ``within`` seconds (else TooSlowError).

        Small pieces are joined into writes of up to FLUSH_AT octets; a piece of
        SEND_AS_IS_BYTES or more (a message literal) is written as it is, so a large FETCH
        response is never copied into one buffer the size of the whole response.

        Only IDLE has two tasks that write: when its update task is still sending (to a
        client that stopped reading) and the command task says BYE, the BYE stays
        buffered; a second writer on the stream is not allowed, and the session ends.
        """
        if not self._out or self._sending:
            return
        out = self._out
        self._out = []
        self._out_size = 0
        send = self.stream.send_all
        self._sending = True
        try:
            with trio.fail_after(within):
                batch: list[bytes] = []
                size = 0
                for piece in out:
                    if len(piece) >= SEND_AS_IS_BYTES:
                        if batch:
                            await send(b"".join(batch))
                            batch, size = [], 0
                        await send(piece)
                        continue
                    batch.append(piece)
                    size += len(piece)
                    if size >= FLUSH_AT:
                        await send(b"".join(batch))
                        batch, size = [], 0
                if batch:
                    await send(b"".join(batch))
        finally:
            self._sending = False

    async def maybe_flush(self) -> None:
        if self._out_size >= FLUSH_AT:
            await self.flush()

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """A blocking store call in a worker thread."""
        return await trio.to_thread.run_sync(partial(fn, *args))

    # --- the connection -------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.info.over_peer_limit:
                self.emit(r.untagged_status(Status.BYE, "too many connections from your address"))
                await self.flush()
                return
            # RFC 3501 7.1.1: the greeting may carry the capabilities (saves a round trip).
            self.emit(
                r.untagged_status(
                    Status.OK,
                    f"{self.settings.hostname} IMAP server ready",
                    ResponseCode.capability(self.capabilities()),
                )
            )
            await self._loop()
        except _ENDINGS:
            pass
        except BaseExceptionGroup as group:
            # IDLE runs a nursery: a session ending inside it arrives as a group.
            _, rest = group.split(_ENDINGS)
            if rest is not None:
                raise rest from None
        finally:
            self.unsubscribe()

    async def _loop(self) -> None:
        while True:
            event = self.reader.next_event()
            if event is NEED_DATA:
                await self.flush()
                await self.receive(self.settings_timeout())
                continue
            if isinstance(event, ContinuationNeeded):
                await self._continuation(event)
                continue
            if isinstance(event, BadCommand):
                await self._bad(event)
                continue
            if isinstance(event, ContinuationLine):  # only after expect_continuation()
                continue  # pragma: no cover
            await self._command(event)
            if self.state is ConnectionState.LOGOUT:
                await self.flush()
                return

    def settings_timeout(self) -> float:
        if self.state is ConnectionState.NOT_AUTHENTICATED:
            return self.settings.preauth_timeout
        return self.settings.autologout_timeout

    async def receive(self, timeout: float) -> None:  # noqa: ASYNC109 - state-dependent
        """Feed the reader; BYE on timeout or when the server drains (a wait for the
        client is the only place a drain interrupts)."""
        data: bytes | bytearray = b""
        with trio.move_on_after(timeout) as timer, self.info.drain.idle() as idle:
            data = await self.stream.receive_some(RECEIVE_CHUNK)
        if idle.cancelled_caught:
            await self.bye("server shutting down")
        if timer.cancelled_caught:
            await self.bye("autologout: idle for too long")  # RFC 3501 5.4
        if not data:
            raise SessionClosed
        self.reader.receive_data(bytes(data))

    async def bye(self, text: str) -> NoReturn:
        self.emit(r.untagged_status(Status.BYE, text))
        with trio.move_on_after(5):
            try:
                await self.flush()
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                pass
        raise SessionClosed

    async def _bad(self, event: BadCommand) -> None:
        status = Status.NO if event.status == "NO" else Status.BAD
        text = event.reason
        if event.tag is None:
            self.emit(r.untagged_status(status, text, event.code))
        else:
            self.emit(r.tagged(event.tag, status, text, event.code))
        self.bad_commands += 1
        if event.fatal:
            await self.bye("protocol error, closing")
        if self.bad_commands > MAX_BAD_COMMANDS:
            await self.bye("too many invalid commands")

    async def _continuation(self, event: ContinuationNeeded) -> None:
        refusal = literal_refusal(self.state, event.command)
        if refusal is not None:
            self.emit(r.tagged(event.tag, Status.BAD, refusal))
            self.reader.reject_literal()
            return
        if event.is_append and self.mailbox is not None:
            try:
                quota = await self.run_sync(self.mailbox.quota)
            except StoreError:
                quota = None
            if (
                quota is not None
                and quota.limit is not None
                and quota.usage + event.size > quota.limit
            ):
                # RFC 9208 4.4 / RFC 5530: refuse before the client sends the octets.
                self.emit(r.tagged(event.tag, Status.NO, "quota exceeded", r.OVERQUOTA))
                self.reader.reject_literal()
                return
        self.emit(r.continuation("Ready for literal data"))
        await self.flush()
        self.reader.accept_literal()

    async def throttle(self) -> None:
        """Token bucket: COMMANDS_PER_SECOND sustained, COMMAND_BURST at once."""
        now = trio.current_time()
        rate = self.settings.commands_per_second
        burst = self.settings.command_burst
        if self._last_refill:
            self._tokens = min(burst, self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens < 1:
            await self.flush()
            await trio.sleep((1 - self._tokens) / rate)
            self._tokens = 1.0
            self._last_refill = trio.current_time()
        self._tokens -= 1

    async def _command(self, command: c.Command) -> None:
        await self.throttle()
        if self.info.drain.started:
            await self.bye("server shutting down")
        refusal = gate_refusal(self.state, command)
        if refusal is not None:
            self.emit(r.tagged(command.tag, Status.BAD, refusal))
            return
        handler = HANDLERS[type(command)]
        try:
            done = await handler(self, command)
        except StoreError as exc:
            log.info("imap: %s %s: %s", command.command_name, type(exc).__name__, exc)
            done = error_response(command.tag, exc)
        if done is None:
            return
        if self.selected is not None:
            allow = not (isinstance(command, _NO_EXPUNGE) and not getattr(command, "uid", False))
            await self.sync(allow_expunge=allow)
        self.emit(done)

    def transition(self, outcome: Outcome) -> None:
        self.state = next_state(self.state, outcome)

    # --- the selected folder's updates ----------------------------------------------------

    def subscribe(self, selected: SelectedFolder) -> None:
        assert self.mailbox is not None
        self.unsubscribe()
        self.subscription = self.store.bus.subscribe(self.mailbox.id, selected.folder.id)
        self.dirty = self.full_resync = self.selected_deleted = False

    def unsubscribe(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
            self.subscription = None

    def note_event(self, event: object) -> None:
        if isinstance(event, FolderDeleted):
            if self.selected is not None and event.folder_id == self.selected.folder.id:
                self.selected_deleted = True
        elif isinstance(event, ResyncNeeded):
            self.full_resync = True
        else:
            self.dirty = True

    def drain_events(self) -> None:
        sub = self.subscription
        if sub is None:
            return
        while True:
            try:
                event = sub.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError):
                return
            self.note_event(event)

    async def sync(self, *, allow_expunge: bool) -> None:
        """Announce what other sessions (and deliveries) changed in the selected folder."""
        sel = self.selected
        if sel is None:
            return
        self.drain_events()
        if self.selected_deleted:
            # RFC 3501 7.1.5: nothing sensible is left to do with this connection.
            await self.bye("selected mailbox was deleted")
        if self.dirty or self.full_resync:
            full = self.full_resync
            self.dirty = self.full_resync = False
            delta = await self.run_sync(partial(sel.compute_delta, full=full))
        elif allow_expunge and sel.pending_expunge:
            delta = Delta((), (), (), sel.modseq)
        else:
            return
        self.emit_all(
            sel.apply(delta, self.view_options, allow_expunge=allow_expunge, shared=self.shared)
        )

    # --- helpers for handlers -------------------------------------------------------------

    async def read_continuation(self) -> ContinuationLine | BadCommand:
        """The next line as a continuation (SASL response, IDLE's DONE)."""
        self.reader.expect_continuation()
        while True:
            event: Event = self.reader.next_event()
            if event is NEED_DATA:
                await self.flush()
                await self.receive(self.settings_timeout())
                continue
            if isinstance(event, ContinuationLine | BadCommand):
                return event
            raise AssertionError(f"unexpected event {event!r}")  # pragma: no cover

    def after_login(self, account: Account, mailbox: Mailbox) -> None:
        self.account = account
        self.mailbox = mailbox
        self.reader.max_line = MAX_LINE_LENGTH
        self.reader.max_command = MAX_COMMAND_SIZE
        self.transition(Outcome.AUTHENTICATED)


# --- connection-level commands -----------------------------------------------------------


async def capability(s: ImapSession, cmd: c.CapabilityCommand) -> bytes:
    s.emit(r.capability(s.capabilities()))
    return r.tagged(cmd.tag, Status.OK, "CAPABILITY completed")


async def noop(s: ImapSession, cmd: c.NoopCommand | c.CheckCommand) -> bytes:
    return r.tagged(cmd.tag, Status.OK, f"{cmd.name} completed")


async def logout(s: ImapSession, cmd: c.LogoutCommand) -> None:
    s.emit(r.untagged_status(Status.BYE, "logging out"))  # RFC 3501 6.1.3
    s.emit(r.tagged(cmd.tag, Status.OK, "LOGOUT completed"))
    s.transition(Outcome.LOGGED_OUT)


async def id_command(s: ImapSession, cmd: c.IdCommand) -> bytes:
    s.emit(r.id_response((("name", "mailhost"), ("vendor", "mailhost"))))  # RFC 2971 3.2
    return r.tagged(cmd.tag, Status.OK, "ID completed")


async def starttls(s: ImapSession, cmd: c.StartTLSCommand) -> None:
    if s.tls_active:
        s.emit(r.tagged(cmd.tag, Status.BAD, "TLS is already active"))
        return
    s.emit(r.tagged(cmd.tag, Status.OK, "begin TLS negotiation now"))
    await s.flush()
    # RFC 2595 3.1 / CVE-2011-0411: nothing the client sent before the handshake counts.
    s.reader.take_buffered()
    tls = trio.SSLStream(s.stream, s.info.tls_context(), server_side=True)
    try:
        with trio.fail_after(TLS_HANDSHAKE_TIMEOUT):
            await tls.do_handshake()
    except (trio.BrokenResourceError, trio.TooSlowError, ssl.SSLError):
        raise SessionClosed from None
    s.stream = tls
    s.tls_active = True


async def _login(s: ImapSession, tag: str, username: str, password: str) -> bytes:
    result = await s.checker.authenticate(username, password, peer=s.info.peer[0], protocol="imap")
    if result.outcome is LoginOutcome.THROTTLED:
        # The checker has already made us wait; say "come back later" (RFC 5530 UNAVAILABLE).
        log.info("imap: login throttled for %s from %s", username[:64], s.info.peer[0])
        return await _login_failed(s, tag, "too many failed logins, try again later", r.UNAVAILABLE)
    if not result.ok or result.account is None:
        log.info("imap: login failed for %s from %s", username[:64], s.info.peer[0])
        return await _login_failed(s, tag, "invalid user name or password", r.AUTHENTICATIONFAILED)
    account = result.account
    try:
        mailbox = await s.run_sync(s.store.open_mailbox, account.mailbox_id)
    except StoreError as exc:
        log.error("imap: cannot open the mailbox of %s: %s", account.address, exc)
        return r.tagged(tag, Status.NO, "mailbox unavailable, try again later", r.UNAVAILABLE)
    s.after_login(account, mailbox)
    log.info("imap: login %s from %s", account.address, s.info.peer[0])
    return r.tagged(tag, Status.OK, "logged in", ResponseCode.capability(s.capabilities()))


async def _login_failed(s: ImapSession, tag: str, text: str, code: ResponseCode) -> bytes:
    s.login_failures += 1
    if s.login_failures >= MAX_LOGIN_FAILURES:
        s.emit(r.tagged(tag, Status.NO, text, code))
        await s.bye("too many failed logins")
    return r.tagged(tag, Status.NO, text, code)


_PRIVACY: Final = ResponseCode("PRIVACYREQUIRED")  # RFC 5530 3


async def login(s: ImapSession, cmd: c.LoginCommand) -> bytes:
    if not s.plaintext_ok:  # RFC 3501 6.2.3 LOGINDISABLED
        return r.tagged(cmd.tag, Status.NO, "use STARTTLS before LOGIN", _PRIVACY)
    return await _login(s, cmd.tag, cmd.username, cmd.password.decode("utf-8", "replace"))


async def authenticate(s: ImapSession, cmd: c.AuthenticateCommand) -> bytes:
    if cmd.mechanism.upper() != "PLAIN":
        return r.tagged(cmd.tag, Status.NO, "unsupported authentication mechanism")
    if not s.plaintext_ok:
        return r.tagged(cmd.tag, Status.NO, "use STARTTLS before AUTHENTICATE", _PRIVACY)
    if cmd.initial_response is not None:  # RFC 4959: SASL-IR
        encoded = base64.b64encode(cmd.initial_response).decode("ascii")
    else:
        s.emit(r.continuation(data=b""))  # RFC 4616: PLAIN starts with an empty challenge
        await s.flush()
        event = await s.read_continuation()
        if isinstance(event, BadCommand):
            return r.tagged(cmd.tag, Status.BAD, event.reason)
        if event.line.strip() == b"*":
            return r.tagged(cmd.tag, Status.BAD, "authentication cancelled")  # RFC 3501 6.2.2
        encoded = event.line.decode("ascii", "replace")
    try:
        authzid, authcid, password = decode_sasl_plain(encoded)
    except SaslError as exc:
        return r.tagged(cmd.tag, Status.BAD, f"malformed SASL response: {exc}")
    if authzid and authzid.lower() != authcid.lower():
        return r.tagged(
            cmd.tag, Status.NO, "authorization identity must be the user", r.AUTHORIZATIONFAILED
        )
    return await _login(s, cmd.tag, authcid, password)


async def enable(s: ImapSession, cmd: c.EnableCommand) -> bytes:
    newly: list[str] = []
    for name in cmd.capabilities:
        upper = name.upper()
        if upper not in ENABLEABLE or upper in s.enabled:
            continue
        s.enabled.add(upper)
        newly.append("IMAP4rev2" if upper == "IMAP4REV2" else upper)
        if upper == "QRESYNC" and "CONDSTORE" not in s.enabled:
            s.enabled.add("CONDSTORE")  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
        if upper in ("CONDSTORE", "QRESYNC"):
            s.condstore = True
    if s.utf8:
        s.reader.set_utf8()  # RFC 6855 3, RFC 9051 (UTF-8 mailbox names)
    s.emit(r.enabled(newly))  # RFC 5161 3.2
    return r.tagged(cmd.tag, Status.OK, "ENABLE completed")


async def compress(s: ImapSession, cmd: c.CompressCommand) -> bytes | None:
    if s.compressed:
        return r.tagged(cmd.tag, Status.NO, "compression already active", r.COMPRESSIONACTIVE)
    if cmd.mechanism.upper() != "DEFLATE":
        return r.tagged(cmd.tag, Status.BAD, "unsupported compression mechanism")
    s.emit(r.tagged(cmd.tag, Status.OK, "DEFLATE active"))
    await s.sync(allow_expunge=True)  # untagged updates must precede the switch
    await s.flush()
    pending = s.reader.take_buffered()  # RFC 4978 3: already compressed
    s.stream = DeflateStream(s.stream, pending)
    s.compressed = True
    return None


async def idle(s: ImapSession, cmd: c.IdleCommand) -> bytes:
    """RFC 2177: updates as they happen until DONE, at most IDLE_TIMEOUT long."""
    await s.sync(allow_expunge=True)
    s.emit(r.continuation("idling"))
    await s.flush()
    s.reader.expect_continuation()
    event: ContinuationLine | BadCommand | None = None
    with trio.move_on_after(s.settings.idle_timeout) as timer:
        async with trio.open_nursery() as nursery:
            if s.selected is not None and s.subscription is not None:
                nursery.start_soon(_idle_watch, s, s.subscription)
            event = await _idle_wait(s)
            nursery.cancel_scope.cancel()
    if timer.cancelled_caught or event is None:
        await s.bye("IDLE for too long")  # RFC 2177 3
    if isinstance(event, BadCommand):
        return r.tagged(cmd.tag, Status.BAD, event.reason)
    if event.line.strip().upper() != b"DONE":
        return r.tagged(cmd.tag, Status.BAD, "expected DONE")
    return r.tagged(cmd.tag, Status.OK, "IDLE terminated")


async def _idle_wait(s: ImapSession) -> ContinuationLine | BadCommand:
    while True:
        event = s.reader.next_event()
        if event is NEED_DATA:
            await s.receive(s.settings.idle_timeout + 1)
            continue
        if isinstance(event, ContinuationLine | BadCommand):
            return event
        raise AssertionError(f"unexpected event {event!r}")  # pragma: no cover


async def _idle_watch(s: ImapSession, sub: Subscription) -> None:
    while True:
        s.note_event(await sub.receive())
        # Shielded: a half-sent update would break the stream; DONE (and a server drain)
        # waits for it, but only IDLE_UPDATE_TIMEOUT long: a client that does not take
        # the update by then has stopped reading, and TooSlowError ends the session.
        with trio.CancelScope(shield=True):
            await s.sync(allow_expunge=True)
            await s.flush(IDLE_UPDATE_TIMEOUT)


# --- the dispatch table ------------------------------------------------------------------


def _build_handlers() -> dict[type[c.Command], Handler]:
    from . import mailboxes, messages

    table: dict[type[c.Command], Handler] = {
        c.CapabilityCommand: capability,
        c.NoopCommand: noop,
        c.CheckCommand: noop,  # RFC 9051 removed CHECK; in rev1 it is a NOOP for us
        c.LogoutCommand: logout,
        c.IdCommand: id_command,
        c.StartTLSCommand: starttls,
        c.AuthenticateCommand: authenticate,
        c.LoginCommand: login,
        c.EnableCommand: enable,
        c.CompressCommand: compress,
        c.IdleCommand: idle,
    }
    table.update(mailboxes.HANDLERS)
    table.update(messages.HANDLERS)
    missing = set(c.ALL_COMMANDS) - set(table)
    assert not missing, f"commands without a handler: {missing}"
    return table


HANDLERS: Final[dict[type[c.Command], Handler]] = _build_handlers()
