"""The encoder: exact bytes for the MS-ASWBXML example and the rules EAS clients rely on."""

from __future__ import annotations

import pytest

from protocols.activesync.wbxml import (
    HEADER,
    E,
    Element,
    WbxmlEncodeError,
    WbxmlError,
    decode,
    encode,
)
from protocols.activesync.wbxml.ns import AirSync, AirSyncBase, ComposeMail, Contacts

# The MS-ASWBXML protocol example ("WBXML encoding of a server response that contains a new
# contact", with its byte-by-byte description): a Contacts Sync response.
SPEC_EXAMPLE = bytes.fromhex(
    "03 01 6A 00 45 5C 4F 50 03 43 6F 6E 74 61 63 74 73 00 01 4B 03 32 00 01 52 03 32 00 01"
    " 4E 03 31 00 01 56 47 4D 03 32 3A 31 00 01 5D 00 11 4A 46 03 31 00 01 4C 03 30 00 01"
    " 4D 03 31 00 01 01 00 01 5E 03 46 75 6E 6B 2C 20 44 6F 6E 00 01 5F 03 44 6F 6E 00 01"
    " 69 03 46 75 6E 6B 00 01 00 11 56 03 31 00 01 01 01 01 01 01 01"
)


def spec_example_tree() -> Element:
    return AirSync.Sync(
        AirSync.Collections(
            AirSync.Collection(
                AirSync.Class("Contacts"),
                AirSync.SyncKey("2"),
                AirSync.CollectionId("2"),
                AirSync.Status(1),
                AirSync.Commands(
                    AirSync.Add(
                        AirSync.ServerId("2:1"),
                        AirSync.ApplicationData(
                            AirSyncBase.Body(
                                AirSyncBase.Type(1),
                                AirSyncBase.EstimatedDataSize(0),
                                AirSyncBase.Truncated(1),
                            ),
                            Contacts.FileAs("Funk, Don"),
                            Contacts.FirstName("Don"),
                            Contacts.LastName("Funk"),
                            AirSyncBase.NativeBodyType(1),
                        ),
                    )
                ),
            )
        )
    )


def test_spec_example_decodes_to_the_spec_xml() -> None:
    assert len(SPEC_EXAMPLE) == 106
    tree = decode(SPEC_EXAMPLE)
    assert tree == spec_example_tree()
    add = tree.find("Collections/Collection/Commands/Add")
    assert add is not None
    assert add.text_of("ServerId") == "2:1"
    assert add.text_of("ApplicationData/Contacts:FileAs") == "Funk, Don"
    assert add.text_of("ApplicationData/AirSyncBase:Body/EstimatedDataSize") == "0"


def test_spec_example_encodes_byte_for_byte() -> None:
    assert encode(spec_example_tree()) == SPEC_EXAMPLE


def test_header_is_03_01_6a_00() -> None:
    assert HEADER == b"\x03\x01\x6a\x00"
    assert encode(E("AirSync:Sync")).startswith(b"\x03\x01\x6a\x00")


def test_empty_element_has_no_content_bit() -> None:
    assert encode(E("AirSync:Sync")) == HEADER + b"\x05"
    assert encode(E("AirSync:Sync", E("AirSync:Partial"))) == HEADER + b"\x45\x26\x01"


def test_empty_string_is_kept_as_a_value() -> None:
    assert encode(E("AirSync:Sync", "")) == HEADER + b"\x45\x03\x00\x01"


def test_first_page_zero_needs_no_switch_and_other_pages_do() -> None:
    assert encode(E("AirSync:Sync")) == HEADER + b"\x05"
    assert encode(E("FolderHierarchy:FolderSync")) == HEADER + b"\x00\x07\x16"


def test_switch_page_only_when_the_page_changes() -> None:
    tree = E(
        "AirSync:Sync",
        E("AirSyncBase:Body", E("AirSyncBase:Type", "1")),
        E("AirSyncBase:NativeBodyType", "1"),  # same page as the END before: no switch
        E("AirSync:Status", "1"),
    )
    assert encode(tree) == HEADER + bytes.fromhex(
        "45 0011 4A 46 03 3100 01 01 56 03 3100 01 0000 4E 03 3100 01 01"
    )


def test_opaque_uses_mb_u_int32_length() -> None:
    mime = b"M" * 200  # 200 = 0x81 0x48
    data = encode(ComposeMail.SendMail(ComposeMail.Mime(mime)))
    assert data == HEADER + b"\x00\x15\x45\x50\xc3\x81\x48" + mime + b"\x01\x01"
    assert encode(E("ComposeMail:Mime", b"")) == HEADER + b"\x00\x15\x50\xc3\x00\x01"


def test_text_is_utf8_str_i() -> None:
    data = encode(E("Email:Subject", "Grüße ✓ 😀"))
    assert data == HEADER + b"\x00\x02\x54\x03" + "Grüße ✓ 😀".encode() + b"\x00\x01"


def test_strict_encoder_refuses_nul_and_lone_surrogates() -> None:
    with pytest.raises(WbxmlEncodeError, match="NUL"):
        encode(Element("Email", "Subject", (), "a\x00b"))
    with pytest.raises(WbxmlEncodeError, match="surrogate"):
        encode(Element("Email", "Subject", (), "a\udcffb"))


def test_builder_cleans_text_so_any_str_encodes() -> None:
    subject = "a\x00b\x01c\td\udcffe"
    element = E("Email:Subject", subject)
    assert element.value == "abc\td\ufffde"
    assert decode(encode(element)) == element


def test_deep_trees_encode_without_recursion() -> None:
    tree = E("AirSync:Sync")
    for _ in range(5000):
        tree = E("AirSync:Collections", tree)
    data = encode(tree)
    assert data[len(HEADER) :].count(b"\x01") == 5000
    with pytest.raises(WbxmlError):
        decode(data)  # deeper than MAX_DEPTH: the decoder is the one with limits
