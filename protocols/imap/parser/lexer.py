"""Token-level reading of one complete command (RFC 3501 9 formal syntax).

The reader (``reader.py``) frames a command, collecting its lines and literal data into one
``bytes`` exactly as sent, with every line terminator normalised to CRLF. The
:class:`Cursor` walks that buffer; a literal marker ``{n}`` / ``{n+}`` / ``~{n}`` followed
by CRLF is always followed by the ``n`` octets the reader collected, so the cursor can
trust the count. Every failure raises :class:`ParseError`, which the reader turns into a
BAD (or NO) event; nothing else escapes.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from ..limits import MAX_MODSEQ, MAX_NESTING_DEPTH, MAX_NUMBER, MAX_NUMBER_DIGITS

__all__ = ["Cursor", "ParseError"]


class ParseError(Exception):
    """A command the grammar refuses. ``status`` is BAD unless a NO fits better."""

    def __init__(self, reason: str, *, code: str | None = None, status: str = "BAD") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.status = status


# RFC 3501 9: ATOM-CHAR is any CHAR except atom-specials: "(" ")" "{" SP CTL "%" "*" DQUOTE
# "\" "]". CHAR is 0x01-0x7f, CTL is 0x00-0x1f and 0x7f.
_ATOM: Final = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\\]]+')
_ASTRING: Final = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\]+')  # ATOM-CHAR / "]"
_LIST_MAILBOX: Final = re.compile(rb'[^\x00-\x20\x7f-\xff(){"\\]+')  # + list-wildcards
_TAG: Final = re.compile(rb'[^\x00-\x20\x7f-\xff(){%*"\\+]+')  # ASTRING-CHAR except "+"
# QUOTED-CHAR: TEXT-CHAR except quoted-specials, or "\" quoted-specials; RFC 9051 and RFC
# 6855 add UTF-8 (validated when the value is decoded). NUL is never allowed
# (CVE-2019-11500: Dovecot mis-handled NUL in quoted strings).
_QUOTED: Final = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_DIGITS: Final = re.compile(rb"[0-9]+")
_SEQSET: Final = re.compile(rb"[0-9*:,$]+")
_LITERAL: Final = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\r\n")
_MONTHS: Final = {
    m: i + 1 for i, m in enumerate(b"JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())
}
_DATE: Final = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME: Final = re.compile(
    rb'"( [0-9]|[0-9]{1,2})-([A-Za-z]{3})-([0-9]{4}) '
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)


class Cursor:
    """A position in one framed command, with the primitives of RFC 3501 9."""

    __slots__ = ("data", "depth", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos
        self.depth = 0

    # -- basics -------------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def peek_is(self, prefix: bytes) -> bool:
        return self.data.startswith(prefix, self.pos)

    def peek_word(self, word: bytes) -> bool:
        """Case-insensitive: does an atom equal to ``word`` start here?"""
        end = self.pos + len(word)
        if self.data[self.pos : end].upper() != word:
            return False
        return end == len(self.data) or self.data[end] in b" ()[]"

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.data.startswith(token, self.pos):
            raise ParseError(f"expected {what or token.decode()}")
        self.pos += len(token)

    def expect_word(self, word: bytes) -> None:
        if not self.peek_word(word):
            raise ParseError(f"expected {word.decode()}")
        self.pos += len(word)

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise ParseError("expected a space" if not self.at_end() else "missing argument")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def end(self) -> None:
        if not self.at_end():
            raise ParseError("unexpected extra arguments")

    def open_paren(self) -> None:
        self.expect(b"(")
        self.enter()

    def close_paren(self) -> None:
        self.expect(b")")
        self.leave()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:  # CVE-2026-27857
            raise ParseError(f"nesting deeper than {MAX_NESTING_DEPTH}")

    def leave(self) -> None:
        self.depth -= 1

    def match_pattern(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        m = pattern.match(self.data, self.pos)
        if m is None:
            raise ParseError(f"expected {what}")
        self.pos = m.end()
        return m.group(0)

    # -- atoms and numbers --------------------------------------------------------------

    def atom(self) -> bytes:
        return self.match_pattern(_ATOM, "an atom")

    def tag(self) -> bytes:
        return self.match_pattern(_TAG, "a tag")

    def number(self, *, maximum: int = MAX_NUMBER, nonzero: bool = False) -> int:
        digits = self.match_pattern(_DIGITS, "a number")
        if len(digits) > MAX_NUMBER_DIGITS:
            raise ParseError("number out of range")
        value = int(digits)
        if value > maximum:  # RFC 3501 4.2: 32-bit unsigned; RFC 7162 7: 63-bit modseq
            raise ParseError("number out of range")
        if nonzero and value == 0:
            raise ParseError("zero is not allowed here")
        return value

    def modseq(self) -> int:
        return self.number(maximum=MAX_MODSEQ)

    def sequence_set_bytes(self) -> bytes:
        return self.match_pattern(_SEQSET, "a sequence set")

    # -- strings ------------------------------------------------------------------------

    def quoted(self) -> bytes:
        m = _QUOTED.match(self.data, self.pos)
        if m is None:
            eol = self.data.find(b"\r\n", self.pos)
            if b"\x00" in self.data[self.pos : eol if eol >= 0 else None]:
                raise ParseError("NUL in quoted string")
            raise ParseError("malformed quoted string")
        self.pos = m.end()
        body = m.group(1)
        if b"\\" in body:
            body = body.replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        return body

    def is_literal(self) -> bool:
        return self.peek() == 0x7B or self.peek_is(b"~{")  # "{" or "~{"

    def literal(self, *, allow_binary: bool = False) -> tuple[bytes, bool]:
        """A literal's octets and whether it was a literal8 (``~{n}``, RFC 3516 4.2)."""
        m = _LITERAL.match(self.data, self.pos)
        if m is None:
            raise ParseError("malformed literal")
        binary = bool(m.group(1))
        if len(m.group(2)) > MAX_NUMBER_DIGITS:
            raise ParseError("literal size out of range")
        if binary and not allow_binary:
            raise ParseError("literal8 is only allowed for APPEND data")
        size = int(m.group(2))
        start = m.end()
        data = self.data[start : start + size]
        if len(data) != size:
            raise ParseError("truncated literal")
        if not binary and b"\x00" in data:
            # RFC 3501 9: literal = "{" number "}" CRLF *CHAR8, CHAR8 excludes NUL;
            # RFC 3516 4.2: NUL needs literal8.
            raise ParseError("NUL in literal (use literal8)")
        self.pos = start + size
        return data, binary

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.is_literal():
            return self.literal()[0]
        raise ParseError("expected a string")

    def astring(self) -> bytes:
        if self.peek() == 0x22 or self.is_literal():
            return self.string()
        return self.match_pattern(_ASTRING, "an astring")

    def nstring(self) -> bytes | None:
        if self.peek_word(b"NIL"):
            self.pos += 3
            return None
        return self.string()

    def list_mailbox(self) -> bytes:
        """RFC 3501 9 list-mailbox: atom chars plus ``%`` ``*`` ``]``, or a string."""
        if self.peek() == 0x22 or self.is_literal():
            return self.string()
        return self.match_pattern(_LIST_MAILBOX, "a mailbox pattern")

    # -- dates --------------------------------------------------------------------------

    def date(self) -> dt.date:
        """RFC 3501 9 ``date``: ``d-Mon-yyyy``, optionally quoted."""
        quoted = self.peek() == 0x22
        if quoted:
            self.pos += 1
        m = _DATE.match(self.data, self.pos)
        if m is None:
            raise ParseError("expected a date (dd-Mon-yyyy)")
        self.pos = m.end()
        if quoted:
            self.expect(b'"', "closing quote")
        month = _MONTHS.get(m.group(2).upper())
        if month is None:
            raise ParseError("invalid month")
        try:
            return dt.date(int(m.group(3)), month, int(m.group(1)))
        except ValueError as exc:
            raise ParseError("invalid date") from exc

    def date_time(self) -> dt.datetime:
        """RFC 3501 9 ``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"``."""
        m = _DATE_TIME.match(self.data, self.pos)
        if m is None:
            raise ParseError("expected a date-time")
        self.pos = m.end()
        day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
        month = _MONTHS.get(mon.upper())
        if month is None:
            raise ParseError("invalid month")
        offset = dt.timedelta(hours=int(zh), minutes=int(zm))
        if offset >= dt.timedelta(hours=24):
            raise ParseError("invalid time zone")
        tz = dt.timezone(-offset if sign == b"-" else offset)
        try:
            return dt.datetime(
                int(year), month, int(day.strip()), int(hh), int(mm), int(ss), tzinfo=tz
            )
        except ValueError as exc:
            raise ParseError("invalid date-time") from exc
