"""SORT and THREAD (RFC 5256): base subject, sort keys, ORDEREDSUBJECT and REFERENCES."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from protocols.imap import responses
from protocols.imap.commands import SortCriterion, SortKey
from protocols.imap.evaluate import SimpleMessage
from protocols.imap.model import Address, Envelope, ThreadNode
from protocols.imap.sortthread import (
    base_subject,
    base_subject_info,
    sort_messages,
    thread_orderedsubject,
    thread_references,
)


@pytest.mark.parametrize(
    ("subject", "base", "reply"),
    [
        ("Hello", "HELLO", False),
        ("Re: Hello", "HELLO", True),
        ("RE:  re: Fwd: Hello", "HELLO", True),
        ("Re[2]: Hello", "HELLO", True),
        ("[list] Re: Hello", "HELLO", True),
        ("Re: [list] Hello", "HELLO", True),
        ("[list] Hello", "HELLO", False),
        ("[list]", "[LIST]", False),
        ("Hello (fwd)", "HELLO", True),
        ("[Fwd: Re: Hello]", "HELLO", True),
        ("  Hello\t  world  ", "HELLO WORLD", False),
        ("Fw: Straße", "STRAßE", True),  # i;ascii-casemap leaves non-ASCII alone
        ("", "", False),
        ("Re:", "", True),
        ("Really: hello", "REALLY: HELLO", False),
    ],
)
def test_base_subject(subject: str, base: str, reply: bool) -> None:
    assert base_subject_info(subject) == (base, reply)


def test_base_subject_is_bounded() -> None:
    # cut to MAX_BASE_SUBJECT first: 666 blobs and a dangling "[x", then the blobs go
    assert base_subject("[x]" * 100_000 + " tail") == "[X"


def msg(seq: int, **kw: Any) -> SimpleMessage:
    return SimpleMessage(seq=seq, uid=seq * 10, **kw)


def day(n: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, n, hour, tzinfo=dt.UTC)


def env(
    sender: str = "", to: str = "", cc: str = "", mid: str | None = None, irt: str | None = None
) -> Envelope:
    def addrs(local: str) -> tuple[Address, ...]:
        return (Address(mailbox=local, host="example.org"),) if local else ()

    return Envelope(
        from_=addrs(sender), to=addrs(to), cc=addrs(cc), message_id=mid, in_reply_to=irt
    )


def test_sort_keys_reverse_and_ties() -> None:
    msgs = [
        msg(
            1,
            size=300,
            internal_date=day(3),
            sent_date=day(1, 5),
            subject="b",
            envelope=env("zed", "amy", "x"),
        ),
        msg(
            2,
            size=100,
            internal_date=day(1),
            sent_date=None,
            subject="Re: a",
            envelope=env("Bob", "cat"),
        ),
        msg(
            3,
            size=200,
            internal_date=day(2),
            sent_date=day(5),
            subject="A",
            envelope=env("adam", "bea", "y"),
        ),
        msg(
            4,
            size=100,
            internal_date=day(4),
            sent_date=day(1, 6),
            subject="c",
            envelope=env("bob", ""),
        ),
    ]

    def order(*crit: SortCriterion) -> list[int]:
        return [m.seq for m in sort_messages(msgs, crit)]

    assert order(SortCriterion(key=SortKey.ARRIVAL)) == [2, 3, 1, 4]
    assert order(SortCriterion(key=SortKey.SIZE)) == [2, 4, 3, 1]  # tie: mailbox order
    assert order(SortCriterion(key=SortKey.SIZE, reverse=True)) == [1, 3, 2, 4]
    assert order(SortCriterion(key=SortKey.DATE)) == [2, 1, 4, 3]  # no Date: internal date
    assert order(SortCriterion(key=SortKey.SUBJECT)) == [2, 3, 1, 4]
    assert order(SortCriterion(key=SortKey.FROM)) == [3, 2, 4, 1]
    assert order(SortCriterion(key=SortKey.TO)) == [4, 1, 3, 2]
    assert order(SortCriterion(key=SortKey.CC)) == [2, 4, 1, 3]
    assert order(
        SortCriterion(key=SortKey.SIZE), SortCriterion(key=SortKey.ARRIVAL, reverse=True)
    ) == [4, 2, 3, 1]


def test_orderedsubject() -> None:
    msgs = [
        msg(1, subject="Hello", sent_date=day(1)),
        msg(2, subject="Other", sent_date=day(2)),
        msg(3, subject="Re: hello", sent_date=day(3)),
        msg(4, subject="re: Hello", sent_date=day(4)),
    ]
    tree = thread_orderedsubject(msgs)
    assert responses.thread(tree) == b"* THREAD (1 (3)(4))(2)\r\n"
    assert (
        responses.thread(thread_orderedsubject(msgs, uid=True)) == b"* THREAD (10 (30)(40))(20)\r\n"
    )


def test_references_basic_chain_and_branches() -> None:
    msgs = [
        msg(1, subject="topic", sent_date=day(1), envelope=env(mid="<a@x>")),
        msg(2, subject="Re: topic", sent_date=day(2), envelope=env(mid="<b@x>", irt="<a@x>")),
        msg(
            3,
            subject="Re: topic",
            sent_date=day(3),
            envelope=env(mid="<c@x>"),
            headers={"references": ["<a@x> <b@x>"]},
        ),
        msg(
            4,
            subject="Re: topic",
            sent_date=day(4),
            envelope=env(mid="<d@x>"),
            headers={"references": ["<a@x>"]},
        ),
        msg(5, subject="unrelated", sent_date=day(5), envelope=env(mid="<e@x>")),
    ]
    assert responses.thread(thread_references(msgs)) == b"* THREAD (1 (2 3)(4))(5)\r\n"


def test_references_missing_parent_makes_dummy_and_subject_grouping() -> None:
    msgs = [
        # two replies to a message we do not have: they share a dummy parent
        msg(
            1,
            subject="Re: lost",
            sent_date=day(1),
            envelope=env(mid="<r1@x>"),
            headers={"references": ["<gone@x>"]},
        ),
        msg(
            2,
            subject="Re: lost",
            sent_date=day(2),
            envelope=env(mid="<r2@x>"),
            headers={"references": ["<gone@x>"]},
        ),
        # same base subject, no references: grouped by subject
        msg(3, subject="Solo", sent_date=day(3), envelope=env(mid="<s1@x>")),
        msg(4, subject="Re: solo", sent_date=day(4), envelope=env(mid="<s2@x>")),
    ]
    assert responses.thread(thread_references(msgs)) == b"* THREAD ((1)(2))(3 4)\r\n"


def test_references_loops_and_duplicates_are_harmless() -> None:
    msgs = [
        msg(
            1,
            subject="a",
            sent_date=day(1),
            envelope=env(mid="<x@x>"),
            headers={"references": ["<y@x>"]},
        ),
        msg(
            2,
            subject="b",
            sent_date=day(2),
            envelope=env(mid="<y@x>"),
            headers={"references": ["<x@x>"]},
        ),
        msg(3, subject="c", sent_date=day(3), envelope=env(mid="<x@x>")),  # duplicate id
        msg(
            4,
            subject="d",
            sent_date=day(4),
            envelope=env(mid="<z@x>"),
            headers={"references": ["<z@x>"]},
        ),
    ]
    tree = thread_references(msgs)
    seen: list[int] = []
    stack: list[ThreadNode] = list(tree)
    while stack:
        node = stack.pop()
        if node.message is not None:
            seen.append(node.message)
        stack.extend(node.children)
    assert sorted(seen) == [1, 2, 3, 4]


def test_references_long_chain_is_iterative() -> None:
    n = 3000
    msgs = [
        msg(
            i,
            subject=f"s{i}",
            sent_date=day(1),
            envelope=env(mid=f"<m{i}@x>"),
            headers={"references": [f"<m{i - 1}@x>"]} if i > 1 else {},
        )
        for i in range(1, n + 1)
    ]
    wire = responses.thread(thread_references(msgs))
    assert wire.startswith(b"* THREAD (1 2 3 ") and wire.endswith(b" 3000)\r\n")
