"""Debian's libwbxml tools as an independent WBXML oracle for the test suite.

`wbxml2xml -l ACTIVESYNC` decodes EAS WBXML with libwbxml's own code-page tables;
`xml2wbxml -a -n -v 1.3` encodes XML to EAS wire form (no public id string, no string
table). Both are in Debian's libwbxml2-utils (0.11.8 on bookworm), which `make
system-deps` installs.

For end-to-end tests: `check_with_libwbxml(body)` decodes a server response with both our
decoder and `wbxml2xml`, fails on any `<unknown>` tag outside libwbxml 0.11.8's known gaps
(the Find page, Provision:AccountOnlyRemoteWipe, MeetingResponse:ProposedStartTime/
ProposedEndTime) and on any difference between the two trees, and returns our tree.
"""

from __future__ import annotations

import base64
import subprocess
import xml.etree.ElementTree as ET
from typing import Final

from protocols.activesync.wbxml import (
    Element,
    decode,
    namespace_of,
    tag_at,
    tag_by_libwbxml_name,
    tag_named,
)

WBXML2XML: Final = ("wbxml2xml", "-l", "ACTIVESYNC", "-m", "0", "-k", "-o", "-", "-")
XML2WBXML: Final = ("xml2wbxml", "-a", "-n", "-v", "1.3", "-o", "-", "-")
DOCTYPE: Final = (
    '<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" "http://www.microsoft.com/">'
)
TOOL_TIMEOUT: Final = 20.0  # seconds; the tools take milliseconds

# Tags libwbxml 0.11.8 flags WBXML_TAG_OPTION_BINARY (src/wbxml_tables.c): it prints their
# OPAQUE content as base64 and `xml2wbxml` turns their base64 text into OPAQUE. Other tags'
# OPAQUE content it prints raw.
_BINARY_TOKENS: Final = (
    (10, 0x1C),  # ResolveRecipients:Data (picture)
    (15, 0x20),  # Search:ConversationId
    (16, 0x12),  # GAL:Data (picture)
    (17, 0x1F),  # AirSyncBase:Content
    (20, 0x18),  # ItemOperations:ConversationId
    (21, 0x10),  # ComposeMail:Mime
    (22, 0x09),  # Email2:ConversationId
    (22, 0x0A),  # Email2:ConversationIndex
)


def _qname_at(page: int, token: int) -> tuple[str, str]:
    definition = tag_at(page, token)
    namespace = namespace_of(page)
    assert definition is not None and namespace is not None
    return namespace, definition.name


LIBWBXML_BINARY_TAGS: Final[frozenset[tuple[str, str]]] = frozenset(
    _qname_at(page, token) for page, token in _BINARY_TOKENS
)


# libwbxml names one namespace differently (its XML namespace for code page 16).
LIBWBXML_NAMESPACES: Final[dict[str, str]] = {"GAL": "Gal"}
_FROM_LIBWBXML_NAMESPACE: Final = {theirs: ours for ours, theirs in LIBWBXML_NAMESPACES.items()}


class LibwbxmlError(AssertionError):
    """libwbxml failed, printed `<unknown>`, or disagrees with our decoder."""


def has_libwbxml_name(ns: str, tag: str) -> bool:
    definition = tag_named(ns, tag)
    return definition is not None and definition.libwbxml_name is not None


def libwbxml_name(ns: str, tag: str) -> str:
    definition = tag_named(ns, tag)
    if definition is None or definition.libwbxml_name is None:
        raise LibwbxmlError(f"libwbxml 0.11.8 has no name for {ns}:{tag}")
    return definition.libwbxml_name


def wbxml_to_xml(data: bytes, *, allow_unknown: bool = False) -> str:
    """`wbxml2xml -l ACTIVESYNC` on `data` (compact, whitespace kept): the XML text. Raises
    LibwbxmlError when the tool fails or, unless allowed, prints an `<unknown>` tag."""
    result = subprocess.run(WBXML2XML, input=data, capture_output=True, timeout=TOOL_TIMEOUT)
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        raise LibwbxmlError(
            f"wbxml2xml exit {result.returncode}: {result.stderr.decode(errors='replace')}"
        )
    if not output.startswith("<?xml"):
        raise LibwbxmlError(f"wbxml2xml printed something else: {output[:200]!r}")
    if not allow_unknown and "<unknown" in output:
        raise LibwbxmlError(f"wbxml2xml does not know some tags: {output}")
    return output


def xml_to_wbxml(xml: str, *, keep_whitespace: bool = False) -> bytes:
    """`xml2wbxml -a -n -v 1.3` on `xml` (the DOCTYPE libwbxml needs is added if missing).
    By default the tool drops whitespace-only text and trims text at both ends, so that
    indented XML can be written by hand; `keep_whitespace` (`-k`) keeps text exactly, for
    XML without whitespace between elements."""
    if "<!DOCTYPE" not in xml:
        if xml.startswith("<?xml"):
            declaration, _, rest = xml.partition("?>")
            xml = f"{declaration}?>{DOCTYPE}{rest}"
        else:
            xml = f'<?xml version="1.0"?>{DOCTYPE}{xml}'
    command = (*XML2WBXML[:1], "-k", *XML2WBXML[1:]) if keep_whitespace else XML2WBXML
    result = subprocess.run(
        command, input=xml.encode("utf-8"), capture_output=True, timeout=TOOL_TIMEOUT
    )
    if result.returncode != 0:
        raise LibwbxmlError(
            f"xml2wbxml exit {result.returncode}: {result.stderr.decode(errors='replace')}"
        )
    if not result.stdout.startswith(b"\x03\x01\x6a\x00"):
        raise LibwbxmlError(f"xml2wbxml wrote something else: {result.stdout[:40]!r}")
    return result.stdout


def to_libwbxml_xml(element: Element) -> str:
    """Our tree as the XML `xml2wbxml` reads: libwbxml's tag names, `Ns:` namespaces, and
    opaque values as base64 (which only libwbxml's binary tags turn back into OPAQUE)."""
    out: list[str] = [f'<?xml version="1.0"?>{DOCTYPE}']
    _write(element, None, out)
    return "".join(out)


def _write(element: Element, parent_ns: str | None, out: list[str]) -> None:
    name = libwbxml_name(element.ns, element.tag)
    namespace = LIBWBXML_NAMESPACES.get(element.ns, element.ns)
    head = name if element.ns == parent_ns else f'{name} xmlns="{namespace}:"'
    value = element.value
    if element.children:
        out.append(f"<{head}>")
        for child in element.children:
            _write(child, element.ns, out)
        out.append(f"</{name}>")
    elif value is None or value in ("", b""):
        out.append(f"<{head}/>")
    elif isinstance(value, bytes) or (element.ns, element.tag) in LIBWBXML_BINARY_TAGS:
        out.append(f"<{head}>{base64.b64encode(element.data).decode('ascii')}</{name}>")
    else:
        text = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out.append(f"<{head}>{text.replace(chr(13), '&#13;')}</{name}>")


def from_libwbxml_xml(xml: str) -> Element:
    """Parse `wbxml2xml` output into our tree (libwbxml names mapped back; base64 content of
    libwbxml's binary tags becomes bytes). `<unknown>` tags raise LibwbxmlError."""
    return _from_node(_parse(xml))


def _parse(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LibwbxmlError(f"wbxml2xml output is not well-formed XML ({exc}): {xml}") from None


def _split(node: ET.Element) -> tuple[str, str]:
    if not node.tag.startswith("{"):
        raise LibwbxmlError(f"<{node.tag}> without a namespace")
    ns, _, name = node.tag[1:].partition("}")
    ns = ns.removesuffix(":")
    return _FROM_LIBWBXML_NAMESPACE.get(ns, ns), name


def _from_node(node: ET.Element) -> Element:
    ns, name = _split(node)
    definition = tag_by_libwbxml_name(ns, name)
    if definition is None:
        raise LibwbxmlError(f"libwbxml printed <{name}> in {ns}, which we cannot map")
    if len(node):
        return Element(ns, definition.name, tuple(_from_node(child) for child in node))
    text = node.text
    if not text:
        return Element(ns, definition.name)
    if (ns, definition.name) in LIBWBXML_BINARY_TAGS:
        return Element(ns, definition.name, (), base64.b64decode(text))
    return Element(ns, definition.name, (), text)


def normalized(element: Element) -> Element:
    """What survives a trip through libwbxml's XML: "" reads back as an empty element, XML
    parsing turns CR and CRLF into LF, and libwbxml's binary tags hold bytes."""
    value = element.value
    if value in ("", b""):
        return Element(element.ns, element.tag)
    if isinstance(value, str) and (element.ns, element.tag) in LIBWBXML_BINARY_TAGS:
        value = element.data
    elif isinstance(value, str) and "\r" in value:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return Element(element.ns, element.tag, tuple(normalized(c) for c in element.children), value)


def check_with_libwbxml(data: bytes) -> Element:
    """Decode `data` with our decoder and with `wbxml2xml`; fail unless both agree and
    libwbxml knows every tag (bar its documented 0.11.8 gaps). Returns our tree."""
    ours = decode(data)
    theirs = _parse(wbxml_to_xml(data, allow_unknown=True))
    _compare(normalized(ours), theirs, ours.qname, under_unknown=False)
    return ours


def _compare(ours: Element, theirs: ET.Element, path: str, *, under_unknown: bool) -> None:
    ns, name = _split(theirs)
    if not has_libwbxml_name(ours.ns, ours.tag):
        # A documented gap: libwbxml prints <unknown>, keeping content and children.
        if name != "unknown":
            raise LibwbxmlError(f"{path}: libwbxml printed <{name}> for a tag it lacks")
        under_unknown = True
    else:
        expected = libwbxml_name(ours.ns, ours.tag)
        if name == "unknown":
            raise LibwbxmlError(f"{path}: libwbxml does not know {ours.qname} ({expected})")
        # Below an <unknown> libwbxml declares no namespaces, so only names can be compared.
        if name != expected or (not under_unknown and ns != ours.ns):
            raise LibwbxmlError(f"{path}: libwbxml read {ns}:{name}, we read {ours.qname}")
    if len(theirs) != len(ours.children):
        raise LibwbxmlError(
            f"{path}: libwbxml sees {len(theirs)} children, we see {len(ours.children)}"
        )
    for index, (mine, other) in enumerate(zip(ours.children, theirs, strict=True)):
        _compare(mine, other, f"{path}/{mine.qname}[{index}]", under_unknown=under_unknown)
    if ours.children:
        return
    text = theirs.text or ""
    value = ours.value
    if (ours.ns, ours.tag) in LIBWBXML_BINARY_TAGS:  # base64 of a string or of opaque data
        same = base64.b64decode(text) == ours.data
    elif isinstance(value, bytes):
        same = text == value.decode("utf-8", "replace")
    else:
        same = text == (value or "")
    if not same:
        raise LibwbxmlError(f"{path}: libwbxml read {text!r}, we read {value!r}")
