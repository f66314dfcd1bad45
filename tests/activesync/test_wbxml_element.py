"""The element tree handlers use: building, lookup, values, the readable XML form."""

from __future__ import annotations

import dataclasses
from enum import IntEnum, StrEnum

import pytest

from protocols.activesync.wbxml import (
    Builder,
    E,
    Element,
    Namespace,
    WbxmlEncodeError,
    WbxmlError,
    build,
    from_xml,
    to_xml,
)
from protocols.activesync.wbxml import ns as builders
from protocols.activesync.wbxml.ns import AirSync, AirSyncBase, Email, FolderHierarchy

SYNC_REQUEST = E(
    "AirSync:Sync",
    E(
        "AirSync:Collections",
        E(
            "AirSync:Collection",
            E("AirSync:SyncKey", "5"),
            E("AirSync:CollectionId", "inbox"),
            E(
                "AirSync:Options",
                E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", 2)),
                E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", 4)),
            ),
        ),
        E("AirSync:Collection", E("AirSync:SyncKey", "9"), E("AirSync:CollectionId", "sent")),
    ),
    E("AirSync:Wait"),
)


# --- building -----------------------------------------------------------------------------


def test_e_and_namespace_builders_agree() -> None:
    built = AirSync.Sync(
        AirSync.Collections(
            AirSync.Collection(
                AirSync.SyncKey("5"),
                AirSync.CollectionId("inbox"),
                AirSync.Options(
                    AirSyncBase.BodyPreference(AirSyncBase.Type(2)),
                    AirSyncBase("BodyPreference", AirSyncBase.Type(4)),
                ),
            ),
            AirSync.Collection(AirSync.SyncKey("9"), AirSync.CollectionId("sent")),
        ),
        AirSync.Wait(),
    )
    assert built == SYNC_REQUEST


def test_every_namespace_has_a_builder() -> None:
    for namespace in Namespace:
        builder = getattr(builders, namespace.value)
        assert isinstance(builder, Builder)
        assert builder.namespace == namespace.value


def test_builder_content_forms() -> None:
    items = ["a", "b"]
    element = AirSync.Commands(
        (AirSync.Delete(AirSync.ServerId(item)) for item in items),
        None,  # optional children written inline
        [AirSync.Fetch(), None],
    )
    assert [child.tag for child in element.children] == ["Delete", "Delete", "Fetch"]
    assert AirSync.Status(3).value == "3"
    assert AirSync.SyncKey(b"\x01").value == b"\x01"
    assert AirSync.SyncKey(bytearray(b"\x02")).value == b"\x02"
    assert AirSync.Status().is_empty
    assert build("AirSync", "Status", [1]) == AirSync.Status(1)


def test_builder_takes_enum_members_by_value() -> None:
    class SyncStatus(IntEnum):
        SUCCESS = 1
        INVALID_SYNC_KEY = 3

    class FolderClass(StrEnum):
        EMAIL = "Email"

    status = AirSync.Status(SyncStatus.INVALID_SYNC_KEY)
    assert status.value == "3"
    assert type(status.value) is str
    folder_class = AirSync.Class(FolderClass.EMAIL)
    assert folder_class.value == "Email"
    assert type(folder_class.value) is str


def test_builder_refusals() -> None:
    with pytest.raises(AttributeError, match="code page 0 \\(AirSync\\) has no tag 'Synch'"):
        _ = AirSync.Synch
    with pytest.raises(WbxmlEncodeError, match="no tag"):
        E("AirSync:Nope")
    with pytest.raises(WbxmlEncodeError, match="no EAS code page"):
        E("Airsync:Sync")
    with pytest.raises(WbxmlEncodeError, match="Namespace:Tag"):
        E("Sync")
    with pytest.raises(WbxmlEncodeError, match="more than one value"):
        AirSync.Status(1, 2)
    with pytest.raises(WbxmlEncodeError, match="children or a value"):
        AirSync.Collection("text", AirSync.SyncKey("1"))
    with pytest.raises(TypeError, match="booleans"):
        AirSync.DeletesAsMoves(True)
    with pytest.raises(TypeError, match="cannot hold"):
        AirSync.Status(1.5)  # type: ignore[arg-type]  # what a handler bug would pass
    with pytest.raises(TypeError, match="sequence of children"):
        AirSync.Commands(["text"])  # type: ignore[list-item]  # likewise
    with pytest.raises(ValueError, match="no EAS code page"):
        Builder("Nope")


def test_elements_are_immutable_and_hashable() -> None:
    element = E("AirSync:Status", "1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        element.value = "2"  # type: ignore[misc]  # the point of the test
    assert len({element, E("AirSync:Status", "1")}) == 1


def test_namespace_enum_is_accepted_and_stored_as_str() -> None:
    element = Element(Namespace.AIRSYNC, "Sync")
    assert type(element.ns) is str
    assert element == E("AirSync:Sync")
    assert element.qname == "AirSync:Sync"
    assert (element.page, element.token) == (0, 0x05)
    assert E("Find:Picture").page == 25
    assert E("Find:Picture").token == 0x22


# --- lookup -------------------------------------------------------------------------------


def test_find_and_findall_default_to_the_namespace_searched() -> None:
    collections = SYNC_REQUEST.findall("Collections/Collection")
    assert [c.text_of("CollectionId") for c in collections] == ["inbox", "sent"]
    types = SYNC_REQUEST.findall("Collections/Collection/Options/AirSyncBase:BodyPreference/Type")
    assert [t.text for t in types] == ["2", "4"]
    assert SYNC_REQUEST.find("Wait") == E("AirSync:Wait")
    assert SYNC_REQUEST.find("AirSync:Wait") == E("AirSync:Wait")
    assert SYNC_REQUEST.find("Partial") is None
    assert SYNC_REQUEST.findall("Partial") == []
    # A step without prefix is in the namespace of the step before it: AirSync has no
    # BodyPreference, and saying so beats silently finding nothing.
    with pytest.raises(ValueError, match="AirSync\\) has no tag 'BodyPreference'"):
        SYNC_REQUEST.find("Collections/Collection/Options/BodyPreference")


def test_text_of_and_bytes_of() -> None:
    assert SYNC_REQUEST.text_of("Collections/Collection/SyncKey") == "5"
    assert SYNC_REQUEST.text_of("Partial") is None
    assert SYNC_REQUEST.text_of("Partial", "0") == "0"
    assert SYNC_REQUEST.text_of("Wait") == ""  # present but empty
    assert SYNC_REQUEST.text_of("Collections") == ""  # a container has no text
    assert SYNC_REQUEST.bytes_of("Collections/Collection/SyncKey") == b"5"
    assert SYNC_REQUEST.bytes_of("Partial") is None
    mime = E("ComposeMail:SendMail", E("ComposeMail:Mime", b"\xff\x00"))
    assert mime.bytes_of("Mime") == b"\xff\x00"


def test_lookup_paths_with_typos_fail_loudly() -> None:
    with pytest.raises(ValueError, match="has no tag 'Colections'"):
        SYNC_REQUEST.find("Colections")
    # Checked even where nothing matches the steps before it.
    with pytest.raises(ValueError, match="has no tag 'Tipe'"):
        SYNC_REQUEST.find("Partial/AirSyncBase:Body/Tipe")
    with pytest.raises(ValueError, match="no namespace 'AirSinc'"):
        SYNC_REQUEST.find("AirSinc:Sync")
    with pytest.raises(ValueError, match="bad lookup path"):
        SYNC_REQUEST.find("Collections//Collection")
    with pytest.raises(ValueError, match="bad lookup path"):
        SYNC_REQUEST.find(":Sync")


def test_iter_walks_in_document_order() -> None:
    tags = [element.tag for element in SYNC_REQUEST.iter()]
    assert tags[:5] == ["Sync", "Collections", "Collection", "SyncKey", "CollectionId"]
    assert tags[-1] == "Wait"
    assert len(tags) == 14


def test_text_and_data_views() -> None:
    assert E("Email:Subject", "é").data == "é".encode()
    assert E("Email:Subject", "é".encode()).text == "é"
    assert E("Email:Subject").text == ""
    assert E("Email:Subject").data == b""
    with pytest.raises(WbxmlError, match="not UTF-8"):
        _ = E("Email:Subject", b"\xff").text


# --- the readable form ---------------------------------------------------------------------


def test_to_xml_declares_namespaces_where_they_change() -> None:
    tree = AirSync.Sync(
        AirSync.Status(1),
        AirSyncBase.Body(AirSyncBase.Data(b"hi")),
        Email.Subject("a < b & c\r\n"),
        AirSync.Partial(),
    )
    assert to_xml(tree) == (
        '<Sync xmlns="AirSync">\n'
        "  <Status>1</Status>\n"
        '  <Body xmlns="AirSyncBase">\n'
        '    <Data opaque="base64">aGk=</Data>\n'
        "  </Body>\n"
        '  <Subject xmlns="Email">a &lt; b &amp; c&#13;\n</Subject>\n'
        "  <Partial/>\n"
        "</Sync>\n"
    )
    assert to_xml(AirSync.Sync(AirSync.Status(1)), indent=None) == (
        '<Sync xmlns="AirSync"><Status>1</Status></Sync>'
    )


def test_from_xml_round_trips_to_xml() -> None:
    tree = AirSync.Sync(
        AirSync.Status(1),
        AirSyncBase.Body(AirSyncBase.Data(b"\x00\xff")),
        Email.Subject("  spaced \r\n text  "),
        AirSync.Partial(),
    )
    assert from_xml(to_xml(tree)) == tree
    assert from_xml(to_xml(tree, indent=None)) == tree


def test_from_xml_reads_the_spec_and_wbxml2xml_styles() -> None:
    spec_style = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<FolderSync xmlns="FolderHierarchy" xmlns:a="AirSyncBase">'
        "<SyncKey>0</SyncKey></FolderSync>"
    )
    tool_style = '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'
    expected = FolderHierarchy.FolderSync(FolderHierarchy.SyncKey("0"))
    assert from_xml(spec_style) == from_xml(tool_style) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<Sync>", "not well-formed"),
        ("<Sync/>", "has no namespace"),
        ('<Sink xmlns="AirSync"/>', "has no tag 'Sink'"),
        ('<Sync xmlns="AirSync" foo="1"/>', "no attribute foo"),
        ('<Sync xmlns="AirSync">x<Status/></Sync>', "text beside child elements"),
        ('<Sync xmlns="AirSync" opaque="base64">@@</Sync>', "not base64"),
        ('<Sync xmlns="AirSync" opaque="base64"><Status/></Sync>', "cannot have children"),
        ('<!DOCTYPE x [<!ENTITY a "b">]><Sync xmlns="AirSync">&a;</Sync>', "entity"),
    ],
)
def test_from_xml_refusals(text: str, message: str) -> None:
    with pytest.raises(WbxmlError, match=message):
        from_xml(text)
