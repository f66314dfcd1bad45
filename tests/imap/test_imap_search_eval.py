"""The search evaluator over neutral records: every key, casefolding, ordering of work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from protocols.imap import commands as c
from protocols.imap.evaluate import SearchContext, SimpleMessage, compile_search, run_search
from protocols.imap.parser import ParseContext, parse_command
from protocols.imap.search import SearchKey, uses_modseq

UTC = dt.UTC
PLUS9 = dt.timezone(dt.timedelta(hours=9))

MESSAGES = [
    SimpleMessage(
        seq=1,
        uid=10,
        flags=frozenset({"\\Seen", "$Label1"}),
        size=100,
        internal_date=dt.datetime(2024, 3, 1, 23, 30, tzinfo=UTC),
        save_date=dt.datetime(2024, 3, 2, tzinfo=UTC),
        modseq=5,
        sent_date=dt.datetime(2024, 3, 1, 8, 0, tzinfo=PLUS9),
        subject="Hello World",
        headers={
            "from": ["Alice <alice@example.org>"],
            "to": ["bob@example.org"],
            "subject": ["Hello World"],
            "x-spam": [""],
        },
        body="The quick brown FOX",
    ),
    SimpleMessage(
        seq=2,
        uid=20,
        flags=frozenset({"\\Answered", "\\Flagged"}),
        recent=True,
        size=5000,
        internal_date=dt.datetime(2024, 3, 5, tzinfo=UTC),
        modseq=9,
        subject="Straße",
        headers={"from": ["Bob <bob@example.org>"], "subject": ["Straße"], "cc": ["carol@x"]},
        body="lazy dog",
    ),
    SimpleMessage(
        seq=3,
        uid=30,
        flags=frozenset({"\\Deleted", "\\Draft", "$label1"}),
        recent=True,
        size=300,
        internal_date=dt.datetime(2024, 2, 28, tzinfo=UTC),
        modseq=12,
        sent_date=dt.datetime(2024, 2, 20, tzinfo=UTC),
        headers={"from": ["carol@example.net"], "bcc": ["dave@example.org"]},
        body=lambda: "STRASSE in the body",
    ),
]
CTX = SearchContext(max_seq=3, max_uid=30, saved_uids=frozenset({20, 30}))


def uids(criteria: str, ctx: SearchContext = CTX) -> list[int]:
    cmd = parse_command(b"t SEARCH " + criteria.encode(), ParseContext())
    assert isinstance(cmd, c.SearchCommand)
    return [m.uid for m in run_search(cmd.key, MESSAGES, ctx)]


def test_flags_and_keywords() -> None:
    assert uids("ALL") == [10, 20, 30]
    assert uids("SEEN") == [10]
    assert uids("UNSEEN") == [20, 30]
    assert uids("ANSWERED") == [20]
    assert uids("UNANSWERED") == [10, 30]
    assert uids("FLAGGED") == [20]
    assert uids("UNFLAGGED") == [10, 30]
    assert uids("DELETED") == [30]
    assert uids("UNDELETED") == [10, 20]
    assert uids("DRAFT") == [30]
    assert uids("UNDRAFT") == [10, 20]
    assert uids("KEYWORD $LABEL1") == [10, 30]  # keywords compare case-insensitively
    assert uids("UNKEYWORD $Label1") == [20]
    assert uids("RECENT") == [20, 30]
    assert uids("NEW") == [20, 30]
    assert uids("OLD") == [10]


def test_headers_body_text() -> None:
    assert uids("FROM alice") == [10]
    assert uids("FROM EXAMPLE.ORG") == [10, 20]
    assert uids("TO bob") == [10]
    assert uids("CC carol") == [20]
    assert uids("BCC dave") == [30]
    assert uids("SUBJECT world") == [10]
    assert uids("SUBJECT strasse") == [20]  # casefold: ß == ss
    assert uids('HEADER X-Spam ""') == [10]  # empty value: field present
    assert uids("HEADER x-spam yes") == []
    assert uids("BODY fox") == [10]
    assert uids('BODY "straße"') == [30]  # UTF-8 in a quoted string (RFC 9051)
    assert uids('BODY ""') == [10, 20, 30]
    assert uids("TEXT alice") == [10]
    assert uids("TEXT dog") == [20]


def test_dates() -> None:
    assert uids("ON 1-Mar-2024") == [10]  # the date in the value's own zone
    assert uids("BEFORE 1-Mar-2024") == [30]
    assert uids("SINCE 1-Mar-2024") == [10, 20]
    assert uids("SENTON 1-Mar-2024") == [10]  # 08:00+09:00 is still 1 March
    assert uids("SENTBEFORE 1-Mar-2024") == [30]
    assert uids("SENTSINCE 21-Feb-2024") == [10]  # no Date: header never matches
    assert uids("SAVEDON 2-Mar-2024") == [10]
    assert uids("SAVEDBEFORE 1-Jan-2030") == [10]
    assert uids("SAVEDATESUPPORTED") == [10, 20, 30]
    assert uids("SAVEDATESUPPORTED", SearchContext(max_seq=3, max_uid=30, save_dates=False)) == []


def test_sizes_numbers_modseq() -> None:
    assert uids("LARGER 100") == [20, 30]
    assert uids("SMALLER 300") == [10]
    assert uids("2:*") == [20, 30]
    assert uids("*") == [30]
    assert uids("UID 15:25") == [20]
    assert uids("UID *") == [30]
    assert uids("$") == [20, 30]
    assert uids("UID $") == [20, 30]
    assert uids("MODSEQ 9") == [20, 30]


def test_boolean_structure() -> None:
    assert uids("NOT SEEN") == [20, 30]
    assert uids("OR SEEN DELETED") == [10, 30]
    assert uids("(OR SEEN DELETED) LARGER 150") == [30]
    assert uids("OR (SEEN FROM alice) (FLAGGED NOT DRAFT)") == [10, 20]
    assert uids("NOT (OR SEEN FLAGGED)") == [30]


def test_cheap_keys_run_before_body() -> None:
    calls: list[int] = []

    def body(n: int) -> str:
        calls.append(n)
        return "needle"

    def lazy(n: int) -> Callable[[], str]:
        return lambda: body(n)

    msgs = [
        SimpleMessage(seq=i, uid=i, flags=frozenset({"\\Seen"} if i == 2 else ()), body=lazy(i))
        for i in range(1, 4)
    ]
    cmd = parse_command(b"t SEARCH BODY needle SEEN", ParseContext())
    assert isinstance(cmd, c.SearchCommand)
    found = run_search(cmd.key, msgs, SearchContext(max_seq=3, max_uid=3))
    assert [m.uid for m in found] == [2]
    assert calls == [2]  # the body of a message failing SEEN is never read


def test_uses_modseq_and_compile() -> None:
    cmd = parse_command(b"t SEARCH OR SEEN (NOT MODSEQ 5)", ParseContext())
    assert isinstance(cmd, c.SearchCommand)
    key: SearchKey = cmd.key
    assert uses_modseq(key)
    match = compile_search(key, CTX)
    assert [match(m) for m in MESSAGES] == [True, False, False]
