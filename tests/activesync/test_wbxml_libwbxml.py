"""Cross-checks against Debian's libwbxml (`wbxml2xml -l ACTIVESYNC`, `xml2wbxml -a -n -v
1.3`), an independent implementation with its own code-page tables.

(a) our encoder's output, one document per code page holding every tag libwbxml knows on
    it, decodes in `wbxml2xml` to the same tree, with no `<unknown>`;
(b) `xml2wbxml`'s encoding of the same documents decodes with our decoder to the same tree
    and is byte-for-byte what our encoder writes;
(c) the MS-ASWBXML example decodes the same in both.
libwbxml does not check ActiveSync structure (which element may hold which), so a flat
document per page is enough. Where its tag names differ from MS-ASWBXML's, see
MS_VS_LIBWBXML in test_wbxml_codepages.py; its 0.11.8 gaps are checked below.
"""

from __future__ import annotations

import pytest
import wbxml_tool
from hypothesis import HealthCheck, given, settings
from test_wbxml_codepages import LIBWBXML_GAPS
from test_wbxml_encode import SPEC_EXAMPLE, spec_example_tree
from wbxml_strategies import LIBWBXML_TAGS, XML_TEXT, trees
from wbxml_tool import (
    LIBWBXML_BINARY_TAGS,
    LibwbxmlError,
    check_with_libwbxml,
    from_libwbxml_xml,
    normalized,
    to_libwbxml_xml,
    wbxml_to_xml,
    xml_to_wbxml,
)

from protocols.activesync.wbxml import E, Element, decode, encode, page_of, tag_at
from protocols.activesync.wbxml.codepages import NAMESPACES, TAGS

PAGES_LIBWBXML_KNOWS = [page for page in range(26) if page != 25]  # Find is missing in 0.11.8


def page_document(page: int) -> Element:
    """Every tag of `page` that libwbxml knows, under the page's first tag: text in most,
    opaque in libwbxml's binary tags, and some empty (no content bit)."""
    ns = NAMESPACES[page]
    known = [tag for tag in TAGS if tag.page == page and tag.libwbxml_name is not None]
    children = []
    for index, tag in enumerate(known):
        if (ns, tag.name) in LIBWBXML_BINARY_TAGS:
            value: str | bytes | None = bytes([index, 0x00, 0xFF, 0x0A])
        elif index % 4 == 3:
            value = None
        else:
            value = f"{tag.name} {tag.token:#04x} é & <x>"
        children.append(Element(ns, tag.name, (), value))
    return Element(ns, known[0].name, tuple(children))


def mixed_document() -> Element:
    """Nesting across pages, so SWITCH_PAGE appears inside content and after END."""
    return E(
        "ItemOperations:ItemOperations",
        E(
            "ItemOperations:Response",
            E(
                "ItemOperations:Fetch",
                E("ItemOperations:Status", 1),
                E("AirSync:CollectionId", "5"),
                E("AirSync:ServerId", "5:12"),
                E("AirSync:Class", "Email"),
                E(
                    "ItemOperations:Properties",
                    E("Email:Subject", "Grüße"),
                    E("Email2:ConversationId", b"\x01\x02\x03"),
                    E("AirSyncBase:Body", E("AirSyncBase:Type", 4), E("AirSyncBase:Data", "x")),
                    E("Email:Read", 1),
                    E("RightsManagement:RightsManagementLicense"),
                ),
            ),
        ),
    )


@pytest.mark.parametrize("page", PAGES_LIBWBXML_KNOWS, ids=lambda page: NAMESPACES[page])
def test_a_our_encoding_read_by_wbxml2xml(page: int) -> None:
    tree = page_document(page)
    xml = wbxml_to_xml(encode(tree))  # raises on <unknown>
    assert from_libwbxml_xml(xml) == normalized(tree)
    assert check_with_libwbxml(encode(tree)) == tree


@pytest.mark.parametrize("page", PAGES_LIBWBXML_KNOWS, ids=lambda page: NAMESPACES[page])
def test_b_xml2wbxml_encoding_read_by_us(page: int) -> None:
    tree = page_document(page)
    theirs = xml_to_wbxml(to_libwbxml_xml(tree))
    assert decode(theirs) == normalized(tree)
    assert theirs == encode(normalized(tree))


def test_a_and_b_across_pages() -> None:
    tree = mixed_document()
    assert check_with_libwbxml(encode(tree)) == tree
    assert xml_to_wbxml(to_libwbxml_xml(tree)) == encode(tree)


def test_c_spec_example_in_both() -> None:
    assert check_with_libwbxml(SPEC_EXAMPLE) == spec_example_tree()
    xml = wbxml_to_xml(SPEC_EXAMPLE)
    assert '<Body xmlns="AirSyncBase:">' in xml
    assert '<FileAs xmlns="Contacts:">Funk, Don</FileAs>' in xml
    assert xml_to_wbxml(xml) == SPEC_EXAMPLE


def test_checklist_folder_sync_round_trip() -> None:
    data = bytes.fromhex("03016a00 0007 56 52 03 3000 01 01")
    xml = wbxml_to_xml(data)
    assert xml.endswith('<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>')
    assert xml_to_wbxml(xml) == data == encode(decode(data))


def test_libwbxml_gaps_print_unknown_and_the_checker_allows_only_them() -> None:
    gap_tags = []
    for ns, token in sorted(LIBWBXML_GAPS):
        definition = tag_at(page_of(ns) or 0, token)
        assert definition is not None
        gap_tags.append(Element(ns, definition.name, (), "v"))
    tree = E("Search:Search", E("Search:Store", gap_tags), E("Search:Status", 1))
    data = encode(tree)
    with pytest.raises(LibwbxmlError, match="does not know some tags"):
        wbxml_to_xml(data)
    xml = wbxml_to_xml(data, allow_unknown=True)
    assert xml.count("<unknown>") == len(LIBWBXML_GAPS)
    assert check_with_libwbxml(data) == tree


def test_find_request_nests_known_tags_below_the_unknown_page() -> None:
    tree = E(
        "Find:Find",
        E("Find:SearchId", "1"),
        E(
            "Find:ExecuteSearch",
            E(
                "Find:MailBoxSearchCriterion",
                E("Find:Query", E("AirSync:Class", "Email"), E("Find:FreeText", "hello")),
                E("Find:Options", E("Find:Range", "0-99"), E("Find:DeepTraversal")),
            ),
        ),
    )
    assert check_with_libwbxml(encode(tree)) == tree


@pytest.mark.parametrize(
    "wrong",
    [
        E("Email:Flag", E("Email:FlagType", "2")),  # another tag
        E("Email:Flag", E("Email:Status", "3")),  # another value
        E("Email:Flag"),  # a child missing
        E("Tasks:Complete", E("Email:Status", "2")),  # another namespace
    ],
)
def test_the_checker_catches_a_disagreement(
    wrong: Element, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(E("Email:Flag", E("Email:Status", "2")))
    assert "<FlagStatus>2</FlagStatus>" in wbxml_to_xml(data)  # libwbxml's name for it
    check_with_libwbxml(data)
    # Stand in a decoder that reads the bytes wrongly: the checker must notice.
    monkeypatch.setattr(wbxml_tool, "decode", lambda _data: wrong)
    with pytest.raises(LibwbxmlError):
        check_with_libwbxml(data)


def test_wbxml2xml_failure_is_reported() -> None:
    with pytest.raises(LibwbxmlError, match="wbxml2xml exit"):
        wbxml_to_xml(b"\x03\x01\x6a\x00\x45\x5c")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(trees(LIBWBXML_TAGS, XML_TEXT, opaque_tags=LIBWBXML_BINARY_TAGS, max_leaves=15))
def test_random_trees_agree_with_libwbxml(tree: Element) -> None:
    data = encode(tree)
    assert check_with_libwbxml(data) == tree
    theirs = xml_to_wbxml(to_libwbxml_xml(tree), keep_whitespace=True)
    assert decode(theirs) == normalized(tree)
