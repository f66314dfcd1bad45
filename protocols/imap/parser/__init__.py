"""The sans-IO IMAP command reader (imports no trio, no store, no transport).

``CommandReader`` is fed bytes with ``receive_data`` and hands out events with
``next_event``: a parsed :class:`~protocols.imap.commands.Command`, a
:class:`ContinuationNeeded` (answer ``+`` and ``accept_literal()``, or refuse and
``reject_literal()``), a :class:`BadCommand`, a :class:`ContinuationLine` (after
``expect_continuation()``), or :data:`NEED_DATA`.
"""

from .events import (
    NEED_DATA,
    BadCommand,
    ContinuationLine,
    ContinuationNeeded,
    Event,
    NeedData,
)
from .grammar import COMMAND_PARSERS, SEARCH_CHARSETS, ParseContext, parse_command
from .lexer import ParseError
from .reader import CommandReader, ReaderStateError

__all__ = [
    "COMMAND_PARSERS",
    "NEED_DATA",
    "SEARCH_CHARSETS",
    "BadCommand",
    "CommandReader",
    "ContinuationLine",
    "ContinuationNeeded",
    "Event",
    "NeedData",
    "ParseContext",
    "ParseError",
    "ReaderStateError",
    "parse_command",
]
