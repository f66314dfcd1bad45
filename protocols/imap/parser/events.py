"""What :class:`~.reader.CommandReader.next_event` returns besides a parsed command."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

from ..commands import Command

__all__ = [
    "NEED_DATA",
    "BadCommand",
    "ContinuationLine",
    "ContinuationNeeded",
    "Event",
    "NeedData",
]


class NeedData(enum.Enum):
    """Sentinel type: feed more bytes with ``receive_data`` (h11's ``NEED_DATA``)."""

    NEED_DATA = "NEED_DATA"


NEED_DATA: Literal[NeedData.NEED_DATA] = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True, kw_only=True)
class ContinuationNeeded:
    """The client sent a synchronizing literal marker ``{size}`` and waits for ``+``.

    The I/O layer decides: check ``size`` against APPENDLIMIT and quota when ``is_append``,
    then either send ``+ Ready`` and call ``reader.accept_literal()``, or send a tagged
    ``NO [TOOBIG]`` / ``NO [OVERQUOTA]`` / ``BAD`` and call ``reader.reject_literal()``,
    which drops the command; the client then abandons it (RFC 3501 7.5). The reader has
    already refused sizes above its own limits, so for a non-APPEND command accepting is
    always safe.
    """

    tag: str
    command: str  # the verb, upper-cased, "UID FETCH" style
    size: int
    binary: bool = False  # literal8 ~{n} (RFC 3516)

    @property
    def is_append(self) -> bool:
        return self.command == "APPEND"


@dataclass(frozen=True, slots=True, kw_only=True)
class BadCommand:
    """A command the reader refused; reply ``<tag or *> <status> [<code>] <reason>``.

    ``fatal`` means the reader cannot resynchronise (a non-synchronizing literal too large
    to skip): send ``* BYE`` and close. Otherwise the reader has already arranged to skip
    the rest of the command and the connection carries on.
    """

    tag: str | None
    reason: str
    code: str | None = None
    status: Literal["BAD", "NO"] = "BAD"
    fatal: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ContinuationLine:
    """A raw line after ``expect_continuation()``: ``DONE`` ending IDLE, or a SASL
    response (base64 or ``*`` to cancel) during AUTHENTICATE. CRLF removed."""

    line: bytes


Event = Command | ContinuationNeeded | BadCommand | ContinuationLine | NeedData
