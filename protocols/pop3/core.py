"""POP3 server core, sans-IO: bytes in, commands out; replies rendered to bytes.

The rules of the state machine, all here:
- AUTHORIZATION (RFC 1939 4): CAPA, STLS, USER, PASS (only right after USER), AUTH,
  APOP (refused: it needs passwords stored in the clear), QUIT.
- TRANSACTION (RFC 1939 5): STAT, LIST, RETR, DELE, NOOP, RSET, TOP, UIDL, CAPA, QUIT.
- QUIT in TRANSACTION enters UPDATE (RFC 1939 6); every other end of the session
  leaves the maildrop untouched.
- After STLS the core forgets every byte received before the handshake (RFC 2595 4:
  CVE-2021-38084 was the buffered-plaintext injection) and starts AUTHORIZATION anew.
- During AUTH the next line is the client's SASL response, not a command (RFC 5034 4).
The session layer (protocols.pop3.session) decides what a command does to a maildrop;
this module decides only whether it is well formed and allowed now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

# RFC 2449 4: a command line is at most 255 octets with its CRLF.
MAX_COMMAND_LINE: Final = 255
# RFC 5034 4: the 255-octet limit does not bind AUTH and its responses; bound them anyway.
MAX_SASL_LINE: Final = 4096
MAX_ARGUMENT: Final = 40  # RFC 1939 3: arguments up to 40 characters (RFC 2449 keeps it)
MAX_MESSAGE_NUMBER: Final = 2**31 - 1
MAX_BAD_COMMANDS: Final = 20  # then -ERR and close (Postfix smtpd_hard_error_limit)


class State(StrEnum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


class RespCode(StrEnum):
    # RFC 2449 8 and RFC 3206.
    IN_USE = "IN-USE"
    LOGIN_DELAY = "LOGIN-DELAY"
    SYS_TEMP = "SYS/TEMP"
    SYS_PERM = "SYS/PERM"
    AUTH = "AUTH"


# --- commands -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capa:
    pass


@dataclass(frozen=True, slots=True)
class Stls:
    pass


@dataclass(frozen=True, slots=True)
class User:
    name: str


@dataclass(frozen=True, slots=True)
class Pass:
    password: str


@dataclass(frozen=True, slots=True)
class Auth:
    mechanism: str | None  # None: list the mechanisms (RFC 5034 4, AUTH with no argument)
    initial: str | None


@dataclass(frozen=True, slots=True)
class SaslResponse:
    data: str  # base64, or "*" to cancel


@dataclass(frozen=True, slots=True)
class Apop:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class Stat:
    pass


@dataclass(frozen=True, slots=True)
class ListCmd:
    msg: int | None


@dataclass(frozen=True, slots=True)
class Retr:
    msg: int


@dataclass(frozen=True, slots=True)
class Dele:
    msg: int


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class Rset:
    pass


@dataclass(frozen=True, slots=True)
class Top:
    msg: int
    lines: int


@dataclass(frozen=True, slots=True)
class Uidl:
    msg: int | None


Command = (
    Capa | Stls | User | Pass | Auth | SaslResponse | Apop | Quit | Stat | ListCmd | Retr | Dele
    | Noop | Rset | Top | Uidl
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BadCommand:
    """A line that is not a command allowed now; answer -ERR with `reason`."""

    reason: str
    fatal: bool = False  # too many: answer and close


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()

# Which commands each state allows (one table; the session never re-checks).
ALLOWED: Final[dict[State, frozenset[type]]] = {
    State.AUTHORIZATION: frozenset({Capa, Stls, User, Pass, Auth, Apop, Quit}),
    State.TRANSACTION: frozenset({Capa, Quit, Stat, ListCmd, Retr, Dele, Noop, Rset, Top, Uidl}),
    State.UPDATE: frozenset(),
}


class ProtocolError(ValueError):
    pass


def _number(text: str, what: str) -> int:
    # ASCII digits only: str.isdigit() also takes "²" and other digits int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise ProtocolError(f"{what} must be a number")
    value = int(text)
    if value > MAX_MESSAGE_NUMBER:
        raise ProtocolError(f"{what} is too large")
    return value


def _msg(text: str) -> int:
    value = _number(text, "message number")
    if value == 0:
        raise ProtocolError("message numbers start at 1")
    return value


def _args(parts: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(parts) <= high:
        raise ProtocolError(f"usage: {usage}")
    for part in parts:
        if len(part) > MAX_ARGUMENT:
            raise ProtocolError("argument too long")


def _parse_user(parts: list[str], rest: str) -> Command:
    # RFC 1939 7: USER name; names with spaces are sent whole by real clients.
    if not rest or len(rest) > MAX_COMMAND_LINE:
        raise ProtocolError("usage: USER name")
    return User(rest)


def _parse_pass(parts: list[str], rest: str) -> Command:
    # RFC 1939 7: the password is the rest of the line, spaces included.
    if not rest:
        raise ProtocolError("usage: PASS password")
    return Pass(rest)


def _parse_auth(parts: list[str], rest: str) -> Command:
    # RFC 5034 4: the initial response is not bound by the 40-character argument limit.
    if len(parts) > 2 or (parts and len(parts[0]) > MAX_ARGUMENT):
        raise ProtocolError("usage: AUTH [mechanism [initial-response]]")
    if not parts:
        return Auth(None, None)
    return Auth(parts[0].upper(), parts[1] if len(parts) > 1 else None)


Parser = Callable[[list[str], str], Command]


def _no_args(cls: Callable[[], Command], usage: str) -> Parser:
    def parse(parts: list[str], rest: str) -> Command:
        _args(parts, 0, 0, usage)
        return cls()

    return parse


def _optional_msg(cls: Callable[[int | None], Command], usage: str) -> Parser:
    def parse(parts: list[str], rest: str) -> Command:
        _args(parts, 0, 1, usage)
        return cls(_msg(parts[0]) if parts else None)

    return parse


def _one_msg(cls: Callable[[int], Command], usage: str) -> Parser:
    def parse(parts: list[str], rest: str) -> Command:
        _args(parts, 1, 1, usage)
        return cls(_msg(parts[0]))

    return parse


def _parse_top(parts: list[str], rest: str) -> Command:
    _args(parts, 2, 2, "TOP msg n")
    return Top(_msg(parts[0]), _number(parts[1], "line count"))


# One parser per verb (dispatch through an explicit dict).
PARSERS: Final[dict[str, Parser]] = {
    "CAPA": _no_args(Capa, "CAPA"),
    "STLS": _no_args(Stls, "STLS"),
    "USER": _parse_user,
    "PASS": _parse_pass,
    "AUTH": _parse_auth,
    "APOP": lambda parts, rest: Apop(),
    "QUIT": _no_args(Quit, "QUIT"),
    "STAT": _no_args(Stat, "STAT"),
    "LIST": _optional_msg(ListCmd, "LIST [msg]"),
    "RETR": _one_msg(Retr, "RETR msg"),
    "DELE": _one_msg(Dele, "DELE msg"),
    "NOOP": _no_args(Noop, "NOOP"),
    "RSET": _no_args(Rset, "RSET"),
    "TOP": _parse_top,
    "UIDL": _optional_msg(Uidl, "UIDL [msg]"),
}


class Pop3Core:
    """Feed bytes with `receive_data`, take commands with `next_command` until NEED_DATA."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.state = State.AUTHORIZATION
        self.user: str | None = None  # the name given by USER, awaiting PASS
        self.in_sasl = False
        self.bad_commands = 0
        self._discarding = False  # inside an over-long line: drop up to its end

    def receive_data(self, data: bytes | bytearray) -> None:
        self._buffer += data

    def starttls(self) -> None:
        """The handshake is about to start: forget buffered plaintext, start over."""
        self._buffer.clear()
        self._discarding = False
        self.state = State.AUTHORIZATION
        self.user = None
        self.in_sasl = False

    def begin_sasl(self) -> None:
        self.in_sasl = True

    def end_sasl(self) -> None:
        self.in_sasl = False

    def authenticated(self) -> None:
        self.state = State.TRANSACTION
        self.user = None

    def enter_update(self) -> None:
        self.state = State.UPDATE

    def next_command(self) -> Command | BadCommand | NeedData:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > MAX_SASL_LINE:
                self._buffer.clear()
                self._discarding = True
            return NEED_DATA
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if self._discarding:
            self._discarding = False
            return self._bad("line too long")
        sasl = self.in_sasl or raw[:5].upper() == b"AUTH "
        if len(raw) + 1 > (MAX_SASL_LINE if sasl else MAX_COMMAND_LINE):
            return self._bad("line too long")
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if b"\0" in line or b"\r" in line:
            return self._bad("NUL or CR inside a command")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._bad("not UTF-8")
        if self.in_sasl:
            return SaslResponse(text.strip())
        return self._parse(text)

    def _parse(self, text: str) -> Command | BadCommand:
        verb, _, rest = text.partition(" ")
        parser = PARSERS.get(verb.upper())
        if parser is None:
            return self._bad(f"unknown command {verb[:20]!r}" if verb else "empty command")
        parts = rest.split()
        try:
            command = parser(parts, rest)
        except ProtocolError as exc:
            return self._bad(str(exc))
        if type(command) not in ALLOWED[self.state]:
            return self._bad(f"{verb.upper()} is not allowed now")
        if isinstance(command, Pass) and self.user is None:
            return self._bad("PASS must follow USER")
        if isinstance(command, User):
            self.user = command.name
        elif not isinstance(command, Pass):
            self.user = None
        return command

    def _bad(self, reason: str) -> BadCommand:
        self.bad_commands += 1
        return BadCommand(reason, fatal=self.bad_commands >= MAX_BAD_COMMANDS)


# --- replies ------------------------------------------------------------------------------


def ok(text: str = "") -> bytes:
    return b"+OK" + (b" " + _clean(text) if text else b"") + b"\r\n"


def err(text: str, code: RespCode | None = None) -> bytes:
    prefix = f"[{code.value}] " if code else ""
    return b"-ERR " + _clean(prefix + text) + b"\r\n"


def _clean(text: str) -> bytes:
    return text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace")


def multiline(first: bytes, lines: list[bytes]) -> bytes:
    """A +OK line followed by dot-stuffed `lines` and the terminating dot (RFC 1939 3)."""
    body = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    return first + body + b".\r\n"


def retr_payload(first: bytes, message: bytes, *, body_lines: int | None = None) -> bytes:
    """The whole RETR/TOP reply: `first`, the message with CRLF line ends and dots
    stuffed, and the terminating dot. A message stored with CRLF line ends and no bare
    CR (all SMTP deliveries) takes a fast path of two bytes.replace calls."""
    clean = (
        body_lines is None
        and b"\r" not in message.replace(b"\r\n", b"")
        and message.count(b"\n") == message.count(b"\r\n")
    )
    if not clean:
        return multiline(first, message_lines(message, body_lines=body_lines))
    body = message if message.endswith(b"\r\n") or not message else message + b"\r\n"
    body = body.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    return first + body + b".\r\n"


def message_lines(message: bytes, *, body_lines: int | None = None) -> list[bytes]:
    """Split a message into lines for transmission: bare LF and bare CR become line ends,
    so a stored message with either still arrives as CRLF lines (and its dots stuffed).
    With `body_lines`, stop after the header and that many body lines (TOP)."""
    if not message:
        return []
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text.endswith(b"\n"):
        text = text[:-1]  # the last line's end, not an empty line after it
    lines = text.split(b"\n")
    if body_lines is None:
        return lines
    for i, line in enumerate(lines):
        if line == b"":
            return lines[: i + 1 + body_lines]
    return lines  # no body: the whole header


def capabilities(*, tls_active: bool, tls_available: bool, plaintext_ok: bool) -> list[bytes]:
    """CAPA (RFC 2449 5): only what works now."""
    caps = [b"TOP", b"UIDL", b"RESP-CODES", b"AUTH-RESP-CODE", b"PIPELINING"]
    if tls_active or plaintext_ok:
        caps += [b"USER", b"SASL PLAIN"]
    if tls_available and not tls_active:
        caps.append(b"STLS")
    caps += [b"EXPIRE NEVER", b"IMPLEMENTATION mailhost"]
    return caps
