"""The decoder: header, tokens, strictness, limits. Every failure is a WbxmlError with a
message that names what and where."""

from __future__ import annotations

import pytest

from protocols.activesync.wbxml import (
    DEFAULT_LIMITS,
    HEADER,
    MAX_DEPTH,
    MAX_DOCUMENT_SIZE,
    MAX_ELEMENTS,
    MAX_OPAQUE_LENGTH,
    MAX_STRING_LENGTH,
    E,
    Element,
    Limits,
    WbxmlError,
    WbxmlLimitError,
    decode,
    encode,
)

# <FolderSync xmlns="FolderHierarchy"><SyncKey>0</SyncKey></FolderSync> (the checklist's
# worked libwbxml round trip).
FOLDER_SYNC = bytes.fromhex("03016a00 0007 56 52 03 3000 01 01")

# AirSync page: Sync 0x05, SyncKey 0x0B, Status 0x0E, Collections 0x1C.
SYNC, SYNC_KEY, STATUS = 0x05, 0x0B, 0x0E
C = 0x40  # content bit


def doc(*body: int | bytes) -> bytes:
    out = bytearray(HEADER)
    for part in body:
        out += bytes([part]) if isinstance(part, int) else part
    return bytes(out)


def nested(depth: int) -> bytes:
    """Sync > Collections > Collections > ... : `depth` elements deep."""
    return doc(SYNC | C, *([0x1C | C] * (depth - 1)), *([0x01] * depth))


def error(data: bytes, limits: Limits | None = None) -> WbxmlError:
    with pytest.raises(WbxmlError) as caught:
        decode(data, limits=limits or DEFAULT_LIMITS)
    return caught.value


def test_folder_sync_request() -> None:
    root = decode(FOLDER_SYNC)
    assert root == E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", "0"))
    assert root.text_of("SyncKey") == "0"


def test_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(FOLDER_SYNC)) == decode(memoryview(FOLDER_SYNC)) == decode(FOLDER_SYNC)


# --- header ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty document"),
        (b"\x02\x01\x6a\x00\x45\x01", "version byte 0x02"),
        (b"\x13\x01\x6a\x00\x45\x01", "version byte 0x13"),
        (b"\x03\x04\x6a\x00\x45\x01", "public identifier 4"),
        (b"\x03\x00\x00\x6a\x00\x45\x01", "public identifier 0"),
        (b"\x03\x01\x04\x00\x45\x01", "charset MIBenum 4"),
        (b"\x03\x01\x00\x00\x45\x01", "charset MIBenum 0"),
        (b"\x03\x01\x6a\x03abc\x45\x01", "string table of 3 bytes"),
        (b"\x03", "ends inside the public identifier"),
        (b"\x03\x01", "ends inside the charset"),
        (b"\x03\x01\x6a", "ends inside the string table length"),
        (b"\x03\x01\x6a\x00", "no root element"),
        (b"\x03\x81", "ends inside the public identifier"),
    ],
)
def test_header_is_exactly_what_eas_sends(data: bytes, message: str) -> None:
    assert message in str(error(data))


def test_header_with_multibyte_charset_encoding_is_still_utf8() -> None:
    # 106 written in two mb_u_int32 bytes (not minimal, but legal WBXML).
    assert decode(b"\x03\x01\x80\x6a\x00\x45\x01") == E("AirSync:Sync")


# --- mb_u_int32 -----------------------------------------------------------------------------


def test_mb_u_int32_longer_than_five_bytes() -> None:
    failure = error(b"\x03\x80\x80\x80\x80\x81\x01\x6a\x00\x45\x01")
    assert "longer than 5 bytes" in str(failure)
    assert failure.offset == 1


def test_mb_u_int32_beyond_32_bits() -> None:
    # Five bytes carry 35 bits; 0x1_0000_0000 does not fit.
    failure = error(doc(SYNC | C, 0xC3, b"\x90\x80\x80\x80\x00", 0x01))
    assert "does not fit in 32 bits" in str(failure)


def test_mb_u_int32_largest_value_is_read_then_bounded() -> None:
    failure = error(doc(SYNC | C, 0xC3, b"\x8f\xff\xff\xff\x7f", 0x01))
    assert isinstance(failure, WbxmlLimitError)  # 4 GiB - 1 > MAX_OPAQUE_LENGTH


def test_opaque_length_in_several_bytes() -> None:
    payload = bytes(range(256)) * 2
    data = doc(SYNC | C, 0x00, 0x15, 0x10 | C, 0xC3, b"\x84\x00", payload, 0x01, 0x01)
    assert decode(data) == E("AirSync:Sync", E("ComposeMail:Mime", payload))


# --- tokens -------------------------------------------------------------------------------


def test_unknown_tag_token_names_page_token_and_offset() -> None:
    failure = error(doc(0x00, 0x07, 0x56, 0x3F, 0x01))
    assert failure.page == 7
    assert failure.token == 0x3F
    assert failure.offset == 7
    assert "unknown tag token 0x3F on code page 7 (FolderHierarchy)" in str(failure)
    assert "(at byte 7)" in str(failure)


def test_unknown_tag_token_with_content_bit() -> None:
    failure = error(doc(0x00, 0x19, 0x1A | C, 0x01))  # Find has no 0x1A
    assert (failure.page, failure.token) == (25, 0x1A)


def test_unknown_code_page() -> None:
    failure = error(doc(0x00, 0x1A, 0x45, 0x01))
    assert failure.page == 26
    assert "unknown code page 26" in str(failure)
    assert failure.offset == 4


def test_switch_page_may_be_repeated_and_persists_across_end() -> None:
    data = doc(
        0x00, 0x07, 0x00, 0x00, SYNC | C,  # two switches before the root
        0x00, 0x11, 0x0A | C, 0x06, 0x01,  # AirSyncBase:Body(Type/)
        0x0A,  # still AirSyncBase after END: Body
        0x00, 0x00, STATUS, 0x01,
    )  # fmt: skip
    assert decode(data) == E(
        "AirSync:Sync",
        E("AirSyncBase:Body", E("AirSyncBase:Type")),
        E("AirSyncBase:Body"),
        E("AirSync:Status"),
    )


@pytest.mark.parametrize(
    ("token", "name"),
    [
        (0x02, "ENTITY"),
        (0x04, "LITERAL"),
        (0x40, "EXT_I_0"),
        (0x41, "EXT_I_1"),
        (0x42, "EXT_I_2"),
        (0x43, "PI"),
        (0x44, "LITERAL_C"),
        (0x80, "EXT_T_0"),
        (0x81, "EXT_T_1"),
        (0x82, "EXT_T_2"),
        (0x83, "STR_T"),
        (0x84, "LITERAL_A"),
        (0xC0, "EXT_0"),
        (0xC1, "EXT_1"),
        (0xC2, "EXT_2"),
        (0xC4, "LITERAL_AC"),
    ],
)
def test_global_tokens_eas_does_not_use(token: int, name: str) -> None:
    failure = error(doc(SYNC | C, token, b"\x00\x00\x00", 0x01))
    assert f"{name}" in str(failure)
    assert "not used by EAS" in str(failure)
    assert failure.offset == 5


@pytest.mark.parametrize("token", [0x80 | SYNC, 0xC0 | SYNC])
def test_attributes_are_refused(token: int) -> None:
    failure = error(doc(token, 0x01, 0x01))
    assert "AirSync:Sync has attributes" in str(failure)
    assert failure.token == SYNC


def test_pi_before_root() -> None:
    assert "PI is not used by EAS" in str(error(doc(0x43, 0x05, 0x01, SYNC)))


# --- structure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (doc(0x01), "END with no open element"),
        (doc(0x03, b"x\x00", SYNC), "string outside the root element"),
        (doc(0xC3, 0x00, SYNC), "opaque data outside the root element"),
        (doc(SYNC, SYNC), "1 bytes after the end of the root element"),
        (doc(SYNC | C, 0x01, 0x00, 0x00), "2 bytes after the end of the root element"),
        (doc(SYNC | C, STATUS | C, 0x01), "document ends inside AirSync:Sync (opened at byte 4)"),
        (doc(SYNC | C, 0x00), "ends inside SWITCH_PAGE"),
        (doc(SYNC | C, 0x03, b"abc"), "ends inside a string"),
        (doc(SYNC | C, 0xC3, 0x05, b"abc"), "ends inside opaque data (5 bytes announced, 3"),
        (doc(SYNC | C, 0xC3), "ends inside the opaque length"),
        (doc(SYNC | C, 0x03, b"a\x00", STATUS, 0x01), "mixes a value with child elements"),
        (doc(SYNC | C, STATUS, 0x03, b"a\x00", 0x01), "mixes a string with other content"),
        (doc(SYNC | C, STATUS, 0xC3, 0x00, 0x01), "mixes opaque data with other content"),
        (doc(SYNC | C, 0x03, b"a\x00", 0xC3, 0x00, 0x01), "mixes opaque data"),
        (doc(SYNC | C, 0xC3, 0x00, 0x03, b"a\x00", 0x01), "mixes a string"),
        (doc(SYNC | C, 0x03, b"\xff\x00", 0x01), "not valid UTF-8"),
        (doc(SYNC | C, 0x03, b"\xed\xa0\x80\x00", 0x01), "not valid UTF-8"),  # a surrogate
    ],
)
def test_malformed_structure(data: bytes, message: str) -> None:
    assert message in str(error(data))


def test_invalid_utf8_offset_points_at_the_bad_byte() -> None:
    assert error(doc(SYNC | C, 0x03, b"ab\xff\x00", 0x01)).offset == 8


def test_every_truncation_of_a_valid_document_is_an_error() -> None:
    data = encode(
        E(
            "AirSync:Sync",
            E("AirSync:Collections", E("AirSync:Collection", E("AirSync:SyncKey", "1"))),
            E("ComposeMail:Mime", b"\x00\x01" * 70),
            E("AirSync:Status", "1"),
        )
    )
    for end in range(len(data)):
        with pytest.raises(WbxmlError):
            decode(data[:end])


def test_strings_and_opaque_in_pieces_are_joined() -> None:
    data = doc(SYNC | C, 0x00, 0x15, 0x10 | C, 0xC3, 0x01, b"a", 0xC3, 0x01, b"b", 0x01, 0x00)
    data += bytes([0x00, STATUS | C, 0x03]) + b"x\x00\x03y\x00" + b"\x01\x01"
    assert decode(data) == E(
        "AirSync:Sync", E("ComposeMail:Mime", b"ab"), E("AirSync:Status", "xy")
    )


def test_content_bit_with_no_content_is_an_empty_element() -> None:
    assert decode(doc(SYNC | C, STATUS | C, 0x01, 0x01)) == E("AirSync:Sync", E("AirSync:Status"))


def test_empty_string_and_empty_opaque_are_values() -> None:
    root = decode(doc(SYNC | C, STATUS | C, 0x03, 0x00, 0x01, SYNC_KEY | C, 0xC3, 0x00, 0x01, 0x01))
    assert root.children == (
        Element("AirSync", "Status", (), ""),
        Element("AirSync", "SyncKey", (), b""),
    )


def test_opaque_where_a_string_is_expected_reads_as_text() -> None:
    # The checklist: decoders must accept OPAQUE where a string is expected.
    root = decode(doc(SYNC | C, SYNC_KEY | C, 0xC3, 0x02, b"42", 0x01, 0x01))
    assert root.text_of("SyncKey") == "42"
    bad = decode(doc(SYNC | C, SYNC_KEY | C, 0xC3, 0x01, b"\xff", 0x01, 0x01))
    with pytest.raises(WbxmlError, match="not UTF-8"):
        bad.text_of("SyncKey")


def test_legacy_tokens_decode() -> None:
    assert decode(doc(SYNC | C, 0x11, 0x01)) == E("AirSync:Sync", E("AirSync:Version"))


# --- limits (each crossed, at the default where that is cheap) ----------------------------


def test_document_size_limit() -> None:
    assert isinstance(error(bytes(MAX_DOCUMENT_SIZE + 1)), WbxmlLimitError)
    assert decode(FOLDER_SYNC, limits=Limits(max_document_size=len(FOLDER_SYNC)))
    failure = error(FOLDER_SYNC, Limits(max_document_size=len(FOLDER_SYNC) - 1))
    assert isinstance(failure, WbxmlLimitError)
    assert f"document of {len(FOLDER_SYNC)} bytes" in str(failure)


def test_depth_limit() -> None:
    assert decode(nested(MAX_DEPTH))
    failure = error(nested(MAX_DEPTH + 1))
    assert isinstance(failure, WbxmlLimitError)
    assert f"nested deeper than {MAX_DEPTH} levels" in str(failure)
    # An empty element counts as a level too.
    assert decode(doc(SYNC | C, STATUS, 0x01), limits=Limits(max_depth=2))
    assert isinstance(error(doc(SYNC | C, STATUS, 0x01), Limits(max_depth=1)), WbxmlLimitError)


def test_element_count_limit() -> None:
    at_limit = doc(SYNC | C, bytes([STATUS]) * (MAX_ELEMENTS - 1), 0x01)
    assert len(decode(at_limit).children) == MAX_ELEMENTS - 1
    over = doc(SYNC | C, bytes([STATUS]) * MAX_ELEMENTS, 0x01)
    failure = error(over)
    assert isinstance(failure, WbxmlLimitError)
    assert f"more than {MAX_ELEMENTS} elements" in str(failure)


def test_string_length_limit() -> None:
    over = doc(SYNC | C, 0x03, b"a" * (MAX_STRING_LENGTH + 1), 0x00, 0x01)
    assert isinstance(error(over), WbxmlLimitError)
    small = Limits(max_string_length=4)
    assert decode(doc(SYNC | C, 0x03, b"abcd\x00", 0x01), limits=small).text == "abcd"
    assert isinstance(error(doc(SYNC | C, 0x03, b"abcde\x00", 0x01), small), WbxmlLimitError)
    # Pieces of one element add up.
    pieces = doc(SYNC | C, 0x03, b"abc\x00", 0x03, b"de\x00", 0x01)
    assert isinstance(error(pieces, small), WbxmlLimitError)
    # A truncated string shorter than the limit is malformed, not over the limit.
    failure = error(doc(SYNC | C, 0x03, b"abc"), small)
    assert not isinstance(failure, WbxmlLimitError)


def test_opaque_length_limit() -> None:
    length = MAX_OPAQUE_LENGTH + 1
    groups = []
    while True:
        groups.append(length & 0x7F)
        length >>= 7
        if not length:
            break
    announced = bytes(reversed([groups[0]] + [0x80 | g for g in groups[1:]]))
    failure = error(doc(SYNC | C, 0xC3, announced, 0x01))  # refused before reading it
    assert isinstance(failure, WbxmlLimitError)
    small = Limits(max_opaque_length=3)
    assert decode(doc(SYNC | C, 0xC3, 0x03, b"abc", 0x01), limits=small).data == b"abc"
    assert isinstance(error(doc(SYNC | C, 0xC3, 0x04, b"abcd", 0x01), small), WbxmlLimitError)
    pieces = doc(SYNC | C, 0xC3, 0x02, b"ab", 0xC3, 0x02, b"cd", 0x01)
    assert isinstance(error(pieces, small), WbxmlLimitError)


def test_limit_errors_are_wbxml_errors_and_value_errors() -> None:
    failure = error(nested(MAX_DEPTH + 1))
    assert isinstance(failure, WbxmlError)
    assert isinstance(failure, ValueError)
