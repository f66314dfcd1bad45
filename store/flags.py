"""System flags, their maildir letters, and keyword validation.

The six system flags are the ones the maildir info suffix can carry (`:2,DFPRST`, in ASCII
order, per the maildir specification by D. J. Bernstein and Dovecot's wiki). They are
protocol-neutral: IMAP maps them to \\Seen, \\Answered, \\Flagged, \\Deleted, \\Draft (and
$Forwarded if it likes); EAS uses SEEN as the read flag and FLAGGED as the follow-up flag.
Keywords (IMAP keywords, EAS categories) are free-form strings kept in the index; the first
26 of a folder also appear in file names as letters a-z, mapped by `dovecot-keywords`.

In memory a message's system flags are a small int bit set (`FlagBits`); these helpers
convert between the bit set, the enum and the maildir letters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from enum import StrEnum

from .errors import InvalidKeyword
from .limits import MAX_KEYWORD_LENGTH


class Flag(StrEnum):
    SEEN = "seen"
    ANSWERED = "answered"
    FLAGGED = "flagged"
    DELETED = "deleted"
    DRAFT = "draft"
    FORWARDED = "forwarded"


class FlagMode(StrEnum):
    """How `Folder.store_flags` combines the given flags with the current ones."""

    ADD = "add"
    REMOVE = "remove"
    REPLACE = "replace"


FlagBits = int

_BIT: dict[Flag, int] = {
    Flag.SEEN: 1,
    Flag.ANSWERED: 2,
    Flag.FLAGGED: 4,
    Flag.DELETED: 8,
    Flag.DRAFT: 16,
    Flag.FORWARDED: 32,
}
ALL_FLAG_BITS = 63
SEEN_BIT = _BIT[Flag.SEEN]
# Maildir info letters (maildir spec "2," semantics): P passed, R replied, S seen,
# T trashed, D draft, F flagged.
_LETTER: dict[Flag, str] = {
    Flag.DRAFT: "D",
    Flag.FLAGGED: "F",
    Flag.FORWARDED: "P",
    Flag.ANSWERED: "R",
    Flag.SEEN: "S",
    Flag.DELETED: "T",
}
_LETTER_BIT = {letter: _BIT[flag] for flag, letter in _LETTER.items()}
_ORDERED = sorted(_LETTER.items(), key=lambda item: item[1])  # maildir: ASCII order

_SETS: tuple[frozenset[Flag], ...] = tuple(
    frozenset(flag for flag, bit in _BIT.items() if n & bit) for n in range(ALL_FLAG_BITS + 1)
)
_LETTERS: tuple[str, ...] = tuple(
    "".join(letter for flag, letter in _ORDERED if n & _BIT[flag]) for n in range(ALL_FLAG_BITS + 1)
)


def flags_to_bits(flags: Iterable[Flag | str]) -> FlagBits:
    bits = 0
    for flag in flags:
        bits |= _BIT[Flag(flag)]
    return bits


def bits_to_flags(bits: FlagBits) -> frozenset[Flag]:
    return _SETS[bits & ALL_FLAG_BITS]


def bits_to_letters(bits: FlagBits) -> str:
    return _LETTERS[bits & ALL_FLAG_BITS]


def letters_to_bits(letters: str) -> FlagBits:
    """Maildir info letters to bits; unknown letters (other tools' extensions) are ignored."""
    bits = 0
    for letter in letters:
        bits |= _LETTER_BIT.get(letter, 0)
    return bits


def validate_keyword(keyword: str) -> str:
    """A keyword as the store keeps it, or InvalidKeyword.

    Keywords are Unicode (EAS categories such as "Red Category" have spaces); IMAP maps the
    ones that are not atoms as it sees fit. Refused: empty, too long, a leading backslash
    (reserved for IMAP system flags), control characters, leading or trailing space.
    """
    if not keyword or len(keyword) > MAX_KEYWORD_LENGTH:
        raise InvalidKeyword(f"keyword must be 1 to {MAX_KEYWORD_LENGTH} characters")
    if keyword.startswith("\\"):
        raise InvalidKeyword("keywords may not start with a backslash")
    if keyword != keyword.strip():
        raise InvalidKeyword("keywords may not start or end with white space")
    for ch in keyword:
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            raise InvalidKeyword("keywords may not contain control characters")
    return unicodedata.normalize("NFC", keyword)
