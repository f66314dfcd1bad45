"""Whole numbers in requests: ASCII digits only, and never too many of them.

`str.isdigit()` followed by `int()` is not a parser: `isdigit` accepts `²` and `¹`,
which `int` then refuses with ValueError, and it accepts Arabic-Indic and other Unicode
digits, which `int` quietly reads as numbers; and `int` refuses strings of more than
4300 digits (CPython's integer string limit) with ValueError too. A value every EAS
schema types as an integer (MS-ASDTYPE 2.6) is `[0-9]+`; anything else is the caller's
protocol error, answered with that command's own status, never an exception that
turns into a server error.

    count = parse_uint(text, max_digits=9, error=SyncRequestError)

Each caller passes its parse error type (or a function building it), so the mapping to
the command's status stays in the command.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

# Nine digits stay below 2**31 (MS-ASDTYPE 2.6 integers are 32-bit where a size is given);
# callers with a larger range (uids, byte offsets, policy keys) ask for ten.
DEFAULT_MAX_DIGITS: Final = 9
_DIGITS: Final = re.compile(r"[0-9]+")  # a literal ASCII range: no Unicode digits
# XML whitespace (XML 1.0 2.3 S): what may surround a value in a document.
_XML_SPACE: Final = " \t\r\n"


class NumberError(ValueError):
    """Not a whole number of ASCII digits within the allowed length."""


def parse_uint(
    text: str,
    *,
    max_digits: int = DEFAULT_MAX_DIGITS,
    error: Callable[[str], Exception] = NumberError,
    what: str = "value",
) -> int:
    """The unsigned number `text` spells (XML whitespace around it is ignored), or
    `error(message)` raised: empty, any character other than ASCII 0-9, or more than
    `max_digits` digits (leading zeros count, so no input is ever long)."""
    value = text.strip(_XML_SPACE)
    if not 0 < len(value) <= max_digits or _DIGITS.fullmatch(value) is None:
        raise error(f"{what} is not a number of up to {max_digits} digits: {text[:20]!r}")
    return int(value)


def parse_int(
    text: str,
    *,
    max_digits: int = DEFAULT_MAX_DIGITS,
    error: Callable[[str], Exception] = NumberError,
    what: str = "value",
) -> int:
    """`parse_uint` with an optional leading minus sign (administrator settings)."""
    value = text.strip(_XML_SPACE)
    negative = value.startswith("-")
    magnitude = parse_uint(
        value[1:] if negative else value, max_digits=max_digits, error=error, what=what
    )
    return -magnitude if negative else magnitude


__all__ = ["DEFAULT_MAX_DIGITS", "NumberError", "parse_int", "parse_uint"]
