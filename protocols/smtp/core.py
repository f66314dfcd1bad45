"""The sans-IO SMTP server core (RFC 5321 and its extensions), in the h11 shape.

Fed bytes with `receive_data()`, it hands out one event at a time from `next_event()`
(a frozen dataclass per command, plus message content), and renders the caller's
answer with `send(reply)`, which is also what moves the state machine: a command takes
effect only when its reply is positive. It does no I/O, keeps no clock and decides no
policy (who may relay, which users exist, how big a mailbox may grow): those are the
caller's replies. It does decide protocol: syntax, sequencing, limits and framing.

Typical use (the trio session in `session.py` is the real one)::

    conn = ServerConnection(extensions=..., limits=ProtocolLimits())
    out = conn.send(Reply(220, None, "mx.example ESMTP"))
    while conn.state is not State.CLOSED:
        try:
            event = conn.next_event()
        except SmtpError as error:
            out += conn.send(error.reply)          # the core chose the reply
            continue
        if event is NEED_DATA:
            conn.receive_data(read_some())         # b"" at end of stream
        elif event.expects_reply:
            out += conn.send(answer(event))        # the caller chooses the reply
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

from protocols.smtp.address import Address, AddressError, parse_forward_path, parse_reverse_path
from protocols.smtp.esmtp import (
    BodyType,
    Extensions,
    MailParams,
    RcptParams,
    parse_mail_params,
    parse_rcpt_params,
)
from protocols.smtp.replies import MessageRejected, Reply, SmtpError, SmtpUsageError

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MAX_RECIPIENTS",
    "HARD_ERROR_LIMIT",
    "JUNK_COMMAND_LIMIT",
    "MAX_AUTH_LINE",
    "MAX_CHUNK_SIZE_DIGITS",
    "MAX_COMMAND_LINE",
    "MAX_EXTENDED_COMMAND_LINE",
    "MAX_TEXT_LINE",
    "NEED_DATA",
    "RFC_MIN_RECIPIENTS",
    "SOFT_ERROR_LIMIT",
    "Auth",
    "AuthResponse",
    "Bdat",
    "ConnectionClosed",
    "Data",
    "Ehlo",
    "EndOfChunk",
    "EndOfMessage",
    "Event",
    "Expn",
    "Helo",
    "Help",
    "Mail",
    "MessageData",
    "NeedData",
    "Noop",
    "ProtocolLimits",
    "Quit",
    "Rcpt",
    "Rset",
    "ServerConnection",
    "StartTls",
    "State",
    "Vrfy",
]

################################################################
# Limits
################################################################

# RFC 5321 4.5.3.1.4: "The maximum total length of a command line including the command
# word and the <CRLF> is 512 octets."
MAX_COMMAND_LINE = 512
# MAIL and RCPT carry ESMTP parameters, and each extension raises the 512 floor: SIZE
# (RFC 1870 3: +26), DSN (RFC 3461 5: ENVID +100, ORCPT +500), AUTH= (RFC 4954 5: +500),
# BODY= (RFC 6152 2) and SMTPUTF8 paths (RFC 6531 3.4). Rather than add them up per
# command we take Postfix's line_length_limit (2048), which covers them all; AUTH gets
# the same so a PLAIN initial response of three 255-octet fields still fits.
MAX_EXTENDED_COMMAND_LINE = 2048
# RFC 4954 4: servers must accept SASL responses of at least 12288 octets per line.
MAX_AUTH_LINE = 12288
# RFC 5321 4.5.3.1.6: "The maximum total length of a text line including the <CRLF> is
# 1000 octets (not counting the leading dot duplicated for transparency)."
MAX_TEXT_LINE = 1000
# Postfix message_size_limit default (10240000); the operator's setting replaces it.
DEFAULT_MAX_MESSAGE_SIZE = 10_240_000
# RFC 5321 4.5.3.1.8: at least 100 recipients per transaction must be accepted.
RFC_MIN_RECIPIENTS = 100
# Postfix smtpd_recipient_limit default.
DEFAULT_MAX_RECIPIENTS = 1000
# Postfix smtpd_soft_error_limit: past this many errors, each error reply is delayed.
SOFT_ERROR_LIMIT = 10
# Postfix smtpd_hard_error_limit: at this many errors the session ends with 421.
HARD_ERROR_LIMIT = 20
# Postfix smtpd_junk_command_limit: NOOP/RSET/VRFY/EXPN/HELP past this count as errors.
JUNK_COMMAND_LIMIT = 100
# RFC 1870 3 size-value is 1*20DIGIT; we bound BDAT chunk-size the same way.
MAX_CHUNK_SIZE_DIGITS = 20
# RFC 4422 3.1: a SASL mechanism name is 1 to 20 of [A-Z0-9-_].
_SASL_MECH = re.compile(r"[A-Z0-9_-]{1,20}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolLimits:
    """The configurable limits the core enforces (the fixed RFC ones are constants)."""

    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    soft_error_limit: int = SOFT_ERROR_LIMIT
    hard_error_limit: int = HARD_ERROR_LIMIT
    junk_command_limit: int = JUNK_COMMAND_LIMIT

    def __post_init__(self) -> None:
        if self.max_message_size < 1:
            raise ValueError("max_message_size must be positive")
        if self.max_recipients < RFC_MIN_RECIPIENTS:
            raise ValueError(f"max_recipients below the RFC 5321 minimum of {RFC_MIN_RECIPIENTS}")
        if not 0 <= self.soft_error_limit <= self.hard_error_limit:
            raise ValueError("soft_error_limit must lie between 0 and hard_error_limit")


################################################################
# Events
################################################################


class NeedData(enum.Enum):
    """`next_event()` needs more bytes: call `receive_data()` (b"" at end of stream)."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[NeedData.NEED_DATA] = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True, kw_only=True)
class Ehlo:
    """EHLO (RFC 5321 4.1.1.1). `domain` is the client's name, printable, unchecked."""

    expects_reply: ClassVar[bool] = True
    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Helo:
    """HELO (RFC 5321 4.1.1.1): an SMTP (not ESMTP) session, no extensions."""

    expects_reply: ClassVar[bool] = True
    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Mail:
    """MAIL FROM (RFC 5321 4.1.1.2). `sender` is None for the null path `<>`."""

    expects_reply: ClassVar[bool] = True
    sender: Address | None
    params: MailParams


@dataclass(frozen=True, slots=True, kw_only=True)
class Rcpt:
    """RCPT TO (RFC 5321 4.1.1.3)."""

    expects_reply: ClassVar[bool] = True
    recipient: Address
    params: RcptParams


@dataclass(frozen=True, slots=True, kw_only=True)
class Data:
    """DATA (RFC 5321 4.1.1.4): answer 354 to receive the message, or refuse it."""

    expects_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Bdat:
    """BDAT (RFC 3030 2): a chunk of `size` octets follows. Needs no reply of its own.

    The chunk arrives as MessageData events, then EndOfChunk (answer it) or, after
    `last`, EndOfMessage (answer with the delivery result).
    """

    expects_reply: ClassVar[bool] = False
    size: int
    last: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Rset:
    """RSET (RFC 5321 4.1.1.5)."""

    expects_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Noop:
    """NOOP (RFC 5321 4.1.1.9); the optional argument is ignored."""

    expects_reply: ClassVar[bool] = True
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit:
    """QUIT (RFC 5321 4.1.1.10): answer 221; the core is then CLOSED."""

    expects_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Vrfy:
    """VRFY (RFC 5321 4.1.1.6)."""

    expects_reply: ClassVar[bool] = True
    argument: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Expn:
    """EXPN (RFC 5321 4.1.1.7)."""

    expects_reply: ClassVar[bool] = True
    argument: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Help:
    """HELP (RFC 5321 4.1.1.8)."""

    expects_reply: ClassVar[bool] = True
    topic: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTls:
    """STARTTLS (RFC 3207 4). A 220 answer discards all buffered plaintext."""

    expects_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Auth:
    """AUTH (RFC 4954 4). `initial_response` is decoded; None when absent, b"" for `=`."""

    expects_reply: ClassVar[bool] = True
    mechanism: str
    initial_response: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResponse:
    """A SASL continuation line, base64-decoded (RFC 4954 4)."""

    expects_reply: ClassVar[bool] = True
    data: bytes = b""

    def __repr__(self) -> str:  # never log secrets
        return f"AuthResponse(<{len(self.data)} octets>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageData:
    """Message content: DATA after dot-unstuffing, or BDAT octets as sent."""

    expects_reply: ClassVar[bool] = False
    data: bytes

    def __repr__(self) -> str:
        return f"MessageData(<{len(self.data)} octets>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfChunk:
    """A BDAT chunk (not the last) is complete: answer 250, or refuse and end the mail."""

    expects_reply: ClassVar[bool] = True
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EndOfMessage:
    """The message is complete (after `<CRLF>.<CRLF>` or BDAT LAST): deliver it."""

    expects_reply: ClassVar[bool] = True
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """The peer closed the stream (any partial message is void)."""

    expects_reply: ClassVar[bool] = False


Event = (
    Ehlo
    | Helo
    | Mail
    | Rcpt
    | Data
    | Bdat
    | Rset
    | Noop
    | Quit
    | Vrfy
    | Expn
    | Help
    | StartTls
    | Auth
    | AuthResponse
    | MessageData
    | EndOfChunk
    | EndOfMessage
    | ConnectionClosed
)

# Commands Postfix calls junk: harmless alone, a sign of abuse in bulk.
_JUNK: tuple[type[Event], ...] = (Noop, Rset, Vrfy, Expn, Help)

################################################################
# The state machine
################################################################
#
# Rule 1: everything about which command may come when lives in this file: the table
# below for what fits a table, and the guards in the `_parse_*` functions (extension
# gating, AUTH only once, recipient count) for what does not. Nothing else changes
# `state`.
#
# Rule 2: protocol, not policy. The core refuses what RFC 5321 and the extension RFCs
# refuse, and reports everything else. A command takes effect when the caller answers
# it: a 2xx moves to the table's `positive` state, a 3xx to `intermediate` (354 for
# DATA, 334 for AUTH), a 4xx/5xx to `negative` (None: stay). A reply the table does
# not allow (250 to DATA, 354 to MAIL) is the caller's bug: SmtpUsageError.
#
# Rule 3: one command in flight. Once next_event() has returned an event that expects
# a reply, the next call raises SmtpUsageError until send() has answered it; pipelined
# commands wait in the buffer and their replies go out in order (RFC 2920 3.1).
#
# Rule 4: nothing crosses a STARTTLS. A positive answer to StartTls moves to
# TLS_STARTING and throws away every byte already buffered (they were sent in
# plaintext before the handshake: CVE-2011-0411); `tls_established()` then starts a
# fresh session that has forgotten EHLO and AUTH (RFC 3207 4.2).
#
# Rule 5: nothing crosses DATA either. A client may send the message only after 354
# (RFC 2920 3.1: DATA ends a pipelined group), so bytes already buffered behind a DATA
# command are a protocol violation: 421 and close, never content and never commands.
#
# Rule 6: only <CRLF>.<CRLF> ends DATA (RFC 5321 4.1.1.4). A bare CR or LF anywhere in
# the content, or a NUL, poisons the message: it is read on to the real end and refused
# whole (550), so no smuggling sequence can end it early or start a second message.
# BDAT chunks are counted octets (RFC 3030 2) and are always consumed, even when the
# BDAT is refused, so the command stream never falls out of step.
#
# Rule 7: a 421 reply, whoever chose it, ends the session (RFC 5321 3.8): CLOSED.


class State(enum.StrEnum):
    GREETING = "greeting"  # connected, our banner not yet sent
    CONNECTED = "connected"  # greeted, no EHLO/HELO yet (also right after STARTTLS)
    READY = "ready"  # after EHLO/HELO, no transaction
    MAIL = "mail"  # MAIL accepted
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # reading DATA content
    BDAT = "bdat"  # reading a BDAT chunk
    CHUNKING = "chunking"  # between BDAT chunks of one message
    AUTH = "auth"  # a SASL exchange is under way
    TLS_STARTING = "tls-starting"  # 220 sent to STARTTLS, handshake pending
    REFUSED = "refused"  # we greeted with 554: only QUIT (RFC 5321 3.1)
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Transition:
    """Where an event leads, by the class of its reply (see Rule 2)."""

    positive: State | None = None
    intermediate: State | None = None
    negative: State | None = None
    # For events that expect no reply (Bdat): the state to enter at once.
    at_once: State | None = None


def _session_commands(here: State) -> dict[type[Event], Transition]:
    """Commands valid at any point between transactions (RFC 5321 4.1.4)."""
    reset = State.CONNECTED if here is State.CONNECTED else State.READY
    return {
        Ehlo: Transition(positive=State.READY),  # RFC 5321 4.1.4: EHLO resets like RSET
        Helo: Transition(positive=State.READY),
        Rset: Transition(positive=reset),  # RFC 5321 4.1.1.5
        Noop: Transition(positive=here),
        Vrfy: Transition(positive=here),
        Expn: Transition(positive=here),
        Help: Transition(positive=here),
        Quit: Transition(positive=State.CLOSED),
    }


_TRANSITIONS: dict[State, dict[type[Event], Transition]] = {
    State.GREETING: {},
    State.CONNECTED: _session_commands(State.CONNECTED),
    State.READY: {
        **_session_commands(State.READY),
        Mail: Transition(positive=State.MAIL),
        StartTls: Transition(positive=State.TLS_STARTING),
        # 235 at once (initial response sufficed) or 334 to continue.
        Auth: Transition(positive=State.READY, intermediate=State.AUTH),
    },
    State.MAIL: {
        **_session_commands(State.MAIL),
        Rcpt: Transition(positive=State.RCPT),
    },
    State.RCPT: {
        **_session_commands(State.RCPT),
        Rcpt: Transition(positive=State.RCPT),
        Data: Transition(intermediate=State.DATA),  # RFC 5321 4.1.1.4: 354 first
        Bdat: Transition(at_once=State.BDAT),  # RFC 3030 2: no intermediate reply
    },
    State.DATA: {
        EndOfMessage: Transition(positive=State.READY, negative=State.READY),
    },
    State.BDAT: {
        EndOfChunk: Transition(positive=State.CHUNKING, negative=State.READY),
        EndOfMessage: Transition(positive=State.READY, negative=State.READY),
    },
    State.CHUNKING: {
        **_session_commands(State.CHUNKING),
        Bdat: Transition(at_once=State.BDAT),
    },
    State.AUTH: {
        AuthResponse: Transition(
            positive=State.READY, intermediate=State.AUTH, negative=State.READY
        ),
    },
    State.TLS_STARTING: {},
    State.REFUSED: {
        Quit: Transition(positive=State.CLOSED),
    },
    State.CLOSED: {},
}

# Our banner (RFC 5321 3.1): 220 opens, 554 refuses but waits for QUIT, 421 closes.
_GREETING_TRANSITIONS = {220: State.CONNECTED, 554: State.REFUSED, 421: State.CLOSED}
# States in which a mail transaction exists (RFC 5321 3.3).
_IN_TRANSACTION = frozenset({State.MAIL, State.RCPT, State.DATA, State.BDAT, State.CHUNKING})
# RFC 5321 4.2.4: verbs we know of but do not implement get 502, not 500.
_NOT_IMPLEMENTED = frozenset({"TURN", "ETRN", "ATRN", "SEND", "SOML", "SAML", "VERB"})
# Postfix smtpd_forbidden_commands: an HTTP client or proxy talking to port 25.
_FORBIDDEN = frozenset({"CONNECT", "GET", "POST", "PUT", "HEAD"})

_ERR_LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")  # RFC 5321 4.5.3.1.10
_ERR_BARE_NEWLINE = Reply(500, "5.5.2", "Bare CR or LF in command line")  # RFC 5321 2.3.8
_ERR_NUL = Reply(500, "5.5.2", "NUL in command line")
_ERR_BAD_UTF8 = Reply(500, "5.5.2", "Command line is not valid UTF-8")
_ERR_UNKNOWN = Reply(500, "5.5.2", "Command unrecognized")  # RFC 5321 4.2.4
_ERR_NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")  # RFC 5321 4.2.4
_ERR_HTTP = Reply(421, "4.7.0", "This is an SMTP server, closing connection")
_ERR_TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
_ERR_PIPELINING = Reply(
    421, "4.5.0", "Improper use of SMTP command pipelining: data sent before 354, closing"
)
# RFC 1870 6.1 and 6.3.
_ERR_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
# mox's reply text and enhanced code, with Postfix's reject code for bare newlines.
_ERR_SMUGGLING = Reply(550, "5.5.2", "Bare CR or LF in message text, may be SMTP smuggling")
_ERR_NUL_IN_DATA = Reply(550, "5.6.0", "NUL octet in message text (send binary with BDAT)")
_ERR_TEXT_LINE = Reply(500, "5.5.2", "Message line too long (limit 998 octets)")


def _syntax(text: str, enhanced: str = "5.5.4") -> SmtpError:
    return SmtpError(Reply(501, enhanced, text))


def _sequence(text: str) -> SmtpError:
    return SmtpError(Reply(503, "5.5.1", text))


class ServerConnection:
    """One SMTP server session's protocol state (see the rules above).

    `extensions` is what our EHLO reply offers in the current TLS state (the caller
    renders the EHLO reply from the same object, so what we accept is what we said).
    `tls_active` is True when the stream is already TLS (implicit TLS, port 465).
    """

    def __init__(
        self,
        *,
        extensions: Extensions,
        limits: ProtocolLimits | None = None,
        tls_active: bool = False,
    ) -> None:
        self.extensions = extensions
        self.limits = limits if limits is not None else ProtocolLimits()
        self._state = State.GREETING
        self._buffer = bytearray()
        self._eof = False
        self._awaiting: Event | None = None
        self._tls_active = tls_active
        self._esmtp = False
        self._helo: str | None = None
        self._authenticated = False
        self._errors = 0
        self._junk = 0
        self._discarded_plaintext = 0
        # Reader modes that are not states: the rest of an over-long line, and the
        # octets of a refused BDAT chunk, are dropped before the next command.
        self._skip_line = False
        self._skip_octets = 0
        self._reset_transaction()

    def _reset_transaction(self) -> None:
        self._mail: Mail | None = None
        self._recipients = 0
        self._message_size = 0
        self._poison: Reply | None = None
        self._line_start = True
        self._chunk_left = 0
        self._chunk_size = 0
        self._chunk_last = False

    # ---------------------------------------------------------------- properties

    @property
    def state(self) -> State:
        return self._state

    @property
    def tls_active(self) -> bool:
        return self._tls_active

    @property
    def esmtp(self) -> bool:
        """True after EHLO (extensions usable), False after HELO or before either."""
        return self._esmtp

    @property
    def helo_name(self) -> str | None:
        return self._helo

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def in_transaction(self) -> bool:
        return self._state in _IN_TRANSACTION

    @property
    def mail(self) -> Mail | None:
        """The accepted MAIL command of the current transaction."""
        return self._mail

    @property
    def error_count(self) -> int:
        """Error replies (4xx/5xx, not 421) sent since the last delivered message."""
        return self._errors

    @property
    def discarded_plaintext(self) -> int:
        """Octets thrown away at STARTTLS (non-zero means attempted injection)."""
        return self._discarded_plaintext

    @property
    def awaiting_reply(self) -> bool:
        return self._awaiting is not None

    # ---------------------------------------------------------------- input

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; b"" means the peer closed its side."""
        if self._state is State.TLS_STARTING:
            raise SmtpUsageError("plaintext must not be fed once STARTTLS was accepted")
        if self._state is State.CLOSED:
            return
        if self._eof:
            raise SmtpUsageError("data after end of stream")
        if data:
            self._buffer += data
        else:
            self._eof = True

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA. Raises SmtpError carrying the reply to send."""
        if self._awaiting is not None:
            raise SmtpUsageError(f"{type(self._awaiting).__name__} has not been answered")
        if self._state is State.GREETING:
            raise SmtpUsageError("send the greeting first")
        if self._state is State.TLS_STARTING:
            raise SmtpUsageError("finish the TLS handshake and call tls_established()")
        if self._state is State.CLOSED:
            return ConnectionClosed()
        event = self._extract()
        if event is NEED_DATA:
            if self._eof:
                self._state = State.CLOSED
                self._buffer.clear()
                return ConnectionClosed()
            return NEED_DATA
        assert not isinstance(event, NeedData)
        if event.expects_reply:
            self._awaiting = event
        return event

    def _extract(self) -> Event | NeedData:
        if self._state is State.DATA:
            return self._read_data()
        if self._state is State.BDAT:
            return self._read_chunk()
        if not self._drop_skipped():
            return NEED_DATA
        if self._state is State.AUTH:
            return self._read_auth_line()
        return self._read_command()

    def _drop_skipped(self) -> bool:
        """Drop a refused chunk / the tail of an over-long line; False if not done yet."""
        if self._skip_octets:
            dropped = min(self._skip_octets, len(self._buffer))
            del self._buffer[:dropped]
            self._skip_octets -= dropped
            if self._skip_octets:
                return False
        if self._skip_line:
            end = self._buffer.find(b"\n")
            if end < 0:
                self._buffer.clear()
                return False
            del self._buffer[: end + 1]
            self._skip_line = False
        return True

    def _take_line(self, limit: int) -> bytes | None:
        """One CRLF-terminated line (without CRLF), or None if it has not all arrived."""
        end = self._buffer.find(b"\n", 0, limit)
        if end < 0:
            if len(self._buffer) >= limit:
                # Drop the over-long line through its LF (or until it arrives), but not
                # the commands pipelined behind it.
                end = self._buffer.find(b"\n")
                if end < 0:
                    self._buffer.clear()
                    self._skip_line = True
                else:
                    del self._buffer[: end + 1]
                raise SmtpError(_ERR_LINE_TOO_LONG)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if not line.endswith(b"\r"):
            raise SmtpError(_ERR_BARE_NEWLINE)  # RFC 5321 2.3.8: only CRLF ends a line
        line = line[:-1]
        if b"\r" in line:
            raise SmtpError(_ERR_BARE_NEWLINE)
        if b"\x00" in line:
            raise SmtpError(_ERR_NUL)  # the Exim CVE-2020-28021 class, item by item
        return line

    # ---------------------------------------------------------------- commands

    def _read_command(self) -> Event | NeedData:
        if self._errors >= self.limits.hard_error_limit:
            self._state = State.CLOSED
            raise SmtpError(_ERR_TOO_MANY_ERRORS)
        raw = self._take_line(MAX_EXTENDED_COMMAND_LINE)
        if raw is None:
            return NEED_DATA
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SmtpError(_ERR_BAD_UTF8) from None
        verb, _, args = line.partition(" ")
        verb = verb.upper() if verb.isascii() and verb.isalpha() else ""
        spec = _COMMANDS.get(verb)
        if spec is None:
            if verb in _FORBIDDEN:
                self._state = State.CLOSED
                raise SmtpError(_ERR_HTTP)
            if verb in _NOT_IMPLEMENTED:
                raise SmtpError(_ERR_NOT_IMPLEMENTED)
            raise SmtpError(_ERR_UNKNOWN)
        kind, parse, limit = spec
        if len(raw) + 2 > limit:
            raise SmtpError(_ERR_LINE_TOO_LONG)  # RFC 5321 4.5.3.1.4
        if kind is Data and self._buffer:
            # Rule 5: the client did not wait for 354 (RFC 2920 3.1); whatever it sent
            # is neither content nor commands.
            self._state = State.CLOSED
            self._buffer.clear()
            raise SmtpError(_ERR_PIPELINING)
        if kind is Bdat:
            # The chunk length must be known before anything else can be said, so that
            # a refused chunk is still consumed (RFC 3030 2, Rule 6).
            return self._start_chunk(args)
        transition = _TRANSITIONS[self._state].get(kind)
        if transition is None:
            raise self._out_of_sequence(kind)
        if kind in _JUNK:
            self._junk += 1
            if self._junk > self.limits.junk_command_limit:
                self._errors += 1
        args = args.rstrip(" ")  # trailing spaces are a common client slip; harmless
        return parse(self, args)

    def _out_of_sequence(self, kind: type[Event]) -> SmtpError:
        state = self._state
        if state is State.REFUSED:
            return _sequence("Service refused, send QUIT")  # RFC 5321 3.1
        if state is State.CONNECTED:
            return _sequence("Send EHLO or HELO first")
        if kind is Mail:
            return _sequence("Nested MAIL command")  # RFC 5321 4.1.1.2
        if kind is Rcpt:
            if state is State.CHUNKING:
                return _sequence("RCPT not allowed after BDAT")  # RFC 3030 2
            return _sequence("Need MAIL before RCPT")  # RFC 5321 4.1.1.3
        if kind is Data:
            if state is State.MAIL:
                # RFC 5321 3.3: 503 or 554 when no RCPT was accepted.
                return SmtpError(Reply(554, "5.5.1", "No valid recipients"))
            if state is State.CHUNKING:
                return _sequence("DATA cannot be mixed with BDAT")  # RFC 3030 2
            return _sequence("Need MAIL and RCPT before DATA")
        if kind in (StartTls, Auth):
            return _sequence("Not allowed during a mail transaction")  # RFC 4954 4
        return _sequence("Bad sequence of commands")

    def _no_argument(self, args: str, verb: str) -> None:
        if args:
            raise _syntax(f"Syntax: {verb} (no parameters allowed)")

    def _parse_hello(self, args: str, verb: str) -> str:
        domain = args.strip(" ")
        if not domain:
            raise _syntax(f"Syntax: {verb} hostname")
        if not domain.isprintable() or len(domain.encode("utf-8")) > 255:
            raise _syntax(f"Syntax: {verb} hostname")
        return domain

    def _parse_ehlo(self, args: str) -> Event:
        return Ehlo(domain=self._parse_hello(args, "EHLO"))

    def _parse_helo(self, args: str) -> Event:
        return Helo(domain=self._parse_hello(args, "HELO"))

    def _parse_mail(self, args: str) -> Event:
        if args[:5].upper() != "FROM:":
            raise _syntax("Syntax: MAIL FROM:<address>")
        # RFC 5321 4.1.1.2 has no space after the colon; many old clients send one.
        rest = args[5:].lstrip(" ")
        try:
            sender, tail = parse_reverse_path(rest, utf8=True)
        except AddressError as error:
            raise _syntax(f"Bad sender address syntax: {error.reason}", "5.1.7") from None
        params = parse_mail_params(tail, self.extensions, esmtp=self._esmtp)
        if sender is not None and not sender.is_ascii and not params.smtputf8:
            # RFC 6531 3.4/3.5: non-ASCII addresses need the SMTPUTF8 parameter.
            raise SmtpError(Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8"))
        if params.size is not None and params.size > self.limits.max_message_size:
            raise SmtpError(_ERR_TOO_BIG)  # RFC 1870 6.1
        return Mail(sender=sender, params=params)

    def _parse_rcpt(self, args: str) -> Event:
        if args[:3].upper() != "TO:":
            raise _syntax("Syntax: RCPT TO:<address>")
        rest = args[3:].lstrip(" ")
        try:
            recipient, tail = parse_forward_path(rest, utf8=True)
        except AddressError as error:
            raise _syntax(f"Bad recipient address syntax: {error.reason}", "5.1.3") from None
        params = parse_rcpt_params(tail, self.extensions, esmtp=self._esmtp)
        assert self._mail is not None
        if not recipient.is_ascii and not self._mail.params.smtputf8:
            raise SmtpError(Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8"))
        if self._recipients >= self.limits.max_recipients:
            raise SmtpError(Reply(452, "4.5.3", "Too many recipients"))  # RFC 5321 4.5.3.1.10
        return Rcpt(recipient=recipient, params=params)

    def _parse_data(self, args: str) -> Event:
        self._no_argument(args, "DATA")
        assert self._mail is not None
        if self._mail.params.body is BodyType.BINARY_MIME:
            raise _sequence("BODY=BINARYMIME needs BDAT, not DATA")  # RFC 3030 3
        return Data()

    def _start_chunk(self, args: str) -> Event:
        parts = args.split(" ")
        size_text = parts[0]
        last = len(parts) == 2 and parts[1].upper() == "LAST"
        if (
            not size_text.isascii()
            or not size_text.isdigit()
            or len(size_text) > MAX_CHUNK_SIZE_DIGITS
            or len(parts) > (2 if last else 1)
        ):
            # The chunk boundary is lost: whatever follows cannot be trusted as
            # commands, so the session ends here (Rule 6).
            self._state = State.CLOSED
            raise SmtpError(Reply(421, "4.5.4", "Syntax: BDAT size [LAST]; closing connection"))
        size = int(size_text)
        refusal: SmtpError | None = None
        transition = _TRANSITIONS[self._state].get(Bdat)
        if not self._esmtp or not self.extensions.chunking:
            refusal = _sequence("CHUNKING was not offered (send EHLO)")
        elif transition is None or transition.at_once is None:
            if self._state is State.MAIL:
                refusal = SmtpError(Reply(554, "5.5.1", "No valid recipients"))
            elif self._state is State.CONNECTED:
                refusal = _sequence("Send EHLO or HELO first")
            else:
                refusal = _sequence("Need MAIL and RCPT before BDAT")
        if refusal is not None or transition is None or transition.at_once is None:
            self._skip_octets = size  # Rule 6: consume the refused chunk
            raise refusal or _sequence("Bad sequence of commands")
        self._state = transition.at_once
        self._chunk_left = size
        self._chunk_size = size
        self._chunk_last = last
        if self._message_size + size > self.limits.max_message_size and self._poison is None:
            self._poison = _ERR_TOO_BIG  # read it all, then refuse (RFC 3030 2)
        return Bdat(size=size, last=last)

    def _parse_rset(self, args: str) -> Event:
        self._no_argument(args, "RSET")
        return Rset()

    def _parse_noop(self, args: str) -> Event:
        return Noop(text=args)

    def _parse_quit(self, args: str) -> Event:
        self._no_argument(args, "QUIT")
        return Quit()

    def _parse_vrfy(self, args: str) -> Event:
        if not args:
            raise _syntax("Syntax: VRFY address")
        return Vrfy(argument=args)

    def _parse_expn(self, args: str) -> Event:
        if not args:
            raise _syntax("Syntax: EXPN list")
        return Expn(argument=args)

    def _parse_help(self, args: str) -> Event:
        return Help(topic=args)

    def _parse_starttls(self, args: str) -> Event:
        self._no_argument(args, "STARTTLS")  # RFC 3207 4: "501 Syntax error"
        if self._tls_active:
            raise _sequence("TLS already active")  # never a second STARTTLS
        if not self._esmtp or not self.extensions.starttls:
            raise SmtpError(Reply(502, "5.5.1", "STARTTLS not offered"))
        return StartTls()

    def _parse_auth(self, args: str) -> Event:
        if not self._esmtp:
            raise _sequence("Send EHLO first")  # RFC 4954 4: AUTH is an ESMTP extension
        if self._authenticated:
            raise _sequence("Already authenticated")  # RFC 4954 4
        if not self.extensions.auth:
            if self.extensions.starttls and not self._tls_active:
                # RFC 4954 6: the mechanism may be used only over an encrypted channel.
                raise SmtpError(Reply(538, "5.7.11", "Encryption required for this mechanism"))
            raise _sequence("Authentication not enabled")
        parts = args.split(" ")
        mechanism = parts[0].upper()
        if not args or len(parts) > 2 or not _SASL_MECH.fullmatch(mechanism):
            raise _syntax("Syntax: AUTH mechanism [initial-response]")
        if mechanism not in self.extensions.auth:
            raise SmtpError(Reply(504, "5.5.4", "Unrecognized authentication type"))
        initial: bytes | None = None
        if len(parts) == 2:
            # RFC 4954 4: "=" is an empty initial response.
            initial = b"" if parts[1] == "=" else _decode_base64(parts[1])
        return Auth(mechanism=mechanism, initial_response=initial)

    # ---------------------------------------------------------------- SASL lines

    def _read_auth_line(self) -> Event | NeedData:
        try:
            raw = self._take_line(MAX_AUTH_LINE)
        except SmtpError as error:
            self._state = State.READY  # the exchange is over, whatever went wrong
            if error.reply is _ERR_LINE_TOO_LONG:
                # RFC 4954 6: 500 5.5.6 Authentication Exchange line is too long.
                raise SmtpError(
                    Reply(500, "5.5.6", "Authentication exchange line is too long")
                ) from None
            raise
        if raw is None:
            return NEED_DATA
        if raw == b"*":
            self._state = State.READY
            raise SmtpError(Reply(501, "5.0.0", "Authentication cancelled"))  # RFC 4954 4
        try:
            data = _decode_base64(raw.decode("ascii"))
        except (SmtpError, UnicodeDecodeError):
            self._state = State.READY
            raise SmtpError(Reply(501, "5.5.2", "Invalid base64 data")) from None
        return AuthResponse(data=data)

    # ---------------------------------------------------------------- DATA

    def _read_data(self) -> Event | NeedData:
        """Content up to <CRLF>.<CRLF>, unstuffed and checked (Rule 6).

        Only whole lines are handed out, so every chunk starts at a line start; the
        partial line after the last CRLF waits for the rest (at most a text line long).
        """
        buf = self._buffer
        while True:
            if self._line_start and buf[:3] == b".\r\n":
                del buf[:3]
                return self._finish_message()
            end = buf.find(b"\r\n.\r\n")
            if end >= 0:
                cut = end + 2  # keep ".\r\n": it ends the message at the next line start
            else:
                last_crlf = buf.rfind(b"\r\n")
                cut = last_crlf + 2 if last_crlf >= 0 else 0
            content = bytes(buf[:cut])
            del buf[:cut]
            chunk = self._check_text(content) if content else b""
            if content:
                self._line_start = True
            if end < 0 and len(buf) > MAX_TEXT_LINE:
                # The partial line can hold at most 998 octets, a stuffed dot and the CR
                # of its CRLF; longer, the message is refused and the line dropped, save
                # a final CR that may begin the CRLF of an end-of-data marker.
                self._poison_message(_ERR_TEXT_LINE)
                keep_cr = buf.endswith(b"\r")
                buf.clear()
                if keep_cr:
                    buf += b"\r"
                self._line_start = False
            if chunk:
                return MessageData(data=chunk)
            if end < 0:
                return NEED_DATA

    def _check_text(self, content: bytes) -> bytes:
        """Unstuff whole lines and enforce Rule 6 and the limits; b"" once poisoned."""
        if self._poison is not None:
            return b""
        assert self._line_start  # a line is dropped only when the message is poisoned
        lines = content.split(b"\r\n")  # each begins a line: content is whole lines
        crlf = len(lines) - 1
        if content.count(b"\n") != crlf or content.count(b"\r") != crlf:
            self._poison_message(_ERR_SMUGGLING)
            return b""
        if b"\x00" in content:
            self._poison_message(_ERR_NUL_IN_DATA)  # RFC 6152 3 / RFC 5322 2.2: no NUL
            return b""
        # RFC 5321 4.5.3.1.6: at most 998 octets of text a line, not counting the dot
        # doubled for transparency.
        longest = MAX_TEXT_LINE - 2
        if max(map(len, lines)) > longest and any(
            len(line) - line.startswith(b".") > longest for line in lines
        ):
            self._poison_message(_ERR_TEXT_LINE)
            return b""
        # RFC 5321 4.5.2: a dot at the start of a line is removed.
        text = content.replace(b"\r\n.", b"\r\n")
        if text[:1] == b".":
            text = text[1:]
        self._message_size += len(text)
        if self._message_size > self.limits.max_message_size:
            self._poison_message(_ERR_TOO_BIG)
            return b""
        return text

    def _poison_message(self, reply: Reply) -> None:
        if self._poison is None:
            self._poison = reply

    def _finish_message(self) -> Event:
        if self._poison is not None:
            reply = self._poison
            self._state = State.READY
            self._reset_transaction()
            raise MessageRejected(reply)
        return EndOfMessage(size=self._message_size)

    # ---------------------------------------------------------------- BDAT

    def _read_chunk(self) -> Event | NeedData:
        if self._chunk_left:
            if not self._buffer:
                return NEED_DATA
            take = min(self._chunk_left, len(self._buffer))
            data = bytes(self._buffer[:take])
            del self._buffer[:take]
            self._chunk_left -= take
            if self._poison is None:
                self._message_size += take
                return MessageData(data=data)
            if self._chunk_left:
                return NEED_DATA
        if self._chunk_last:
            return self._finish_message()
        if self._poison is not None:
            reply = self._poison
            self._state = State.READY
            self._reset_transaction()
            raise MessageRejected(reply)
        return EndOfChunk(size=self._chunk_size)

    # ---------------------------------------------------------------- output

    def send(self, reply: Reply) -> bytes:
        """Render `reply` and apply it: to the greeting, or to the awaited event.

        Every reply must pass through here (also those raised as SmtpError), since
        this is where errors are counted and state moves.
        """
        data = reply.render()
        event, self._awaiting = self._awaiting, None
        if reply.code >= 400 and reply.code != 421:
            self._errors += 1
        if self._state is State.GREETING:
            target = _GREETING_TRANSITIONS.get(reply.code)
            if target is None:
                raise SmtpUsageError(f"{reply.code} is not a greeting")
            self._state = target
            return data
        if reply.code == 421:
            self._state = State.CLOSED  # Rule 7
            return data
        if event is None:
            return data  # an error the core raised; its state change is already done
        transition = _TRANSITIONS[self._state][type(event)]
        if reply.code < 300:
            target = transition.positive
        elif reply.code < 400:
            target = transition.intermediate
        else:
            target = transition.negative if transition.negative is not None else self._state
        if target is None:
            raise SmtpUsageError(f"{reply.code} does not answer {type(event).__name__}")
        self._apply(event, reply, target)
        return data

    def _apply(self, event: Event, reply: Reply, target: State) -> None:
        if reply.code < 400:
            if isinstance(event, Ehlo | Helo):
                self._esmtp = isinstance(event, Ehlo)
                self._helo = event.domain
            elif isinstance(event, Mail):
                self._mail = event
            elif isinstance(event, Rcpt):
                self._recipients += 1
            elif isinstance(event, Data):
                self._message_size = 0
                self._line_start = True
            elif isinstance(event, Auth | AuthResponse) and reply.code < 300:
                self._authenticated = True
            elif isinstance(event, StartTls):
                # Rule 4 (CVE-2011-0411): what was sent before the handshake is void.
                self._discarded_plaintext += len(self._buffer)
                self._buffer.clear()
                self._skip_line = False
                self._skip_octets = 0
            elif isinstance(event, EndOfMessage):
                # Postfix counts errors "without delivering mail": a delivery clears them.
                self._errors = 0
                self._junk = 0
        if target in (State.READY, State.CONNECTED) and self._state in _IN_TRANSACTION:
            self._reset_transaction()
        self._state = target

    def tls_established(self, extensions: Extensions) -> None:
        """The STARTTLS handshake succeeded: start over, as RFC 3207 4.2 requires.

        The client must send EHLO again; AUTH and the old EHLO name are forgotten, and
        `extensions` (now with AUTH, without STARTTLS) replaces the plaintext set.
        """
        if self._state is not State.TLS_STARTING:
            raise SmtpUsageError("tls_established() without an accepted STARTTLS")
        self._state = State.CONNECTED
        self._tls_active = True
        self._esmtp = False
        self._helo = None
        self._authenticated = False
        self.extensions = extensions
        self._reset_transaction()


def _decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SmtpError(Reply(501, "5.5.2", "Invalid base64 data")) from None


_Parser = Callable[[ServerConnection, str], Event]

# Verb -> (event type for the state table, parser, line limit). Dispatch by dict.
_COMMANDS: dict[str, tuple[type[Event], _Parser, int]] = {
    "EHLO": (Ehlo, ServerConnection._parse_ehlo, MAX_COMMAND_LINE),
    "HELO": (Helo, ServerConnection._parse_helo, MAX_COMMAND_LINE),
    "MAIL": (Mail, ServerConnection._parse_mail, MAX_EXTENDED_COMMAND_LINE),
    "RCPT": (Rcpt, ServerConnection._parse_rcpt, MAX_EXTENDED_COMMAND_LINE),
    "DATA": (Data, ServerConnection._parse_data, MAX_COMMAND_LINE),
    "BDAT": (Bdat, ServerConnection._start_chunk, MAX_COMMAND_LINE),
    "RSET": (Rset, ServerConnection._parse_rset, MAX_COMMAND_LINE),
    "NOOP": (Noop, ServerConnection._parse_noop, MAX_COMMAND_LINE),
    "QUIT": (Quit, ServerConnection._parse_quit, MAX_COMMAND_LINE),
    "VRFY": (Vrfy, ServerConnection._parse_vrfy, MAX_COMMAND_LINE),
    "EXPN": (Expn, ServerConnection._parse_expn, MAX_COMMAND_LINE),
    "HELP": (Help, ServerConnection._parse_help, MAX_COMMAND_LINE),
    "STARTTLS": (StartTls, ServerConnection._parse_starttls, MAX_COMMAND_LINE),
    "AUTH": (Auth, ServerConnection._parse_auth, MAX_EXTENDED_COMMAND_LINE),
}
