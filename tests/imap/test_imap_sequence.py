"""Sequence sets (RFC 3501 9, RFC 5182 "$") and their resolution."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.imap.limits import MAX_SEQUENCE_RANGES
from protocols.imap.sequence import SeqRange, SequenceSet, SequenceSetError, format_numbers

UIDS = [3, 4, 7, 10, 11, 12, 40]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1:*", UIDS),
        (b"*", [40]),
        (b"*:4", [4, 7, 10, 11, 12, 40]),
        (b"12:4", [4, 7, 10, 11, 12]),
        (b"559:*", [40]),  # RFC 3501 6.4.8: includes the last UID
        (b"5,3,3:4,11:10", [3, 4, 10, 11]),
        (b"41:50", []),
        (b"1,2", []),
    ],
)
def test_resolve_uids(text: bytes, expected: list[int]) -> None:
    assert SequenceSet.parse(text).resolve(UIDS) == expected


def test_resolve_sequence_numbers_and_empty_mailbox() -> None:
    assert SequenceSet.parse(b"2:*").resolve(range(1, 6)) == [2, 3, 4, 5]
    assert SequenceSet.parse(b"1:*").resolve([]) == []
    assert SequenceSet.parse(b"*").resolve([]) == []


def test_saved_result() -> None:
    saved = SequenceSet.parse(b"$")
    assert saved.saved and saved.render() == b"$"
    assert saved.resolve(UIDS, saved=[4, 5, 40]) == [4, 40]  # 5 was expunged
    with pytest.raises(SequenceSetError):
        saved.resolve(UIDS)
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(b"1,$")


@pytest.mark.parametrize(
    "text", [b"", b"0", b"01", b"1:", b":1", b"1,,2", b"a", b"4294967296", b"1:0"]
)
def test_malformed(text: bytes) -> None:
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(text)


def test_range_limit() -> None:
    many = b",".join(b"%d" % (i + 1) for i in range(MAX_SEQUENCE_RANGES))
    assert len(SequenceSet.parse(many).ranges) == MAX_SEQUENCE_RANGES
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(many + b",1")


def test_contains_and_render() -> None:
    s = SequenceSet.parse(b"2:4,9:*")
    assert s.contains(3, 20) and s.contains(20, 20) and not s.contains(5, 20)
    assert s.render() == b"2:4,9:*"
    assert s.uses_star and not SequenceSet.parse(b"1:2").uses_star
    assert SequenceSet((SeqRange(None, None),)).render() == b"*"


def test_format_numbers_keeps_order() -> None:
    assert format_numbers([1, 2, 3, 5, 7, 8]) == b"1:3,5,7:8"
    assert format_numbers([10, 11, 3, 4]) == b"10:11,3:4"  # COPYUID order matters
    assert format_numbers([]) == b""


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 200), min_size=1, max_size=30),
    st.lists(st.tuples(st.integers(1, 250), st.integers(1, 250)), min_size=1, max_size=8),
)
def test_resolve_matches_brute_force(values: list[int], ranges: list[tuple[int, int]]) -> None:
    values = sorted(set(values))
    text = b",".join(b"%d:%d" % r for r in ranges)
    seq = SequenceSet.parse(text)
    expected = [v for v in values if any(min(a, b) <= v <= max(a, b) for a, b in ranges)]
    assert seq.resolve(values) == expected
    assert SequenceSet.of(expected).resolve(values) == expected if expected else True
