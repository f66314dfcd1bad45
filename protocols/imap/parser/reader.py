"""The command reader: bytes in, commands and instructions out (the h11 shape).

Framing rules, in the order the reader applies them:

1. A command is one or more lines. A line ending in a literal marker ``{n}``, ``{n+}``
   or ``~{n}`` (RFC 3501 4.3, RFC 7888, RFC 3516) is followed by ``n`` octets of literal
   data and then the command continues on the next line. A line without a marker ends
   the command. LF alone is accepted as a line end (as Dovecot does); the command text the
   grammar sees always has CRLF.
2. A synchronizing literal is never read before the I/O layer has looked at its size:
   the reader yields :class:`ContinuationNeeded` and waits for ``accept_literal()`` or
   ``reject_literal()``. Sizes above the reader's limits are refused by the reader itself
   with :class:`BadCommand` (``NO [TOOBIG]`` for APPEND, RFC 7889 4), before any ``+``.
3. A non-synchronizing literal cannot be refused before it arrives (RFC 7888 5): one over
   the limit is answered ``BAD [TOOBIG]`` at once and its octets are skipped without
   being stored, then the rest of the command; one too large even to skip is fatal.
4. After any refusal the reader resynchronises at the next line end outside a literal,
   so a refused command never swallows the next one.
5. Limits: line length, command size, tag length, literal size, APPEND total
   (:mod:`protocols.imap.limits`); numbers in literal markers are bounded before
   conversion.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from ..commands import Command
from ..limits import (
    DEFAULT_APPEND_LIMIT,
    LITERAL_MINUS_MAX,
    MAX_COMMAND_SIZE,
    MAX_LINE_LENGTH,
    MAX_NUMBER,
    MAX_NUMBER_DIGITS,
    MAX_TAG_LENGTH,
    MULTIAPPEND_TOTAL_FACTOR,
)
from ..names import DEFAULT_SEPARATOR
from .events import NEED_DATA, BadCommand, ContinuationLine, ContinuationNeeded, Event
from .grammar import COMMAND_PARSERS, ParseContext, parse_command
from .lexer import ParseError

__all__ = ["CommandReader", "ReaderStateError"]

_PREFIX: Final = re.compile(rb'([^\x00-\x20\x7f-\xff(){%*"\\+]+)(?: ([A-Za-z]+))?')
_SUBVERB: Final = re.compile(rb" ([A-Za-z]+)(?= |\Z)")
_TAIL_KEEP: Final = MAX_NUMBER_DIGITS + 8  # enough of a discarded line to see "~{n+}"
_COMPACT_AT: Final = 65_536


class ReaderStateError(RuntimeError):
    """The I/O layer called a method that does not fit the reader's state (a bug)."""


class _Mode(enum.Enum):
    LINE = "line"
    AWAIT_DECISION = "await-decision"
    LITERAL = "literal"
    CONTINUATION = "continuation"
    DISCARD_LINE = "discard-line"
    DISCARD_LITERAL = "discard-literal"
    CLOSED = "closed"


class _Marker:
    __slots__ = ("binary", "nonsync", "size")

    def __init__(self, size: int, nonsync: bool, binary: bool) -> None:
        self.size = size  # -1: the number does not fit (RFC 3501 4.2 32-bit)
        self.nonsync = nonsync
        self.binary = binary


def _literal_marker(line: bytes) -> _Marker | None:
    """The literal marker ending ``line`` (no CRLF), if any."""
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start < 0:
        return None
    inner = line[start + 1 : -1]
    nonsync = inner.endswith(b"+")
    digits = inner[:-1] if nonsync else inner
    if not digits or not digits.isdigit():
        return None
    binary = start > 0 and line[start - 1] == 0x7E  # "~"
    if len(digits) > MAX_NUMBER_DIGITS or int(digits) > MAX_NUMBER:
        return _Marker(-1, nonsync, binary)
    return _Marker(int(digits), nonsync, binary)


class CommandReader:
    """Turns the client's byte stream into commands; never writes, never blocks.

    Usage (the I/O layer's loop)::

        reader.receive_data(await stream.receive_some())
        while (event := reader.next_event()) is not NEED_DATA:
            ...  # a Command, ContinuationNeeded, BadCommand or ContinuationLine

    ``append_limit`` is APPENDLIMIT (RFC 7889), the largest message APPEND accepts.
    ``literal_plus`` selects LITERAL+ (non-synchronizing literals up to the normal limits)
    instead of the default LITERAL- (non-synchronizing literals up to 4096 octets, RFC
    7888 5). LITERAL- is the default because it keeps every large literal behind a ``+``
    the server can withhold: a client can never make us read megabytes we would refuse.
    """

    def __init__(
        self,
        *,
        append_limit: int = DEFAULT_APPEND_LIMIT,
        literal_plus: bool = False,
        max_line: int = MAX_LINE_LENGTH,
        max_command: int = MAX_COMMAND_SIZE,
        separator: str = DEFAULT_SEPARATOR,
    ) -> None:
        self.append_limit = append_limit
        self.append_total_limit = append_limit * MULTIAPPEND_TOTAL_FACTOR
        self.literal_plus = literal_plus
        self.max_line = max_line
        self.max_command = max_command
        self._context = ParseContext(utf8=False, separator=separator)
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed data in _buf
        self._scan = 0  # where the next search for LF starts
        self._mode = _Mode.LINE
        self._parts: list[bytes] = []
        self._tag: str | None = None
        self._verb = ""
        self._size = 0  # non-APPEND octets of the current command
        self._append_size = 0
        self._pending: _Marker | None = None
        self._remaining = 0  # literal octets still to read or skip
        self._tail = b""

    # -- configuration ------------------------------------------------------------------

    @property
    def capability(self) -> str:
        """The capability to advertise: ``LITERAL+`` or ``LITERAL-`` (RFC 7888)."""
        return "LITERAL+" if self.literal_plus else "LITERAL-"

    @property
    def utf8(self) -> bool:
        return self._context.utf8

    def set_utf8(self, enabled: bool = True) -> None:
        """After ``ENABLE UTF8=ACCEPT`` (RFC 6855 3): mailbox names may be UTF-8."""
        self._context = ParseContext(utf8=enabled, separator=self._context.separator)

    # -- input --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._mode is _Mode.CLOSED:
            return
        self._buf += data

    def take_buffered(self) -> bytes:
        """Remove and return bytes received but not yet read as a command.

        After STARTTLS the I/O layer must discard these (CVE-2011-0411: plaintext injected
        before the handshake); after COMPRESS it inflates and re-feeds them. Only valid
        between commands.
        """
        if self._mode is not _Mode.LINE or self._parts:
            raise ReaderStateError("take_buffered() in the middle of a command")
        rest = bytes(self._buf[self._pos :])
        self._buf.clear()
        self._pos = self._scan = 0
        return rest

    @property
    def buffered(self) -> int:
        """Octets held (for the I/O layer's memory accounting)."""
        return len(self._buf) - self._pos + sum(len(p) for p in self._parts)

    # -- decisions from the I/O layer ---------------------------------------------------

    def accept_literal(self) -> None:
        """The I/O layer sent ``+``: read the literal's octets next."""
        if self._mode is not _Mode.AWAIT_DECISION or self._pending is None:
            raise ReaderStateError("accept_literal() without a pending literal")
        self._remaining = self._pending.size
        self._mode = _Mode.LITERAL

    def reject_literal(self) -> None:
        """The I/O layer refused the literal (tagged NO/BAD sent): drop the command."""
        if self._mode is not _Mode.AWAIT_DECISION:
            raise ReaderStateError("reject_literal() without a pending literal")
        self._reset_command()
        self._mode = _Mode.LINE

    def expect_continuation(self) -> None:
        """The next line is a continuation (IDLE's DONE, a SASL response), not a command."""
        if self._mode is not _Mode.LINE or self._parts:
            raise ReaderStateError("expect_continuation() in the middle of a command")
        self._mode = _Mode.CONTINUATION

    # -- output -------------------------------------------------------------------------

    def next_event(self) -> Event:
        while True:
            mode = self._mode
            if mode is _Mode.LINE or mode is _Mode.CONTINUATION:
                event = self._read_line()
            elif mode is _Mode.LITERAL:
                event = self._read_literal()
            elif mode is _Mode.DISCARD_LINE:
                event = self._discard_line()
            elif mode is _Mode.DISCARD_LITERAL:
                event = self._discard_literal()
            elif mode is _Mode.AWAIT_DECISION:
                raise ReaderStateError("accept_literal() or reject_literal() must come first")
            else:  # CLOSED
                return NEED_DATA
            if event is not None:
                self._compact()
                return event

    # -- internals ----------------------------------------------------------------------

    def _compact(self) -> None:
        if self._pos > _COMPACT_AT and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0

    def _reset_command(self) -> None:
        self._parts = []
        self._tag = None
        self._verb = ""
        self._size = 0
        self._append_size = 0
        self._pending = None

    def _bad(self, reason: str, *, code: str | None = None, no: bool = False) -> BadCommand:
        return BadCommand(tag=self._tag, reason=reason, code=code, status="NO" if no else "BAD")

    def _fatal(self, reason: str) -> BadCommand:
        tag = self._tag
        self._reset_command()
        self._mode = _Mode.CLOSED
        self._buf.clear()
        self._pos = self._scan = 0
        return BadCommand(tag=tag, reason=reason, fatal=True)

    def _skip_bound(self) -> int:
        return max(self.append_limit, self.max_command)

    def _abort_after_line(self, event: BadCommand, marker: _Marker | None) -> Event:
        """Refuse the command whose line just ended, skipping a non-sync literal if any."""
        self._reset_command()
        if marker is not None and marker.nonsync:
            if marker.size < 0 or marker.size > self._skip_bound():
                return self._fatal(event.reason)  # RFC 7888 5: "or close the connection"
            self._remaining = marker.size
            self._mode = _Mode.DISCARD_LITERAL
        else:
            self._mode = _Mode.LINE
        return event

    def _abort_mid_line(self, event: BadCommand) -> Event:
        """Refuse the command while its current line is still arriving."""
        self._reset_command()
        self._tail = b""
        self._mode = _Mode.DISCARD_LINE
        return event

    def _set_prefix(self, line: bytes) -> str | None:
        """Record tag and verb from a command's first line; return an error or None."""
        m = _PREFIX.match(line)
        if m is None:
            self._tag = None
            return "missing or invalid tag"
        if len(m.group(1)) > MAX_TAG_LENGTH:
            self._tag = None
            return "tag too long"
        self._tag = m.group(1).decode("ascii")
        if m.end() < len(line) and line[m.end()] != 0x20:
            return "invalid command name"
        verb = (m.group(2) or b"").upper()
        if verb == b"UID":
            sub = _SUBVERB.match(line, m.end())
            if sub is not None:
                verb += b" " + sub.group(1).upper()
        self._verb = verb.decode("ascii")
        if not verb:
            return "missing command"
        if verb not in COMMAND_PARSERS:
            return f"unknown command {self._verb[:32]}"
        return None

    def _read_line(self) -> Event | None:
        buf = self._buf
        nl = buf.find(b"\n", self._scan)
        if nl < 0:
            self._scan = len(buf)
            pending = len(buf) - self._pos
            if pending > self.max_line:
                if not self._parts and self._mode is _Mode.LINE:
                    self._set_prefix(bytes(buf[self._pos : self._pos + MAX_TAG_LENGTH + 40]))
                self._pos = self._scan = len(buf)
                self._mode = _Mode.LINE
                return self._abort_mid_line(self._bad("command line too long"))
            return NEED_DATA
        line = bytes(buf[self._pos : nl])
        self._pos = self._scan = nl + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if self._mode is _Mode.CONTINUATION:
            self._mode = _Mode.LINE
            if len(line) > self.max_line:
                return BadCommand(tag=None, reason="continuation line too long")
            return ContinuationLine(line=line)
        marker = _literal_marker(line)
        first = not self._parts
        if first and not line:
            return None  # stray empty line between commands: ignored
        if len(line) > self.max_line:
            if first:
                self._set_prefix(line[: MAX_TAG_LENGTH + 40])
            return self._abort_after_line(self._bad("command line too long"), marker)
        if first:
            problem = self._set_prefix(line)
            if problem is not None:
                return self._abort_after_line(self._bad(problem), marker)
        self._size += len(line)  # terminators are not counted
        if self._size > self.max_command:
            return self._abort_after_line(self._bad("command too long"), marker)
        self._parts.append(line + b"\r\n")
        if marker is None:
            return self._finish()
        return self._literal_announced(marker)

    def _literal_announced(self, marker: _Marker) -> Event | None:
        is_append = self._verb == "APPEND"
        if marker.size < 0:
            return self._abort_after_line(
                self._bad("literal size out of range", code="TOOBIG", no=is_append), marker
            )
        if is_append:
            if marker.size > self.append_limit:
                # RFC 7889 4: refuse with NO [TOOBIG] before sending "+"
                return self._abort_after_line(
                    self._bad("message exceeds APPENDLIMIT", code="TOOBIG", no=True), marker
                )
            if self._append_size + marker.size > self.append_total_limit:
                return self._abort_after_line(
                    self._bad("APPEND too large in total", code="TOOBIG", no=True), marker
                )
        elif self._size + marker.size > self.max_command:
            return self._abort_after_line(
                self._bad("literal too large for this command", code="TOOBIG"), marker
            )
        if marker.nonsync and not self.literal_plus and marker.size > LITERAL_MINUS_MAX:
            # RFC 7888 5: LITERAL- servers refuse non-synchronizing literals over 4096
            return self._abort_after_line(
                self._bad("non-synchronizing literal over 4096 octets", code="TOOBIG"), marker
            )
        if marker.nonsync:
            self._remaining = marker.size
            self._mode = _Mode.LITERAL
            return None
        self._pending = marker
        self._mode = _Mode.AWAIT_DECISION
        return ContinuationNeeded(
            tag=self._tag or "", command=self._verb, size=marker.size, binary=marker.binary
        )

    def _read_literal(self) -> Event | None:
        need = self._remaining
        if len(self._buf) - self._pos < need:
            return NEED_DATA
        data = bytes(self._buf[self._pos : self._pos + need])
        self._pos += need
        self._scan = self._pos
        if self._verb == "APPEND":
            self._append_size += need
        else:
            self._size += need
        self._parts.append(data)
        self._pending = None
        self._mode = _Mode.LINE
        return None

    def _finish(self) -> Event:
        data = b"".join(self._parts)[:-2]
        tag = self._tag
        self._reset_command()
        self._mode = _Mode.LINE
        try:
            command: Command = parse_command(data, self._context)
        except ParseError as exc:
            status: str = exc.status
            return BadCommand(
                tag=tag, reason=exc.reason, code=exc.code, status="NO" if status == "NO" else "BAD"
            )
        except RecursionError:  # defence in depth: the grammar bounds nesting itself
            return BadCommand(tag=tag, reason="command nested too deeply")
        return command

    def _discard_line(self) -> Event | None:
        buf = self._buf
        nl = buf.find(b"\n", self._pos)
        if nl < 0:
            self._tail = (self._tail + bytes(buf[self._pos :]))[-_TAIL_KEEP:]
            self._pos = self._scan = len(buf)
            return NEED_DATA
        tail = (self._tail + bytes(buf[max(self._pos, nl - _TAIL_KEEP) : nl]))[-_TAIL_KEEP:]
        self._pos = self._scan = nl + 1
        self._tail = b""
        if tail.endswith(b"\r"):
            tail = tail[:-1]
        marker = _literal_marker(tail)
        if marker is not None and marker.nonsync:
            if marker.size < 0 or marker.size > self._skip_bound():
                return self._fatal("non-synchronizing literal too large to skip")
            self._remaining = marker.size
            self._mode = _Mode.DISCARD_LITERAL
        else:
            self._mode = _Mode.LINE
        return None

    def _discard_literal(self) -> Event | None:
        available = len(self._buf) - self._pos
        take = min(available, self._remaining)
        self._pos += take
        self._remaining -= take
        self._scan = self._pos
        if self._remaining:
            self._buf.clear()
            self._pos = self._scan = 0
            return NEED_DATA
        self._mode = _Mode.DISCARD_LINE
        return None
