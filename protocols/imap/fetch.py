"""Building one FETCH response from a message's metadata and, if needed, its bytes.

The session supplies a :class:`FetchSource` per message: index data (flags, UID, dates,
size, MODSEQ, ENVELOPE, BODYSTRUCTURE) as attributes, and the raw message and its
:class:`~protocols.imap.sections.PartSpan` tree behind methods that are called only when
an item needs the body. :func:`needs_body` tells the session in advance, so it can avoid
opening files for ``FETCH 1:* (FLAGS)``.

\\Seen handling stays with the session (it owns the store): it checks
:func:`sets_seen`, stores the flag, and passes the updated flags here; RFC 3501 6.4.5 then
wants FLAGS in the response, which ``add_flags=True`` arranges.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Protocol

from . import responses as r
from .commands import FetchAttribute, FetchItem, Section, SectionText
from .model import BodyStructure, Envelope
from .sections import PartSpan, apply_partial, extract_section

__all__ = ["FetchSource", "build_fetch", "needs_body", "sets_seen"]

_BODY_ITEMS = frozenset(
    {
        FetchItem.BODY_SECTION,
        FetchItem.BINARY,
        FetchItem.BINARY_SIZE,
        FetchItem.RFC822,
        FetchItem.RFC822_HEADER,
        FetchItem.RFC822_TEXT,
    }
)


class FetchSource(Protocol):
    """One message as FETCH sees it."""

    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> Sequence[str]: ...
    @property
    def internal_date(self) -> dt.datetime: ...
    @property
    def size(self) -> int: ...
    @property
    def modseq(self) -> int: ...
    @property
    def save_date(self) -> dt.datetime | None: ...
    @property
    def envelope(self) -> Envelope: ...
    @property
    def body_structure(self) -> BodyStructure: ...

    def raw(self) -> bytes:
        """The whole message (called only for body items)."""
        ...

    def spans(self) -> PartSpan:
        """Where its MIME parts are (called only for body items)."""
        ...


def needs_body(attributes: Iterable[FetchAttribute]) -> bool:
    """Whether any item needs the message file rather than the index."""
    return any(a.item in _BODY_ITEMS for a in attributes)


def sets_seen(attributes: Iterable[FetchAttribute]) -> bool:
    """RFC 3501 6.4.5: BODY[...] (not .PEEK), BINARY[...], RFC822, RFC822.TEXT set \\Seen."""
    return any(a.sets_seen for a in attributes)


def _body_value(attr: FetchAttribute, src: FetchSource) -> bytes:
    raw = src.raw()
    spans = src.spans()
    if attr.item is FetchItem.RFC822:
        data: bytes | None = raw
    elif attr.item is FetchItem.RFC822_HEADER:
        data = extract_section(raw, spans, Section(text=SectionText.HEADER))
    elif attr.item is FetchItem.RFC822_TEXT:
        data = extract_section(raw, spans, Section(text=SectionText.TEXT))
    else:
        binary = attr.item is not FetchItem.BODY_SECTION
        data = extract_section(raw, spans, attr.section or Section(), binary=binary)
        if attr.item is FetchItem.BINARY_SIZE:
            return str(len(data or b"")).encode()  # RFC 3516 4.2
        if data is not None:
            data = apply_partial(data, attr.partial)
        return r.section_data(data, binary=binary)
    return r.section_data(data)


def build_fetch(
    seq: int,
    attributes: Sequence[FetchAttribute],
    src: FetchSource,
    *,
    utf8: bool = False,
    add_uid: bool = False,
    add_modseq: bool = False,
    add_flags: bool = False,
) -> bytes:
    """``* seq FETCH (...)`` for ``attributes``.

    ``add_uid`` for UID FETCH (RFC 3501 6.4.8), ``add_modseq`` with CHANGEDSINCE or once
    CONDSTORE is enabled (RFC 7162 3.1.4.1), ``add_flags`` when this FETCH just set
    \\Seen. Raises :class:`~protocols.imap.sections.UnknownTransferEncoding` for BINARY on
    an undecodable part (answer ``NO [UNKNOWN-CTE]``).
    """
    items: list[tuple[bytes, bytes]] = []
    names: set[bytes] = set()

    def add(name: bytes, value: bytes) -> None:
        if name not in names:
            names.add(name)
            items.append((name, value))

    if add_uid:
        add(b"UID", str(src.uid).encode())
    for attr in attributes:
        item = attr.item
        if item is FetchItem.FLAGS:
            add(b"FLAGS", r.flag_list(src.flags))
        elif item is FetchItem.UID:
            add(b"UID", str(src.uid).encode())
        elif item is FetchItem.INTERNALDATE:
            add(b"INTERNALDATE", r.internal_date(src.internal_date))
        elif item is FetchItem.RFC822_SIZE:
            add(b"RFC822.SIZE", str(src.size).encode())
        elif item is FetchItem.ENVELOPE:
            add(b"ENVELOPE", r.envelope(src.envelope, utf8=utf8))
        elif item is FetchItem.BODYSTRUCTURE:
            add(b"BODYSTRUCTURE", r.body_structure(src.body_structure, utf8=utf8))
        elif item is FetchItem.BODY:
            add(b"BODY", r.body_structure(src.body_structure, extensible=False, utf8=utf8))
        elif item is FetchItem.MODSEQ:
            add(b"MODSEQ", b"(" + str(src.modseq).encode() + b")")  # RFC 7162 3.1.4
        elif item is FetchItem.SAVEDATE:
            value = src.save_date
            add(b"SAVEDATE", b"NIL" if value is None else r.internal_date(value))  # RFC 8514
        else:
            add(attr.response_name(), _body_value(attr, src))
    if add_modseq:
        add(b"MODSEQ", b"(" + str(src.modseq).encode() + b")")
    if add_flags:
        add(b"FLAGS", r.flag_list(src.flags))
    return r.fetch(seq, items)
