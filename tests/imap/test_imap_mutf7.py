"""Modified UTF-7 (RFC 3501 5.1.3): known vectors, strictness, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.imap.mutf7 import MUTF7Error, decode_mutf7, encode_mutf7

VECTORS = [
    ("INBOX", b"INBOX"),
    ("&", b"&-"),
    ("a&b", b"a&-b"),
    ("Entwürfe", b"Entw&APw-rfe"),
    ("~peter/mail/台北/日本語", b"~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501 5.1.3
    ("€", b"&IKw-"),
    ("😀", b"&2D3eAA-"),
    ("", b""),
]


@pytest.mark.parametrize(("text", "wire"), VECTORS)
def test_vectors(text: str, wire: bytes) -> None:
    assert encode_mutf7(text) == wire
    assert decode_mutf7(wire) == text


@pytest.mark.parametrize(
    "wire",
    [
        b"&AC4ALg-",  # ".." spelled in BASE64: a traversal smuggled past an ASCII filter
        b"&AGE-",  # "a" encoded
        b"&ZeVnLA",  # unterminated shift
        b"&",
        b"&ZeVnLA=-",  # padding is not modified BASE64
        b"&Ze/nLA-",  # "/" instead of ","
        b"&A-",  # not a whole UTF-16 unit
        b"&APx-",  # non-zero padding bits (&APw- is "ü")
        b"&ZeU-&Zyw-",  # two adjacent shifts (the canonical form merges them)
        b"&2D0-",  # unpaired high surrogate
        b"caf\xc3\xa9",  # raw 8-bit
        b"tab\there",  # control character
        b"nul\x00",
    ],
)
def test_strict_refusals(wire: bytes) -> None:
    with pytest.raises(MUTF7Error):
        decode_mutf7(wire)


names = st.text(st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=500, deadline=None)
@given(names)
def test_round_trip(name: str) -> None:
    wire = encode_mutf7(name)
    assert wire.isascii()
    assert all(0x20 <= b < 0x7F for b in wire)
    assert decode_mutf7(wire) == name


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=30))
def test_decoding_arbitrary_bytes_is_canonical_or_refused(data: bytes) -> None:
    try:
        text = decode_mutf7(data)
    except MUTF7Error:
        return
    assert encode_mutf7(text) == data
