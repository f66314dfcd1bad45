"""LIST and LSUB over a mailbox's folder list (RFC 3501 6.3.8, RFC 5258, RFC 6154, RFC 5819).

Pure functions: the session fetches the folder list from the store and renders what
:func:`list_entries` returns. Wildcards (RFC 3501 6.3.8): ``*`` matches anything, ``%``
anything but the hierarchy separator. Matching is a set-of-positions walk, linear in
pattern times name length, so a pattern like ``*a*a*a*a*b`` cannot backtrack
exponentially. INBOX matches case-insensitively (RFC 3501 5.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from store import FolderInfo, FolderKind

from .commands import ListReturn, ListSelect
from .storemap import IMAP_INBOX, SPECIAL_USE_ATTRIBUTES, imap_name

__all__ = ["ListEntry", "list_entries", "match_pattern", "visible_folders"]

SEPARATOR = "/"


def match_pattern(pattern: str, name: str) -> bool:
    """Whether ``name`` matches ``pattern`` (``*`` and ``%`` wildcards)."""
    states = {0}
    for ch in pattern:
        if not states:
            return False
        if ch == "*":
            start = min(states)
            states = set(range(start, len(name) + 1))
        elif ch == "%":
            nxt: set[int] = set()
            for pos in sorted(states):
                nxt.add(pos)
                p = pos
                while p < len(name) and name[p] != SEPARATOR:
                    p += 1
                    nxt.add(p)
            states = nxt
        else:
            states = {p + 1 for p in states if p < len(name) and name[p] == ch}
    return len(name) in states


def _canonical_pattern(pattern: str) -> str:
    """RFC 3501 5.1: ``inbox`` in any case names INBOX."""
    head = pattern[:5]
    if head.upper() == IMAP_INBOX and (len(pattern) == 5 or pattern[5] in (SEPARATOR, "*", "%")):
        return IMAP_INBOX + pattern[5:]
    return pattern


@dataclass(frozen=True, slots=True)
class ListEntry:
    name: str  # IMAP name
    attributes: tuple[str, ...]
    childinfo: bool = False  # RFC 5258 3.5 CHILDINFO ("SUBSCRIBED")


def visible_folders(folders: Iterable[FolderInfo]) -> list[FolderInfo]:
    """Mail folders only: calendar, contacts, tasks and notes hold PIM items that IMAP
    clients would sync as odd messages (ActiveSync serves them)."""
    return [f for f in folders if f.kind is FolderKind.MAIL]


def list_entries(
    folders: Sequence[FolderInfo],
    reference: str,
    patterns: Sequence[str],
    *,
    selection: frozenset[ListSelect] = frozenset(),
    returns: frozenset[ListReturn] = frozenset(),
    lsub: bool = False,
) -> list[ListEntry]:
    """The LIST (or LSUB) responses, in folder order.

    RFC 5258 3.4: without selection options every folder matching a pattern is listed;
    SUBSCRIBED lists subscribed ones (and with RECURSIVEMATCH, parents of subscribed
    children with CHILDINFO); SPECIAL-USE (RFC 6154 5.2) lists folders with a role.
    """
    names = {imap_name(f.name): f for f in folders}
    wanted = [_canonical_pattern(reference + p) for p in patterns]
    subscribed_only = lsub or ListSelect.SUBSCRIBED in selection
    special_only = ListSelect.SPECIAL_USE in selection
    recursive = ListSelect.RECURSIVEMATCH in selection
    show_subscribed = ListSelect.SUBSCRIBED in selection or ListReturn.SUBSCRIBED in returns
    show_special = (
        ListReturn.SPECIAL_USE in returns or special_only or not (selection or returns or lsub)
    )
    parents = {name.rsplit(SEPARATOR, 1)[0] for name in names if SEPARATOR in name}
    subscribed_parents: set[str] = set()
    if recursive and subscribed_only:
        for name, info in names.items():
            if info.subscribed:
                parts = name.split(SEPARATOR)
                for i in range(1, len(parts)):
                    subscribed_parents.add(SEPARATOR.join(parts[:i]))
    out: list[ListEntry] = []
    for name, info in names.items():
        if not any(match_pattern(p, name) for p in wanted):
            continue
        childinfo = False
        if subscribed_only and not info.subscribed:
            if name in subscribed_parents:
                childinfo = True  # RFC 5258 3.5: listed because of a subscribed child
            else:
                continue
        if special_only and info.role not in SPECIAL_USE_ATTRIBUTES:
            continue
        attrs: list[str] = []
        if not lsub:
            # RFC 3348 / RFC 5258 4: CHILDREN is cheap here, so always sent.
            attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if show_subscribed and info.subscribed and not lsub:
            attrs.append("\\Subscribed")
        special = SPECIAL_USE_ATTRIBUTES.get(info.role) if info.role is not None else None
        if show_special and special is not None and not lsub:
            attrs.append(special)
        out.append(ListEntry(name, tuple(attrs), childinfo))
    return out
