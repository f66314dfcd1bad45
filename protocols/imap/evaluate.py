"""Running a search key tree over neutral message records (RFC 3501 6.4.4, RFC 9051 6.4.4).

The session maps its store's index entries onto :class:`MessageRecord` (a Protocol; the
:class:`SimpleMessage` dataclass is a ready-made implementation). The tree is compiled once
into plain closures (dispatch through a dict keyed by node type), so a search over a large
mailbox pays no per-message tree walk. Inside an AND, cheap tests (flags, numbers, dates)
run before header tests, and those before body tests, which may have to open files.

String matching is a case-insensitive substring test using Unicode case folding (close to
RFC 5051 i;unicode-casemap, which RFC 9051 6.4.4 names). Values are compared decoded: the
record returns header values with RFC 2047 encoded-words decoded and bodies with their
transfer encoding and charset undone.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from .model import Envelope
from .search import (
    AllKey,
    AndKey,
    BodyKey,
    DateField,
    DateKey,
    DateOp,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NewKey,
    NotKey,
    OldKey,
    OrKey,
    RecentKey,
    SaveDateSupportedKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)

__all__ = [
    "Matcher",
    "MessageRecord",
    "SearchContext",
    "SimpleMessage",
    "compile_search",
    "run_search",
]


class MessageRecord(Protocol):
    """What search, SORT and THREAD need to know about one message.

    Cheap attributes come from the index; ``header_values``, ``header_text`` and
    ``body_text`` may read the message file and should be lazy (the evaluator calls them
    only when a key needs them).
    """

    @property
    def seq(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> frozenset[str]: ...  # "\\Seen" style system flags and keywords
    @property
    def recent(self) -> bool: ...  # IMAP4rev1 \Recent
    @property
    def size(self) -> int: ...  # RFC822.SIZE
    @property
    def internal_date(self) -> dt.datetime: ...
    @property
    def save_date(self) -> dt.datetime | None: ...  # RFC 8514
    @property
    def modseq(self) -> int: ...
    @property
    def sent_date(self) -> dt.datetime | None: ...  # the parsed Date: header
    @property
    def subject(self) -> str: ...  # decoded Subject ("" when absent)
    @property
    def envelope(self) -> Envelope: ...

    def header_values(self, name: str) -> Sequence[str]:
        """Decoded values of every field called ``name`` (given in lower case)."""
        ...

    def header_text(self) -> str:
        """The whole header, decoded, for TEXT."""
        ...

    def body_text(self) -> str:
        """The body's text, decoded, for BODY and TEXT."""
        ...


@dataclass(frozen=True, slots=True)
class SimpleMessage:
    """A :class:`MessageRecord` built from data (tests, small adapters).

    ``headers`` maps lower-case names to decoded values; ``body`` is the text or a
    callable producing it on first use.
    """

    seq: int
    uid: int
    flags: frozenset[str] = frozenset()
    recent: bool = False
    size: int = 0
    internal_date: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    save_date: dt.datetime | None = None
    modseq: int = 1
    sent_date: dt.datetime | None = None
    subject: str = ""
    envelope: Envelope = field(default_factory=Envelope)
    headers: Mapping[str, Sequence[str]] = field(default_factory=dict)
    body: str | Callable[[], str] = ""

    def header_values(self, name: str) -> Sequence[str]:
        return self.headers.get(name, ())

    def header_text(self) -> str:
        return "\r\n".join(f"{k}: {v}" for k, vs in self.headers.items() for v in vs)

    def body_text(self) -> str:
        return self.body() if callable(self.body) else self.body


@dataclass(frozen=True, slots=True)
class SearchContext:
    """Mailbox facts a search needs.

    ``max_seq``/``max_uid`` give ``*`` its value (RFC 3501 9); ``saved_uids`` is the
    SEARCHRES result ``$`` refers to (RFC 5182, empty when nothing was saved);
    ``save_dates`` answers SAVEDATESUPPORTED (RFC 8514).
    """

    max_seq: int
    max_uid: int
    saved_uids: frozenset[int] = frozenset()
    save_dates: bool = True


Matcher = Callable[[MessageRecord], bool]
_Compiler = Callable[[SearchKey, SearchContext], tuple[Matcher, int]]

# Relative costs, for ordering the members of an AND.
_CHEAP, _HEADER, _BODY = 0, 10, 100


def _date_of(value: dt.datetime) -> dt.date:
    # RFC 3501 6.4.4: "disregarding time and timezone": the date in the value's own zone.
    return value.date()


def _c_all(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    return (lambda m: True), _CHEAP


def _c_flag(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, FlagKey)
    flag, present = key.flag, key.present
    if flag.startswith("\\"):

        def system(m: MessageRecord) -> bool:
            return (flag in m.flags) == present

        return system, _CHEAP
    folded = flag.casefold()  # keywords compare case-insensitively

    def keyword(m: MessageRecord) -> bool:
        return any(f.casefold() == folded for f in m.flags) == present

    return keyword, _CHEAP


def _c_recent(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    return (lambda m: m.recent), _CHEAP


def _c_new(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    return (lambda m: m.recent and "\\Seen" not in m.flags), _CHEAP  # RFC 3501 6.4.4 NEW


def _c_old(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    return (lambda m: not m.recent), _CHEAP


def _c_header(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, HeaderKey)
    name, needle = key.field, key.value.casefold()
    if not needle:
        # RFC 3501 6.4.4 HEADER: an empty string matches every message with the field.
        return (lambda m: bool(m.header_values(name))), _HEADER

    def match(m: MessageRecord) -> bool:
        return any(needle in v.casefold() for v in m.header_values(name))

    return match, _HEADER


def _c_body(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, BodyKey)
    needle = key.value.casefold()
    if not needle:
        return (lambda m: True), _CHEAP
    return (lambda m: needle in m.body_text().casefold()), _BODY


def _c_text(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, TextKey)
    needle = key.value.casefold()
    if not needle:
        return (lambda m: True), _CHEAP

    def match(m: MessageRecord) -> bool:
        return needle in m.header_text().casefold() or needle in m.body_text().casefold()

    return match, _BODY


def _compare(op: DateOp, day: dt.date, target: dt.date) -> bool:
    if op is DateOp.BEFORE:
        return day < target
    if op is DateOp.ON:
        return day == target
    return day >= target  # SINCE: "within or later than"


def _c_date(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, DateKey)
    op, target = key.op, key.date
    if key.field is DateField.INTERNAL:
        return (lambda m: _compare(op, _date_of(m.internal_date), target)), _CHEAP
    if key.field is DateField.SENT:

        def sent(m: MessageRecord) -> bool:
            value = m.sent_date
            return value is not None and _compare(op, _date_of(value), target)

        return sent, _CHEAP

    def saved(m: MessageRecord) -> bool:
        value = m.save_date
        return value is not None and _compare(op, _date_of(value), target)

    return saved, _CHEAP


def _c_size(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, SizeKey)
    n = key.size
    if key.larger:
        return (lambda m: m.size > n), _CHEAP
    return (lambda m: m.size < n), _CHEAP


def _c_sequence(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, SequenceKey)
    if key.sequence.saved:  # RFC 5182: "$" is the saved result, held as UIDs
        saved = ctx.saved_uids
        return (lambda m: m.uid in saved), _CHEAP
    largest = ctx.max_uid if key.uid else ctx.max_seq
    spans = key.sequence.intervals(largest)
    starts = [lo for lo, _ in spans]
    use_uid = key.uid

    def match(m: MessageRecord) -> bool:
        n = m.uid if use_uid else m.seq
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= spans[i][1]

    return match, _CHEAP


def _c_modseq(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, ModSeqKey)
    floor = key.modseq
    return (lambda m: m.modseq >= floor), _CHEAP  # RFC 7162 3.1.5: ">=" the given value


def _c_savedate_supported(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    supported = ctx.save_dates
    return (lambda m: supported), _CHEAP


def _c_not(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, NotKey)
    inner, cost = _compile(key.key, ctx)
    return (lambda m: not inner(m)), cost


def _c_or(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, OrKey)
    (left, lc), (right, rc) = _compile(key.left, ctx), _compile(key.right, ctx)
    if rc < lc:
        left, right = right, left
    return (lambda m: left(m) or right(m)), lc + rc


def _c_and(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    assert isinstance(key, AndKey)
    compiled = sorted((_compile(k, ctx) for k in key.keys), key=lambda mc: mc[1])
    matchers = tuple(m for m, _ in compiled)
    cost = sum(c for _, c in compiled)
    if len(matchers) == 1:
        return matchers[0], cost
    return (lambda m: all(f(m) for f in matchers)), cost


_COMPILERS: dict[type, _Compiler] = {
    AllKey: _c_all,
    FlagKey: _c_flag,
    RecentKey: _c_recent,
    NewKey: _c_new,
    OldKey: _c_old,
    HeaderKey: _c_header,
    BodyKey: _c_body,
    TextKey: _c_text,
    DateKey: _c_date,
    SizeKey: _c_size,
    SequenceKey: _c_sequence,
    ModSeqKey: _c_modseq,
    SaveDateSupportedKey: _c_savedate_supported,
    NotKey: _c_not,
    OrKey: _c_or,
    AndKey: _c_and,
}


def _compile(key: SearchKey, ctx: SearchContext) -> tuple[Matcher, int]:
    return _COMPILERS[type(key)](key, ctx)


def compile_search(key: SearchKey, ctx: SearchContext) -> Matcher:
    """A predicate for ``key`` (trees from the parser are depth-bounded)."""
    return _compile(key, ctx)[0]


M = TypeVar("M", bound=MessageRecord)


def run_search(key: SearchKey, messages: Iterable[M], ctx: SearchContext) -> list[M]:
    """The messages ``key`` matches, in the order given."""
    match = compile_search(key, ctx)
    return [m for m in messages if match(m)]
