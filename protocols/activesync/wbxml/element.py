"""The document model: a small immutable element tree, its builder and a readable XML form.

EAS documents (MS-ASWBXML 2.1.1) are plain trees: every element is either a container of
child elements, a string, opaque bytes, or empty. No attributes, no mixed content. So an
`Element` holds a namespace (the code page's MS-ASWBXML name), a tag (the MS-ASWBXML
name), its children, and one value: `str` (STR_I on the wire), `bytes` (OPAQUE) or None.

Handlers build responses with `E("AirSync:Sync", E("AirSync:Collections", ...))` or the
namespace-bound builders in `ns` (`AirSync.Sync(AirSync.Collections(...))`) and read
requests with `find` / `findall` / `text_of`, whose paths default each step to the
namespace of the step before it: `sync.find("Collections/Collection")`,
`item.text_of("AirSyncBase:Body/Type")` (Type is AirSyncBase's).
"""

from __future__ import annotations

import base64
import binascii
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, Protocol, TypeAlias
from xml.sax.saxutils import escape, quoteattr

from .errors import WbxmlEncodeError, WbxmlError
from .tags import page_of, tag_named

# What a builder accepts as content: child elements (also inside lists or generators, with
# None skipped so optional children can be written inline), one str / int value (STR_I),
# or one bytes value (OPAQUE).
Content: TypeAlias = (
    "Element | str | bytes | bytearray | memoryview | int | Iterable[Element | None] | None"
)

_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# XML 1.0 2.2 Char: no C0 controls but TAB, LF, CR; no U+FFFE, U+FFFF.
_NOT_XML_CHAR: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_OPAQUE_ATTRIBUTE: Final = "opaque"  # marks a base64-encoded OPAQUE value in the debug form


@dataclass(frozen=True, slots=True)
class Element:
    """One EAS element. `value` is a str (text), bytes (opaque) or None; an element with
    children has no value. Construction checks that the tag exists on its code page."""

    ns: str
    tag: str
    children: tuple[Element, ...] = ()
    value: str | bytes | None = None

    def __post_init__(self) -> None:
        if type(self.ns) is not str:  # a Namespace member: keep the plain str
            object.__setattr__(self, "ns", str(self.ns))
        if tag_named(self.ns, self.tag) is None:
            raise WbxmlEncodeError(_unknown_tag_message(self.ns, self.tag))
        if self.children and self.value is not None:
            raise WbxmlEncodeError(f"{self.qname}: EAS elements have children or a value, not both")

    # --- identity ---------------------------------------------------------------------

    @property
    def qname(self) -> str:
        return f"{self.ns}:{self.tag}"

    @property
    def page(self) -> int:
        page = page_of(self.ns)
        assert page is not None  # checked at construction
        return page

    @property
    def token(self) -> int:
        definition = tag_named(self.ns, self.tag)
        assert definition is not None  # checked at construction
        return definition.token

    @property
    def is_empty(self) -> bool:
        return not self.children and self.value is None

    # --- values -----------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The value as text: "" when empty or a container. Opaque bytes are read as UTF-8,
        since clients may send OPAQUE where the schema has a string."""
        value = self.value
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise WbxmlError(f"{self.qname}: opaque value is not UTF-8 text") from None
        return value or ""

    @property
    def data(self) -> bytes:
        """The value as bytes: opaque as is, text as UTF-8, b"" when empty or a container."""
        value = self.value
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass")
        return value or b""

    # --- lookup -----------------------------------------------------------------------

    def find(self, path: str) -> Element | None:
        """The first element at `path` ("Collections/Collection", "AirSyncBase:Body/Type")
        below this one. A step without a prefix is in the namespace of the step before it
        (the first, in this element's). A step naming a tag its code page does not have
        raises ValueError: a typo, not a missing element."""
        for found in self._walk(path):
            return found
        return None

    def findall(self, path: str) -> list[Element]:
        """Every element at `path`, in document order."""
        return list(self._walk(path))

    def text_of(self, path: str, default: str | None = None) -> str | None:
        """The text of the first element at `path`, or `default` when there is none."""
        found = self.find(path)
        return default if found is None else found.text

    def bytes_of(self, path: str, default: bytes | None = None) -> bytes | None:
        found = self.find(path)
        return default if found is None else found.data

    def iter(self) -> Iterator[Element]:
        """This element and all below it, depth first in document order."""
        stack = [self]
        while stack:
            element = stack.pop()
            yield element
            stack.extend(reversed(element.children))

    def _walk(self, path: str) -> Iterator[Element]:
        level: Iterable[Element] = (self,)
        for ns, tag in _resolve_path(self.ns, path):
            level = _children_named(level, ns, tag)
        yield from level


def _children_named(level: Iterable[Element], ns: str, tag: str) -> Iterator[Element]:
    for parent in level:
        for child in parent.children:
            if child.tag == tag and child.ns == ns:
                yield child


@lru_cache(maxsize=1024)
def _resolve_path(context_ns: str, path: str) -> tuple[tuple[str, str], ...]:
    """Each step's (namespace, tag): a step without prefix takes the namespace of the step
    before it (for the first, of the element searched). Every step must name a real tag."""
    steps: list[tuple[str, str]] = []
    ns = context_ns
    for step in path.split("/"):
        prefix, sep, tag = step.rpartition(":")
        if not tag or (sep and not prefix):
            raise ValueError(f"bad lookup path {path!r}")
        if sep:
            if page_of(prefix) is None:
                raise ValueError(f"lookup path {path!r}: no namespace {prefix!r}")
            ns = prefix
        if tag_named(ns, tag) is None:
            raise ValueError(f"lookup path {path!r}: {_unknown_tag_message(ns, tag)}")
        steps.append((ns, tag))
    return tuple(steps)


def _unknown_tag_message(ns: str, tag: str) -> str:
    if page_of(ns) is None:
        return f"{ns}:{tag}: no EAS code page is named {ns!r}"
    return f"{ns}:{tag}: code page {page_of(ns)} ({ns}) has no tag {tag!r}"


# --- building ---------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Make any str safe to send: drop NUL (the STR_I terminator) and the other characters
    XML 1.0 (2.2) forbids, and replace lone surrogates (from undecodable bytes) with U+FFFD.
    Clients turn WBXML back into XML, so a stray control character in a subject can make a
    whole Sync response unreadable to them; grommunio-sync filters NUL the same way."""
    if _NOT_XML_CHAR.search(text):
        text = _NOT_XML_CHAR.sub("", text)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = _LONE_SURROGATE.sub("\ufffd", text)
    return text


def E(qname: str, *content: Content) -> Element:
    """Build an element: `E("AirSync:Status", 1)`, `E("Email:Subject", subject)`,
    `E("ComposeMail:Mime", mime_bytes)`, `E("AirSync:Collections", (E(...) for c in cs))`.
    Text is passed through `clean_text`; None items are skipped."""
    ns, sep, tag = qname.partition(":")
    if not sep:
        raise WbxmlEncodeError(f"{qname!r}: want 'Namespace:Tag', e.g. 'AirSync:Sync'")
    return build(ns, tag, content)


def build(ns: str, tag: str, content: Iterable[Content]) -> Element:
    """`E` with the namespace and tag given apart (what the `ns` builders call)."""
    children: list[Element] = []
    value: str | bytes | None = None
    for item in content:
        if item is None:
            continue
        if isinstance(item, Element):
            children.append(item)
        elif isinstance(item, bool):
            raise TypeError(f"{ns}:{tag}: pass booleans as 0/1 or '0'/'1' (MS-ASDTYPE 2.1)")
        elif isinstance(item, str | int | bytes | bytearray | memoryview):
            if value is not None:
                raise WbxmlEncodeError(f"{ns}:{tag}: more than one value")
            if isinstance(item, str):
                value = clean_text(str(item))  # str(): a StrEnum member becomes its value
            elif isinstance(item, int):
                value = str(int(item))  # int(): an IntEnum status code becomes its number
            else:
                value = bytes(item)
        elif isinstance(item, Iterable):
            for child in item:
                if isinstance(child, Element):
                    children.append(child)
                elif child is not None:
                    raise TypeError(f"{ns}:{tag}: a sequence of children holds {child!r}")
        else:
            raise TypeError(f"{ns}:{tag}: cannot hold {item!r}")
    return Element(ns, tag, tuple(children), value)


class Maker(Protocol):
    def __call__(self, *content: Content) -> Element: ...


class Builder:
    """`E` bound to one namespace: `AirSync = Builder("AirSync")`, then `AirSync.Sync(...)`
    or `AirSync("Sync", ...)`. Unknown tags fail at attribute access."""

    __slots__ = ("namespace",)

    def __init__(self, namespace: str) -> None:
        if page_of(namespace) is None:
            raise ValueError(f"no EAS code page is named {namespace!r}")
        self.namespace = str(namespace)

    def __call__(self, tag: str, *content: Content) -> Element:
        return build(self.namespace, tag, content)

    def __getattr__(self, tag: str) -> Maker:
        if tag.startswith("_") or tag_named(self.namespace, tag) is None:
            raise AttributeError(_unknown_tag_message(self.namespace, tag))
        namespace = self.namespace

        def make(*content: Content) -> Element:
            return build(namespace, tag, content)

        return make

    def __repr__(self) -> str:
        return f"Builder({self.namespace!r})"


# --- the readable form -------------------------------------------------------------------


def to_xml(element: Element, *, indent: str | None = "  ") -> str:
    """A readable XML rendering for logs, debugging and tests (not what EAS sends). The
    default namespace is declared where it changes, as `wbxml2xml` does; opaque values are
    base64 with an `opaque="base64"` marker. `indent=None` gives one line."""
    out: list[str] = []
    _write_xml(element, None, 0, indent, out)
    return "".join(out) if indent is None else "\n".join(out) + "\n"


def _write_xml(
    element: Element, parent_ns: str | None, depth: int, indent: str | None, out: list[str]
) -> None:
    pad = "" if indent is None else indent * depth
    head = element.tag
    if element.ns != parent_ns:
        head += f" xmlns={quoteattr(element.ns)}"
    value = element.value
    if element.children:
        out.append(f"{pad}<{head}>")
        for child in element.children:
            _write_xml(child, element.ns, depth + 1, indent, out)
        out.append(f"{pad}</{element.tag}>")
    elif value is None:
        out.append(f"{pad}<{head}/>")
    elif isinstance(value, bytes):
        encoded = base64.b64encode(value).decode("ascii")
        out.append(f'{pad}<{head} {_OPAQUE_ATTRIBUTE}="base64">{encoded}</{element.tag}>')
    else:
        text = escape(value, {"\r": "&#13;"})
        out.append(f"{pad}<{head}>{text}</{element.tag}>")


def from_xml(text: str) -> Element:
    """Parse the readable form back (tests and fixtures). Accepts `to_xml` output, the MS
    spec's prefixed style (`xmlns:airsyncbase="AirSyncBase"`) and namespaces written with a
    trailing colon as `wbxml2xml` prints them; whitespace between elements is ignored.
    An empty element comes back as value None, so a "" value does not survive the trip."""
    if "<!ENTITY" in text:
        raise WbxmlError("entity declarations are not accepted")
    try:
        # The input is a developer's or the test suite's own text, entity declarations are
        # refused above, and ElementTree resolves no external resources.
        root = ET.fromstring(text)  # noqa: S314
    except ET.ParseError as exc:
        raise WbxmlError(f"not well-formed XML: {exc}") from None
    return _from_etree(root)


def _from_etree(node: ET.Element) -> Element:
    ns, tag = _split_clark(node.tag)
    opaque = False
    for name, value in node.attrib.items():
        if name == _OPAQUE_ATTRIBUTE and value == "base64":
            opaque = True
        else:
            raise WbxmlError(f"{ns}:{tag}: EAS elements carry no attribute {name}={value!r}")
    if len(node):
        stray = (node.text or "") + "".join(child.tail or "" for child in node)
        if stray.strip():
            raise WbxmlError(f"{ns}:{tag}: text beside child elements: {stray.strip()!r}")
        if opaque:
            raise WbxmlError(f"{ns}:{tag}: an opaque element cannot have children")
        return Element(ns, tag, tuple(_from_etree(child) for child in node))
    if opaque:
        try:
            return Element(ns, tag, (), base64.b64decode((node.text or "").strip(), validate=True))
        except binascii.Error:
            raise WbxmlError(f"{ns}:{tag}: opaque value is not base64") from None
    return Element(ns, tag, (), node.text)  # None for <Tag/>


def _split_clark(name: str) -> tuple[str, str]:
    if not name.startswith("{"):
        raise WbxmlError(f'<{name}> has no namespace (want e.g. xmlns="AirSync")')
    ns, _, tag = name[1:].partition("}")
    ns = ns.removesuffix(":")
    if tag_named(ns, tag) is None:
        raise WbxmlError(_unknown_tag_message(ns, tag))
    return ns, tag
