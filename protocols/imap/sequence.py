"""Sequence sets (RFC 3501 9 ``sequence-set``, RFC 5182 ``$``) and their resolution.

A set is kept as written (ranges with ``*`` unresolved) because ``*`` means "the largest
number in use" at the moment the command runs, and ``$`` means "the result saved by the
last SEARCH ... RETURN (SAVE)" (RFC 5182), which only the session knows.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .limits import MAX_NUMBER, MAX_NUMBER_DIGITS, MAX_SEQUENCE_RANGES

__all__ = ["SeqRange", "SequenceSet", "SequenceSetError", "format_numbers"]


class SequenceSetError(ValueError):
    """A malformed or over-long sequence set."""


@dataclass(frozen=True, slots=True)
class SeqRange:
    """``start:stop`` as written; ``None`` stands for ``*``. A single number has start == stop."""

    start: int | None
    stop: int | None

    def bounds(self, largest: int) -> tuple[int, int]:
        # RFC 3501 9: "*" is the largest number in use; a range is the same both ways round
        # ("4:2" == "2:4"), which is also why "559:*" includes the last UID (RFC 3501 6.4.8).
        a = largest if self.start is None else self.start
        b = largest if self.stop is None else self.stop
        return (a, b) if a <= b else (b, a)


def _parse_number(token: bytes) -> int | None:
    if token == b"*":
        return None
    if not token.isdigit() or len(token) > MAX_NUMBER_DIGITS or token.startswith(b"0"):
        # nz-number = digit-nz *DIGIT: no zero, no leading zeros
        raise SequenceSetError(f"invalid sequence number {token[:24]!r}")
    value = int(token)
    if value > MAX_NUMBER:  # RFC 3501 4.2: numbers are unsigned 32-bit
        raise SequenceSetError("sequence number out of range")
    return value


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed sequence set; ``saved`` is the RFC 5182 ``$`` (then ``ranges`` is empty)."""

    ranges: tuple[SeqRange, ...] = ()
    saved: bool = False

    @classmethod
    def parse(cls, data: bytes) -> SequenceSet:
        if data == b"$":  # RFC 5182 2.1: seq-last-command
            return cls((), saved=True)
        if not data:
            raise SequenceSetError("empty sequence set")
        if data.count(b",") >= MAX_SEQUENCE_RANGES:
            raise SequenceSetError(f"more than {MAX_SEQUENCE_RANGES} ranges in a sequence set")
        ranges: list[SeqRange] = []
        for item in data.split(b","):
            first, sep, second = item.partition(b":")
            start = _parse_number(first)
            stop = _parse_number(second) if sep else start
            ranges.append(SeqRange(start, stop))
        return cls(tuple(ranges))

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SequenceSet:
        """A set holding exactly ``numbers`` (compacted into ranges, order kept)."""
        return cls.parse(format_numbers(numbers))

    @property
    def uses_star(self) -> bool:
        return any(r.start is None or r.stop is None for r in self.ranges)

    def render(self) -> bytes:
        if self.saved:
            return b"$"

        def one(n: int | None) -> bytes:
            return b"*" if n is None else str(n).encode()

        parts = []
        for r in self.ranges:
            parts.append(one(r.start) if r.start == r.stop else one(r.start) + b":" + one(r.stop))
        return b",".join(parts)

    def intervals(self, largest: int) -> list[tuple[int, int]]:
        """Merged, sorted inclusive intervals with ``*`` read as ``largest``."""
        if self.saved:
            raise SequenceSetError("'$' must be resolved against the saved search result")
        spans = sorted(r.bounds(largest) for r in self.ranges)
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        for r in self.ranges:
            lo, hi = r.bounds(largest)
            if lo <= number <= hi:
                return True
        return False

    def resolve(self, values: Sequence[int], *, saved: Sequence[int] | None = None) -> list[int]:
        """The members of ``values`` (ascending UIDs or 1..n) that this set names.

        ``*`` is the last element of ``values`` (0 when empty, which then matches nothing).
        For ``$`` pass the saved result (ascending) as ``saved``; only members still in
        ``values`` are returned (RFC 5182 2.1: expunged messages leave the saved result).
        """
        if self.saved:
            if saved is None:
                raise SequenceSetError("no saved search result ('$')")
            present = set(values)
            return [n for n in saved if n in present]
        if not values:
            return []
        out: list[int] = []
        for lo, hi in self.intervals(values[-1]):
            i = bisect.bisect_left(values, lo)
            j = bisect.bisect_right(values, hi)
            out.extend(values[i:j])
        return out


def format_numbers(numbers: Iterable[int]) -> bytes:
    """Render numbers compactly (``1:3,7``), keeping their order.

    Ascending runs of consecutive numbers collapse into ranges; order matters for COPYUID
    and APPENDUID (RFC 4315 3), whose source and destination sets correspond pairwise.
    """
    parts: list[bytes] = []
    run_start: int | None = None
    prev = 0
    for n in numbers:
        if run_start is not None and n == prev + 1:
            prev = n
            continue
        if run_start is not None:
            parts.append(_run(run_start, prev))
        run_start = prev = n
    if run_start is not None:
        parts.append(_run(run_start, prev))
    return b",".join(parts)


def _run(a: int, b: int) -> bytes:
    return str(a).encode() if a == b else f"{a}:{b}".encode()
