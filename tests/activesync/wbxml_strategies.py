"""Hypothesis strategies for WBXML element trees (shared by the fuzz and libwbxml tests)."""

from __future__ import annotations

from collections.abc import Collection

from hypothesis import strategies as st

from protocols.activesync.wbxml import Element
from protocols.activesync.wbxml.codepages import NAMESPACES, TAGS

ALL_TAGS: list[tuple[str, str]] = [(NAMESPACES[t.page], t.name) for t in TAGS]
LIBWBXML_TAGS: list[tuple[str, str]] = [
    (NAMESPACES[t.page], t.name) for t in TAGS if t.libwbxml_name is not None
]

# Any str STR_I can carry: no NUL, no lone surrogates.
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
# Text that also survives XML: XML 1.0 characters without CR (which parsers turn into LF).
XML_TEXT = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="\ufffe\uffff").filter(
        lambda c: c.isprintable() or c == " "
    )
    | st.sampled_from("\t\n"),
    max_size=30,
)


def trees(
    tags: list[tuple[str, str]],
    text: st.SearchStrategy[str],
    *,
    opaque_tags: Collection[tuple[str, str]] | None = None,
    max_leaves: int = 25,
) -> st.SearchStrategy[Element]:
    """Element trees over `tags`. Opaque values go anywhere, or only on `opaque_tags`."""

    def leaf_for(qname: tuple[str, str]) -> st.SearchStrategy[Element]:
        values: st.SearchStrategy[str | bytes | None] = st.none() | text
        if opaque_tags is None or qname in opaque_tags:
            values = values | st.binary(max_size=40)
        return values.map(lambda value: Element(qname[0], qname[1], (), value))

    leaves = st.sampled_from(tags).flatmap(leaf_for)

    def containers(children: st.SearchStrategy[Element]) -> st.SearchStrategy[Element]:
        return st.builds(
            lambda qname, kids: Element(qname[0], qname[1], tuple(kids)),
            st.sampled_from(tags),
            st.lists(children, min_size=1, max_size=5),
        )

    return st.recursive(leaves, containers, max_leaves=max_leaves)
