"""SORT and THREAD (RFC 5256) over neutral message records.

Strings compare with i;ascii-casemap (RFC 5256 3: ASCII letters fold, nothing else);
ties fall back to the order of the messages in the mailbox. Every walk over a thread tree
is iterative: hostile References headers can make chains as long as the mailbox.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, Final, TypeVar

from .commands import SortCriterion, SortKey
from .evaluate import MessageRecord
from .limits import MAX_THREAD_REFERENCES
from .model import Address, ThreadNode

__all__ = [
    "MAX_BASE_SUBJECT",
    "base_subject",
    "base_subject_info",
    "sort_messages",
    "thread_orderedsubject",
    "thread_references",
]

# Subjects longer than this are cut before base-subject extraction, bounding the repeated
# prefix stripping of step (5) on hostile "[x][x][x]..." subjects.
MAX_BASE_SUBJECT: Final = 2000

M = TypeVar("M", bound=MessageRecord)

_ASCII_UPPER: Final = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

# RFC 5256 5 (ABNF):
#   subj-trailer = "(fwd)" / WSP
#   subj-blob    = "[" *BLOBCHAR "]" *WSP
#   subj-refwd   = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
#   subj-leader  = (*subj-blob subj-refwd) / WSP
_TRAILER: Final = re.compile(r"(?:\(fwd\)|[ \t])+\Z", re.IGNORECASE)
_BLOB: Final = r"\[[^\[\]]*\][ \t]*"
_LEADER: Final = re.compile(
    rf"(?:(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t])+", re.IGNORECASE
)
_LEADER_REFWD: Final = re.compile(rf"(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:", re.IGNORECASE)
_BLOB_PREFIX: Final = re.compile(_BLOB)
_FWD: Final = re.compile(r"\[fwd:(.*)\]\Z", re.IGNORECASE | re.DOTALL)
_SPACES: Final = re.compile(r"[ \t]*\r?\n[ \t]+|[\t ]+")
_MSGID: Final = re.compile(r"<[^<>\s]+>")


def base_subject_info(subject: str) -> tuple[str, bool]:
    """The RFC 5256 2.1 base subject and whether a reply/forward marker was removed."""
    # (1) tabs and folding become single spaces (the caller decoded encoded-words)
    text = _SPACES.sub(" ", subject[:MAX_BASE_SUBJECT])
    is_reply = False
    while True:
        # (2) trailing "(fwd)" and white space
        m = _TRAILER.search(text)
        if m is not None:
            if "(fwd)" in m.group(0).lower():
                is_reply = True
            text = text[: m.start()]
        # (3)-(5) leaders and blobs, until nothing changes
        while True:
            m = _LEADER.match(text)
            if m is not None and m.end() > 0:
                if _LEADER_REFWD.search(m.group(0)):
                    is_reply = True
                text = text[m.end() :]
            b = _BLOB_PREFIX.match(text)
            if b is not None and text[b.end() :].strip(" \t"):
                text = text[b.end() :]  # (4) only if something remains
                continue
            if m is None:
                break
            if not _LEADER.match(text):
                break
        # (6) "[fwd: ... ]" wrappers
        f = _FWD.match(text)
        if f is None:
            break
        text = f.group(1)
        is_reply = True
    return text.translate(_ASCII_UPPER), is_reply


def base_subject(subject: str) -> str:
    return base_subject_info(subject)[0]


def _first_mailbox(addrs: Sequence[Address]) -> str:
    """RFC 5256 3: the addr-mailbox of the first address (group markers skipped)."""
    for addr in addrs:
        if addr.host is not None and addr.mailbox is not None:
            return addr.mailbox.translate(_ASCII_UPPER)
    return ""


def _sent(m: MessageRecord) -> dt.datetime:
    """RFC 5256 2.2: the Date: header in UTC, or the internal date when unusable."""
    value = m.sent_date or m.internal_date
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _arrival(m: MessageRecord) -> dt.datetime:
    value = m.internal_date
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _sort_value(m: MessageRecord, key: SortKey) -> Any:
    if key is SortKey.ARRIVAL:
        return _arrival(m)
    if key is SortKey.DATE:
        return _sent(m)
    if key is SortKey.SIZE:
        return m.size
    if key is SortKey.SUBJECT:
        return base_subject(m.subject)
    if key is SortKey.FROM:
        return _first_mailbox(m.envelope.from_)
    if key is SortKey.TO:
        return _first_mailbox(m.envelope.to)
    return _first_mailbox(m.envelope.cc)


def sort_messages(messages: Sequence[M], criteria: Sequence[SortCriterion]) -> list[M]:
    """RFC 5256 3 SORT: stable multi-key sort; exact ties keep mailbox order."""
    ordered = sorted(messages, key=lambda m: m.seq)
    # Stable sorts applied from the least to the most significant criterion.
    for crit in reversed(criteria):
        values = {id(m): _sort_value(m, crit.key) for m in ordered}
        ordered.sort(key=lambda m: values[id(m)], reverse=crit.reverse)
    return ordered


# --- THREAD=ORDEREDSUBJECT -----------------------------------------------------------------


def thread_orderedsubject(
    messages: Sequence[MessageRecord], *, uid: bool = False
) -> list[ThreadNode]:
    """RFC 5256 4 ORDEREDSUBJECT: group by base subject, then by sent date."""

    def number(m: MessageRecord) -> int:
        return m.uid if uid else m.seq

    ordered = sorted(messages, key=lambda m: (base_subject(m.subject), _sent(m), m.seq))
    threads: list[tuple[dt.datetime, int, ThreadNode]] = []
    i = 0
    while i < len(ordered):
        subject = base_subject(ordered[i].subject)
        j = i + 1
        while j < len(ordered) and base_subject(ordered[j].subject) == subject:
            j += 1
        first = ordered[i]
        children = tuple(ThreadNode(number(m)) for m in ordered[i + 1 : j])
        threads.append((_sent(first), first.seq, ThreadNode(number(first), children)))
        i = j
    threads.sort(key=lambda t: (t[0], t[1]))
    return [node for _, _, node in threads]


# --- THREAD=REFERENCES ---------------------------------------------------------------------


class _Container:
    __slots__ = ("children", "message", "parent")

    def __init__(self) -> None:
        self.message: MessageRecord | None = None
        self.parent: _Container | None = None
        self.children: list[_Container] = []

    def is_ancestor_of(self, other: _Container) -> bool:
        node: _Container | None = other
        while node is not None:
            if node is self:
                return True
            node = node.parent
        return False

    def unlink(self) -> None:
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def adopt(self, child: _Container) -> None:
        child.unlink()
        child.parent = self
        self.children.append(child)


def _msgids(values: Sequence[str]) -> list[str]:
    found: list[str] = []
    for v in values:
        found.extend(_MSGID.findall(v))
    return found


def _references(m: MessageRecord) -> list[str]:
    """RFC 5256 4 (1): References, or else the first msg-id of In-Reply-To."""
    refs = _msgids(m.header_values("references"))
    if not refs:
        irt = _msgids([m.envelope.in_reply_to or ""])
        refs = irt[:1]
    return refs[-MAX_THREAD_REFERENCES:]


def thread_references(messages: Sequence[MessageRecord], *, uid: bool = False) -> list[ThreadNode]:
    """RFC 5256 4 THREAD=REFERENCES."""
    table: dict[str, _Container] = {}
    order = sorted(messages, key=lambda m: m.seq)
    for m in order:
        # (1A) the message's own container; missing or duplicate ids get a unique one
        ids = _MSGID.findall(m.envelope.message_id or "")
        mid = ids[0] if ids else ""
        container = table.get(mid) if mid else None
        if container is None or container.message is not None:
            if container is not None or not mid:
                mid = f"\x00unique-{m.seq}"
            container = table.setdefault(mid, _Container())
        container.message = m
        # (1B) link the References chain, never creating loops or re-parenting
        refs = [r for r in _references(m) if r != mid]
        prev: _Container | None = None
        for ref in refs:
            node = table.setdefault(ref, _Container())
            if (
                prev is not None
                and node.parent is None
                and node is not prev
                and not node.is_ancestor_of(prev)
            ):
                prev.adopt(node)
            prev = node
        # (1C) the last reference becomes this message's parent
        container.unlink()
        if prev is not None and prev is not container and not container.is_ancestor_of(prev):
            prev.adopt(container)

    # (2) root set, (3) forget the table
    roots = [c for c in table.values() if c.parent is None]
    del table
    # (4) prune dummies
    roots = _prune(roots)
    # (5) group the root set by base subject
    roots = _group_by_subject(roots)
    # (6) sort siblings by sent date, then the root set
    return _to_nodes(roots, uid)


def _prune(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 4 (4): drop empty dummies; promote dummies' children (not to the root
    level unless there is a single child)."""
    # Post-order over the whole forest, iteratively.
    stack: list[tuple[_Container, bool]] = [(r, False) for r in roots]
    while stack:
        node, done = stack.pop()
        if not done:
            stack.append((node, True))
            stack.extend((c, False) for c in node.children)
            continue
        kids: list[_Container] = []
        for child in node.children:
            if child.message is None and not child.children:
                child.parent = None
                continue  # (4A)
            if child.message is None:  # (4B) promote grandchildren
                for grandchild in child.children:
                    grandchild.parent = node
                    kids.append(grandchild)
                child.children = []
                child.parent = None
                continue
            kids.append(child)
        node.children = kids
    out: list[_Container] = []
    for root in roots:
        if root.message is None and not root.children:
            continue
        if root.message is None and len(root.children) == 1:
            only = root.children[0]
            only.parent = None
            out.append(only)
            continue
        out.append(root)
    return out


def _subject_of(c: _Container) -> tuple[str, bool]:
    m = c.message if c.message is not None else (c.children[0].message if c.children else None)
    if m is None:
        return "", False
    return base_subject_info(m.subject)


def _group_by_subject(roots: list[_Container]) -> list[_Container]:
    """RFC 5256 4 (5): gather threads whose roots share a base subject."""
    table: dict[str, _Container] = {}
    for c in roots:  # (5B)
        subject, is_reply = _subject_of(c)
        if not subject:
            continue
        old = table.get(subject)
        if (
            old is None
            or (old.message is None and c.message is not None)
            or (
                (old.message is not None and c.message is not None)
                and _subject_of(old)[1]
                and not is_reply
            )
        ):
            table[subject] = c
    result = list(roots)
    emptied: set[int] = set()
    for c in roots:  # (5C)
        if c.parent is not None or id(c) in emptied:
            continue  # already merged into another thread
        subject, c_reply = _subject_of(c)
        target = table.get(subject) if subject else None
        if target is None or target is c:
            continue
        t_reply = _subject_of(target)[1]
        if target.message is None and c.message is None:  # (a) both dummies
            for child in list(c.children):
                target.adopt(child)
            emptied.add(id(c))
        elif target.message is None:  # (b) the dummy takes the message
            target.adopt(c)
        elif c.message is None:  # (b) the other way round
            c.adopt(target)
            table[subject] = c
        elif c_reply and not t_reply:  # (c)
            target.adopt(c)
        elif t_reply and not c_reply:  # (d) misordered
            c.adopt(target)
            table[subject] = c
        else:  # (e) siblings under a new dummy
            dummy = _Container()
            dummy.adopt(target)
            dummy.adopt(c)
            result.append(dummy)
            table[subject] = dummy
    # The order of the root set does not matter: step (6) sorts it.
    return [c for c in result if c.parent is None and id(c) not in emptied]


def _date_key(c: _Container) -> tuple[dt.datetime, int]:
    m = c.message if c.message is not None else (c.children[0].message if c.children else None)
    if m is None:
        return dt.datetime.min.replace(tzinfo=dt.UTC), 0
    return _sent(m), m.seq


def _to_nodes(roots: list[_Container], uid: bool) -> list[ThreadNode]:
    """RFC 5256 4 (6): siblings by sent date (a dummy takes its first child's date)."""
    # Sort children bottom-up so a dummy's first child is known before the dummy is placed.
    post: list[_Container] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        post.append(node)
        stack.extend(node.children)
    for node in reversed(post):
        node.children.sort(key=_date_key)
    built: dict[int, ThreadNode] = {}
    for node in reversed(post):
        msg = node.message
        number = None if msg is None else (msg.uid if uid else msg.seq)
        built[id(node)] = ThreadNode(number, tuple(built[id(c)] for c in node.children))
    ordered = sorted(roots, key=_date_key)
    return [built[id(r)] for r in ordered]
