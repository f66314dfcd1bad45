"""The grammar of every command, one or more cases each (RFC 3501 9 and extensions)."""

from __future__ import annotations

import datetime as dt

import pytest

from protocols.imap import commands as c
from protocols.imap import search as s
from protocols.imap.names import MailboxName, decode_mailbox_name
from protocols.imap.parser import COMMAND_PARSERS, ParseContext, ParseError, parse_command
from protocols.imap.sequence import SeqRange, SequenceSet


def parse(line: bytes, *, utf8: bool = False) -> c.Command:
    return parse_command(line, ParseContext(utf8=utf8))


def bad(line: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse(line)
    return info.value


def seq(text: bytes) -> SequenceSet:
    return SequenceSet.parse(text)


def test_every_dispatch_entry_is_exercised_somewhere() -> None:
    # the dispatch table is explicit; this test pins its content
    plain = [
        *["CAPABILITY", "NOOP", "LOGOUT", "ID", "ENABLE", "COMPRESS", "STARTTLS"],
        *["AUTHENTICATE", "LOGIN", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME"],
        *["SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB", "NAMESPACE", "STATUS", "APPEND"],
        *["IDLE", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "CHECK", "CLOSE", "UNSELECT"],
    ]
    with_uid = ["EXPUNGE", "FETCH", "STORE", "SEARCH", "SORT", "THREAD", "COPY", "MOVE"]
    assert set(COMMAND_PARSERS) == {
        *(v.encode() for v in plain),
        *(p + v.encode() for v in with_uid for p in (b"", b"UID ")),
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"a CAPABILITY", c.CapabilityCommand(tag="a")),
        (b"a noop", c.NoopCommand(tag="a")),
        (b"a LOGOUT", c.LogoutCommand(tag="a")),
        (b"a STARTTLS", c.StartTLSCommand(tag="a")),
        (b"a NAMESPACE", c.NamespaceCommand(tag="a")),
        (b"a IDLE", c.IdleCommand(tag="a")),
        (b"a CHECK", c.CheckCommand(tag="a")),
        (b"a CLOSE", c.CloseCommand(tag="a")),
        (b"a UNSELECT", c.UnselectCommand(tag="a")),
        (b"a EXPUNGE", c.ExpungeCommand(tag="a")),
        (b"a UID EXPUNGE 3:5", c.ExpungeCommand(tag="a", uids=seq(b"3:5"))),
        (b"a ID NIL", c.IdCommand(tag="a", params=None)),
        (
            b'a ID ("name" "mutt" "version" NIL)',
            c.IdCommand(tag="a", params=(("name", "mutt"), ("version", None))),
        ),
        (b"a ID ()", c.IdCommand(tag="a", params=())),
        (
            b"a ENABLE condstore QRESYNC UTF8=ACCEPT",
            c.EnableCommand(tag="a", capabilities=("CONDSTORE", "QRESYNC", "UTF8=ACCEPT")),
        ),
        (b"a COMPRESS deflate", c.CompressCommand(tag="a", mechanism="DEFLATE")),
        (b"a AUTHENTICATE plain", c.AuthenticateCommand(tag="a", mechanism="PLAIN")),
        (
            b"a AUTHENTICATE PLAIN AGpvZQBzZWNyZXQ=",
            c.AuthenticateCommand(tag="a", mechanism="PLAIN", initial_response=b"\0joe\0secret"),
        ),
        (
            b"a AUTHENTICATE PLAIN =",
            c.AuthenticateCommand(tag="a", mechanism="PLAIN", initial_response=b""),
        ),
        (b'a LOGIN "j\\"o" {2}\r\npw', c.LoginCommand(tag="a", username='j"o', password=b"pw")),
        (b'a GETQUOTA ""', c.GetQuotaCommand(tag="a", root="")),
        (
            b'a SETQUOTA "" (STORAGE 512 MESSAGE 100)',
            c.SetQuotaCommand(tag="a", root="", limits=(("STORAGE", 512), ("MESSAGE", 100))),
        ),
    ],
)
def test_simple_commands(line: bytes, expected: c.Command) -> None:
    assert parse(line) == expected


def test_select_condstore_and_qresync() -> None:
    cmd = parse(b"A02 SELECT INBOX (QRESYNC (67890007 90060115194045000 41:211,214:541))")
    assert isinstance(cmd, c.SelectCommand)
    assert cmd.qresync == c.QResyncParams(
        uidvalidity=67890007, modseq=90060115194045000, known_uids=seq(b"41:211,214:541")
    )
    cmd = parse(
        b"B04 SELECT inbox (CONDSTORE QRESYNC (67890007 90060115194045000 1:29997 "
        b"(5000,7500,9000,9990:9999 15000,22500,27000,29970,29973,29976,29979,29982)))"
    )
    assert isinstance(cmd, c.SelectCommand) and cmd.condstore and cmd.qresync is not None
    assert cmd.qresync.seq_match is not None
    assert cmd.qresync.seq_match[0] == seq(b"5000,7500,9000,9990:9999")
    examine = parse(b"a EXAMINE Archive (CONDSTORE)")
    assert isinstance(examine, c.ExamineCommand) and examine.readonly and examine.condstore
    assert "not allowed" in bad(b"a SELECT INBOX (QRESYNC (1 2 1:*))").reason
    assert "unknown SELECT" in bad(b"a SELECT INBOX (FOO)").reason


def test_mailbox_names_decoded() -> None:
    cmd = parse(b"a CREATE Entw&APw-rfe")
    assert isinstance(cmd, c.CreateCommand)
    assert cmd.mailbox.name == "Entwürfe" and cmd.mailbox.raw == b"Entw&APw-rfe"
    cmd = parse(b"a CREATE Archive (USE (\\Archive))")
    assert isinstance(cmd, c.CreateCommand) and cmd.special_use == ("\\Archive",)
    rename = parse(b'a RENAME "Old" New/Child')
    assert isinstance(rename, c.RenameCommand)
    assert (rename.mailbox.name, rename.new_mailbox.name) == ("Old", "New/Child")
    for verb, cls in ((b"DELETE", c.DeleteCommand), (b"SUBSCRIBE", c.SubscribeCommand)):
        assert isinstance(parse(b"a " + verb + b" x"), cls)
    assert isinstance(parse(b"a UNSUBSCRIBE x"), c.UnsubscribeCommand)
    assert isinstance(parse(b"a GETQUOTAROOT inbox"), c.GetQuotaRootCommand)


def test_list_variants() -> None:
    cmd = parse(b'a LIST "" %')
    assert cmd == c.ListCommand(tag="a", reference="", patterns=("%",))
    cmd = parse(
        b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" Foo/*) '
        b"RETURN (CHILDREN SPECIAL-USE STATUS (MESSAGES UNSEEN SIZE))"
    )
    assert isinstance(cmd, c.ListCommand)
    assert cmd.extended
    assert cmd.selection == {c.ListSelect.SUBSCRIBED, c.ListSelect.RECURSIVEMATCH}
    assert cmd.patterns == ("INBOX", "Foo/*")
    assert cmd.returns == {c.ListReturn.CHILDREN, c.ListReturn.SPECIAL_USE, c.ListReturn.STATUS}
    assert cmd.status_items == (c.StatusItem.MESSAGES, c.StatusItem.UNSEEN, c.StatusItem.SIZE)
    cmd = parse(b'a LIST (SPECIAL-USE) "" *')
    assert isinstance(cmd, c.ListCommand) and cmd.selection == {c.ListSelect.SPECIAL_USE}
    assert "RECURSIVEMATCH" in bad(b'a LIST (RECURSIVEMATCH) "" *').reason
    assert parse(b'a LSUB "" "Entw&APw-*"') == c.LsubCommand(
        tag="a", reference="", pattern="Entwü*"
    )
    assert "modified UTF-7" in bad(b'a LIST "" "&AC4ALg-"').reason


def test_status_items() -> None:
    cmd = parse(b"a STATUS blurdybloop (UIDNEXT MESSAGES HIGHESTMODSEQ APPENDLIMIT DELETED SIZE)")
    assert isinstance(cmd, c.StatusCommand)
    assert [i.value for i in cmd.items] == [
        "UIDNEXT",
        "MESSAGES",
        "HIGHESTMODSEQ",
        "APPENDLIMIT",
        "DELETED",
        "SIZE",
    ]
    assert "unknown STATUS" in bad(b"a STATUS x (BOGUS)").reason


def test_append_forms() -> None:
    cmd = parse(
        b'a APPEND saved-messages (\\Seen $Junk) " 7-Feb-1994 21:52:25 -0800" {5}\r\nhello'
        b" {3}\r\nabc UTF8 (~{2}\r\n\x00\x01)"
    )
    assert isinstance(cmd, c.AppendCommand)
    first, second, third = cmd.messages
    assert first.flags == ("\\Seen", "$Junk")
    assert first.internal_date == dt.datetime(
        1994, 2, 7, 21, 52, 25, tzinfo=dt.timezone(dt.timedelta(hours=-8))
    )
    assert second == c.AppendMessage(data=b"abc")
    assert third == c.AppendMessage(data=b"\x00\x01", binary=True, utf8=True)
    assert "literal" in bad(b"a APPEND x hello").reason
    assert "Recent" in bad(b"a APPEND x (\\Recent) {1}\r\nx").reason
    assert "system flag" in bad(b"a APPEND x (\\Bogus) {1}\r\nx").reason


def test_store_forms() -> None:
    cmd = parse(b"a STORE 2:4 +FLAGS (\\Deleted)")
    assert cmd == c.StoreCommand(
        tag="a", sequence=seq(b"2:4"), mode=c.StoreMode.ADD, flags=("\\Deleted",)
    )
    cmd = parse(b"a UID STORE 1:* (UNCHANGEDSINCE 12121230045) -FLAGS.SILENT \\seen custom")
    assert cmd == c.StoreCommand(
        tag="a",
        uid=True,
        sequence=seq(b"1:*"),
        mode=c.StoreMode.REMOVE,
        silent=True,
        flags=("\\Seen", "custom"),
        unchangedsince=12121230045,
    )
    assert parse(b"a STORE 1 FLAGS ()") == c.StoreCommand(
        tag="a", sequence=seq(b"1"), mode=c.StoreMode.REPLACE, flags=()
    )
    assert "FLAGS" in bad(b"a STORE 1 XFLAGS (x)").reason


def test_copy_move() -> None:
    assert parse(b"a COPY 2:4 MEETING") == c.CopyCommand(
        tag="a", sequence=seq(b"2:4"), mailbox=parse_mailbox(b"MEETING")
    )
    cmd = parse(b"a UID MOVE 42:69 foo")
    assert isinstance(cmd, c.MoveCommand) and cmd.uid and cmd.command_name == "UID MOVE"


def parse_mailbox(raw: bytes) -> MailboxName:
    return decode_mailbox_name(raw)


def attrs(line: bytes) -> tuple[c.FetchAttribute, ...]:
    cmd = parse(line)
    assert isinstance(cmd, c.FetchCommand)
    return cmd.attributes


def test_fetch_macros_and_simple_items() -> None:
    assert [a.item for a in attrs(b"a FETCH 1 ALL")] == [
        c.FetchItem.FLAGS,
        c.FetchItem.INTERNALDATE,
        c.FetchItem.RFC822_SIZE,
        c.FetchItem.ENVELOPE,
    ]
    assert len(attrs(b"a FETCH 1 FAST")) == 3
    assert attrs(b"a FETCH 1 FULL")[-1].item is c.FetchItem.BODY
    line = (
        b"a FETCH 1 (FLAGS UID INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE RFC822 "
        b"RFC822.HEADER RFC822.TEXT MODSEQ SAVEDATE)"
    )
    assert [a.item.value for a in attrs(line)] == [
        "FLAGS",
        "UID",
        "INTERNALDATE",
        "RFC822.SIZE",
        "ENVELOPE",
        "BODY",
        "BODYSTRUCTURE",
        "RFC822",
        "RFC822.HEADER",
        "RFC822.TEXT",
        "MODSEQ",
        "SAVEDATE",
    ]


@pytest.mark.parametrize(
    ("spec", "section", "partial", "peek", "name"),
    [
        (b"BODY[]", c.Section(), None, False, b"BODY[]"),
        (b"BODY.PEEK[]<0.100>", c.Section(), c.Partial(origin=0, count=100), True, b"BODY[]<0>"),
        (
            b"BODY[1.2.HEADER]",
            c.Section(part=(1, 2), text=c.SectionText.HEADER),
            None,
            False,
            b"BODY[1.2.HEADER]",
        ),
        (
            b"body.peek[1.2.mime]",
            c.Section(part=(1, 2), text=c.SectionText.MIME),
            None,
            True,
            b"BODY[1.2.MIME]",
        ),
        (b"BODY[2.TEXT]", c.Section(part=(2,), text=c.SectionText.TEXT), None, False, None),
        (
            b"BODY[HEADER.FIELDS (DATE FROM)]",
            c.Section(text=c.SectionText.HEADER_FIELDS, fields=("DATE", "FROM")),
            None,
            False,
            b"BODY[HEADER.FIELDS (DATE FROM)]",
        ),
        (
            b'BODY.PEEK[3.HEADER.FIELDS.NOT ("Subject" x-y)]<10.5>',
            c.Section(part=(3,), text=c.SectionText.HEADER_FIELDS_NOT, fields=("Subject", "x-y")),
            c.Partial(origin=10, count=5),
            True,
            b"BODY[3.HEADER.FIELDS.NOT (Subject x-y)]<10>",
        ),
    ],
)
def test_fetch_body_sections(
    spec: bytes, section: c.Section, partial: c.Partial | None, peek: bool, name: bytes | None
) -> None:
    (att,) = attrs(b"a FETCH 1 (" + spec + b")")
    assert att == c.FetchAttribute(
        item=c.FetchItem.BODY_SECTION, section=section, partial=partial, peek=peek
    )
    assert att.sets_seen is not peek
    if name is not None:
        assert att.response_name() == name


def test_fetch_binary() -> None:
    a, b, size = attrs(b"a FETCH 1 (BINARY[1.2] BINARY.PEEK[]<0.9> BINARY.SIZE[3])")
    assert (a.item, a.section, a.peek) == (c.FetchItem.BINARY, c.Section(part=(1, 2)), False)
    assert b.peek and b.partial == c.Partial(origin=0, count=9)
    assert size.response_name() == b"BINARY.SIZE[3]"
    assert "part numbers" in bad(b"a FETCH 1 BINARY[1.HEADER]").reason


def test_fetch_modifiers() -> None:
    cmd = parse(b"a UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)")
    assert isinstance(cmd, c.FetchCommand)
    assert (cmd.changedsince, cmd.vanished) == (12345, True)
    assert "VANISHED" in bad(b"a FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)").reason
    assert "VANISHED" in bad(b"a UID FETCH 1 (FLAGS) (VANISHED)").reason
    for wrong in (b"a FETCH 1 (BODY.PEEK)", b"a FETCH 1 (MIME)", b"a FETCH 1 BODY[MIME]"):
        bad(wrong)


def key(line: bytes) -> s.SearchKey:
    cmd = parse(line)
    assert isinstance(cmd, c.SearchCommand)
    return cmd.key


def test_search_every_rfc3501_key() -> None:
    d = dt.date(1994, 2, 1)
    cases: list[tuple[bytes, s.SearchKey]] = [
        (b"ALL", s.AllKey()),
        (b"ANSWERED", s.FlagKey(flag="\\Answered")),
        (b"UNANSWERED", s.FlagKey(flag="\\Answered", present=False)),
        (b"DELETED", s.FlagKey(flag="\\Deleted")),
        (b"UNDELETED", s.FlagKey(flag="\\Deleted", present=False)),
        (b"DRAFT", s.FlagKey(flag="\\Draft")),
        (b"UNDRAFT", s.FlagKey(flag="\\Draft", present=False)),
        (b"FLAGGED", s.FlagKey(flag="\\Flagged")),
        (b"UNFLAGGED", s.FlagKey(flag="\\Flagged", present=False)),
        (b"SEEN", s.FlagKey(flag="\\Seen")),
        (b"UNSEEN", s.FlagKey(flag="\\Seen", present=False)),
        (b"KEYWORD $Junk", s.FlagKey(flag="$Junk")),
        (b"UNKEYWORD $Junk", s.FlagKey(flag="$Junk", present=False)),
        (b"RECENT", s.RecentKey()),
        (b"NEW", s.NewKey()),
        (b"OLD", s.OldKey()),
        (b"BCC x", s.HeaderKey(field="bcc", value="x")),
        (b"CC x", s.HeaderKey(field="cc", value="x")),
        (b'FROM "Smith"', s.HeaderKey(field="from", value="Smith")),
        (b"SUBJECT {3}\r\nabc", s.HeaderKey(field="subject", value="abc")),
        (b"TO x", s.HeaderKey(field="to", value="x")),
        (b'HEADER X-Spam ""', s.HeaderKey(field="x-spam", value="")),
        (b"BODY hello", s.BodyKey(value="hello")),
        (b"TEXT hello", s.TextKey(value="hello")),
        (b"BEFORE 1-Feb-1994", s.DateKey(field=s.DateField.INTERNAL, op=s.DateOp.BEFORE, date=d)),
        (b'ON "01-feb-1994"', s.DateKey(field=s.DateField.INTERNAL, op=s.DateOp.ON, date=d)),
        (b"SINCE 1-Feb-1994", s.DateKey(field=s.DateField.INTERNAL, op=s.DateOp.SINCE, date=d)),
        (b"SENTBEFORE 1-Feb-1994", s.DateKey(field=s.DateField.SENT, op=s.DateOp.BEFORE, date=d)),
        (b"SENTON 1-Feb-1994", s.DateKey(field=s.DateField.SENT, op=s.DateOp.ON, date=d)),
        (b"SENTSINCE 1-Feb-1994", s.DateKey(field=s.DateField.SENT, op=s.DateOp.SINCE, date=d)),
        (b"SAVEDBEFORE 1-Feb-1994", s.DateKey(field=s.DateField.SAVED, op=s.DateOp.BEFORE, date=d)),
        (b"SAVEDON 1-Feb-1994", s.DateKey(field=s.DateField.SAVED, op=s.DateOp.ON, date=d)),
        (b"SAVEDSINCE 1-Feb-1994", s.DateKey(field=s.DateField.SAVED, op=s.DateOp.SINCE, date=d)),
        (b"SAVEDATESUPPORTED", s.SaveDateSupportedKey()),
        (b"LARGER 100", s.SizeKey(larger=True, size=100)),
        (b"SMALLER 100", s.SizeKey(larger=False, size=100)),
        (b"UID 1:*", s.SequenceKey(sequence=seq(b"1:*"), uid=True)),
        (b"2,4:*", s.SequenceKey(sequence=SequenceSet((SeqRange(2, 2), SeqRange(4, None))))),
        (b"$", s.SequenceKey(sequence=SequenceSet(saved=True))),
        (b"UID $", s.SequenceKey(sequence=SequenceSet(saved=True), uid=True)),
        (b"NOT SEEN", s.NotKey(key=s.FlagKey(flag="\\Seen"))),
        (
            b"OR SEEN (FLAGGED DRAFT)",
            s.OrKey(
                left=s.FlagKey(flag="\\Seen"),
                right=s.AndKey(keys=(s.FlagKey(flag="\\Flagged"), s.FlagKey(flag="\\Draft"))),
            ),
        ),
        (b"MODSEQ 620162338", s.ModSeqKey(modseq=620162338)),
        (
            b'MODSEQ "/flags/\\\\draft" all 620162338',
            s.ModSeqKey(modseq=620162338, entry_name="/flags/\\draft", entry_type="all"),
        ),
    ]
    for text, expected in cases:
        assert key(b"a SEARCH " + text) == expected, text


def test_search_charset_return_and_implicit_and() -> None:
    cmd = parse(b"a UID SEARCH RETURN (MIN COUNT SAVE) CHARSET utf-8 SEEN LARGER 5")
    assert isinstance(cmd, c.SearchCommand)
    assert cmd.uid and cmd.charset == "UTF-8"
    assert cmd.returns == frozenset({c.SearchReturn.MIN, c.SearchReturn.COUNT, c.SearchReturn.SAVE})
    assert cmd.key == s.AndKey(keys=(s.FlagKey(flag="\\Seen"), s.SizeKey(larger=True, size=5)))
    empty = parse(b"a SEARCH RETURN () ALL")
    assert isinstance(empty, c.SearchCommand) and empty.returns == frozenset({c.SearchReturn.ALL})
    err = bad(b"a SEARCH CHARSET KOI8-R FROM x")
    assert (err.status, err.code) == ("NO", "BADCHARSET (UTF-8 US-ASCII)")
    assert "US-ASCII" in bad(b'a SEARCH CHARSET US-ASCII FROM "\xc3\xa9"').reason
    assert "UTF-8" in bad(b'a SEARCH FROM "\xff"').reason
    assert "unknown search key" in bad(b"a SEARCH FOO").reason
    assert "missing" in bad(b"a SEARCH").reason


def test_sort_and_thread() -> None:
    cmd = parse(b"a UID SORT (REVERSE DATE SUBJECT) UTF-8 SINCE 1-Feb-1994")
    assert isinstance(cmd, c.SortCommand)
    assert cmd.criteria == (
        c.SortCriterion(key=c.SortKey.DATE, reverse=True),
        c.SortCriterion(key=c.SortKey.SUBJECT),
    )
    thread = parse(b"a THREAD REFERENCES US-ASCII ALL")
    assert thread == c.ThreadCommand(
        tag="a", algorithm=c.ThreadAlgorithm.REFERENCES, charset="US-ASCII", key=s.AllKey()
    )
    assert "threading" in bad(b"a THREAD BOGUS UTF-8 ALL").reason
    assert "sort key" in bad(b"a SORT (BOGUS) UTF-8 ALL").reason


@pytest.mark.parametrize(
    "line",
    [
        b"a",
        b"a ",
        b"a LOGIN",
        b"a LOGIN x",
        b"a LOGIN x y z",
        b"a SELECT",
        b'a LOGIN "unterminated',
        b"a FETCH 0 FLAGS",
        b"a FETCH 01 FLAGS",
        b"a FETCH 1: FLAGS",
        b"a FETCH 1 (FLAGS",
        b"a FETCH 1 BODY[1.0]",
        b"a STORE 1 +FLAGS (\\Recent)",
        b"a SEARCH SINCE 31-Feb-2020",
        b"a SEARCH SINCE 1-Foo-2020",
        b"a AUTHENTICATE PLAIN ***",
        b"a ENABLE",
        b'a APPEND x (\\Seen) "32-Jan-2020 00:00:00 +0000" {1}\r\nx',
        b'a APPEND x "01-Jan-2020 00:00:00 +2400" {1}\r\nx',
    ],
)
def test_malformed(line: bytes) -> None:
    bad(line)
