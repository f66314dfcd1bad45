"""Property tests: the decoder raises nothing but WbxmlError on any input, and every valid
tree survives encode -> decode unchanged."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from wbxml_strategies import ALL_TAGS, ANY_TEXT, trees

from protocols.activesync.wbxml import (
    DEFAULT_LIMITS,
    HEADER,
    Element,
    Limits,
    WbxmlError,
    decode,
    encode,
    from_xml,
    to_xml,
)

# Tokens that reach every branch of the decoder: globals, tags of page 0 with and without
# the content and attribute bits, and bytes that are no tag anywhere.
TOKENS = st.sampled_from(
    [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x0B, 0x3F, 0x40, 0x43, 0x45, 0x4B, 0x83, 0x85, 0xC3]
)
BODY_PIECES = st.one_of(
    TOKENS.map(lambda t: bytes([t])),
    st.binary(max_size=4),
    st.sampled_from([b"\x00\x11", b"\x00\x19", b"\x00\x1a", b"\x03abc\x00", b"\xc3\x02xy"]),
)
SMALL = Limits(max_depth=4, max_elements=20, max_string_length=8, max_opaque_length=8)


def decode_or_error(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Element | None:
    """Decode, or fail with a WbxmlError that says something; anything else escapes."""
    message = "not raised"
    try:
        return decode(data, limits=limits)
    except WbxmlError as exc:
        message = str(exc)
    assert message
    return None


@settings(max_examples=300)
@given(st.binary(max_size=64))
@example(b"")
@example(HEADER)
def test_arbitrary_bytes(data: bytes) -> None:
    decode_or_error(data)


@settings(max_examples=500)
@given(st.lists(BODY_PIECES, max_size=30).map(b"".join))
def test_arbitrary_token_streams_after_a_valid_header(body: bytes) -> None:
    decode_or_error(HEADER + body)
    decode_or_error(HEADER + body, SMALL)


@settings(max_examples=150)
@given(trees(ALL_TAGS, ANY_TEXT), st.data())
def test_mutated_valid_documents(tree: Element, data: st.DataObject) -> None:
    encoded = bytearray(encode(tree))
    index = data.draw(st.integers(0, len(encoded) - 1))
    encoded[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    decode_or_error(bytes(encoded[:cut]))
    decode_or_error(bytes(encoded), SMALL)


@settings(max_examples=150)
@given(trees(ALL_TAGS, ANY_TEXT))
def test_encode_decode_round_trip(tree: Element) -> None:
    encoded = encode(tree)
    assert decode(encoded, limits=Limits(max_depth=1000)) == tree
    assert encode(decode(encoded, limits=Limits(max_depth=1000))) == encoded


@settings(max_examples=100)
@given(trees(ALL_TAGS, ANY_TEXT.filter(lambda s: s != "")))
def test_debug_xml_round_trip(tree: Element) -> None:
    # "" is the one value the XML form cannot tell from empty; control characters are
    # written raw, which XML forbids, so the trip is only promised for XML characters.
    if any(isinstance(e.value, str) and not _xml_chars(e.value) for e in tree.iter()):
        return
    assert from_xml(to_xml(tree)) == tree


def _xml_chars(text: str) -> bool:
    # XML 1.0 2.2 Char
    return all(
        c in "\t\n\r" or " " <= c <= "\ud7ff" or "\ue000" <= c <= "\ufffd" or c >= "\U00010000"
        for c in text
    )
