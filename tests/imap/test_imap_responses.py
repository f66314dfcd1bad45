"""Response rendering: strings, codes, status lines, mailbox data, ENVELOPE, BODYSTRUCTURE."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.imap import responses as r
from protocols.imap import storemap
from protocols.imap.commands import FetchAttribute, FetchItem, SearchReturn, Section, StatusItem
from protocols.imap.model import Address, BodyStructure, Disposition, Envelope, ThreadNode
from protocols.imap.parser.lexer import Cursor
from store.mime import parse_message


def test_string_quoting_and_literals() -> None:
    assert r.string("hello") == b'"hello"'
    assert r.string('a"b\\c') == b'"a\\"b\\\\c"'
    assert r.string("a\r\nb") == b"{4}\r\na\r\nb"
    assert r.string("café") == b"{5}\r\ncaf\xc3\xa9"
    assert r.string("café", utf8=True) == b'"caf\xc3\xa9"'  # RFC 6855 3
    assert r.string(b"\xff", utf8=True) == b"{1}\r\n\xff"  # not UTF-8: literal
    assert r.string("x" * 2000).startswith(b"{2000}\r\n")
    assert r.nstring(None) == b"NIL"
    assert r.astring("INBOX") == b"INBOX"
    assert r.astring("NIL") == b'"NIL"'
    assert r.astring("a b") == b'"a b"'
    assert r.astring("") == b'""'
    assert r.literal(b"a\x00b", binary=True) == b"~{3}\r\na\x00b"
    assert r.literal(b"ab", binary=True) == b"{2}\r\nab"


def test_mailbox_names_encoded() -> None:
    assert r.mailbox("Entwürfe") == b"Entw&APw-rfe"
    assert r.mailbox("Entwürfe", utf8=True) == '"Entwürfe"'.encode()
    assert r.mailbox("a%b") == b'"a%b"'


def test_status_lines_and_codes() -> None:
    assert r.tagged("a1", r.Status.OK, "LOGIN completed") == b"a1 OK LOGIN completed\r\n"
    line = r.tagged("a2", r.Status.NO, "too big", r.TOOBIG)
    assert line == b"a2 NO [TOOBIG] too big\r\n"
    assert r.tagged("a3", r.Status.BAD, "x\r\ny") == b"a3 BAD x  y\r\n"
    assert r.tagged("a4", r.Status.OK, "[fake] text") == b"a4 OK  [fake] text\r\n"
    assert (
        r.tagged("a5", r.Status.NO, "", "BADCHARSET (UTF-8)")
        == b"a5 NO [BADCHARSET (UTF-8)] done\r\n"
    )
    assert r.untagged_status(r.Status.BYE, "logging out") == b"* BYE logging out\r\n"
    assert r.untagged_status(r.Status.OK, "ok", r.ResponseCode.uidvalidity(3857529045)) == (
        b"* OK [UIDVALIDITY 3857529045] ok\r\n"
    )
    assert r.continuation() == b"+ Ready\r\n"
    assert r.continuation(data=b"") == b"+ \r\n"
    codes = {
        r.ResponseCode.capability(["IMAP4rev1", "IDLE"]): b"[CAPABILITY IMAP4rev1 IDLE]",
        r.ResponseCode.badcharset(["UTF-8"]): b"[BADCHARSET (UTF-8)]",
        r.ResponseCode.permanentflags(["\\Seen", "\\*"]): b"[PERMANENTFLAGS (\\Seen \\*)]",
        r.ResponseCode.uidnext(4392): b"[UIDNEXT 4392]",
        r.ResponseCode.unseen(12): b"[UNSEEN 12]",
        r.ResponseCode.appenduid(38505, [3955]): b"[APPENDUID 38505 3955]",
        r.ResponseCode.copyuid(38505, [304, 319, 320], [3956, 3957, 3958]): (
            b"[COPYUID 38505 304,319:320 3956:3958]"
        ),
        r.ResponseCode.highestmodseq(715194045007): b"[HIGHESTMODSEQ 715194045007]",
        r.ResponseCode.modified([7, 9, 8]): b"[MODIFIED 7:9]",
        r.READ_ONLY: b"[READ-ONLY]",
        r.NOMODSEQ: b"[NOMODSEQ]",
        r.CLOSED: b"[CLOSED]",
        r.UNKNOWN_CTE: b"[UNKNOWN-CTE]",
    }
    for code, wire in codes.items():
        assert code.render() == wire


def test_mailbox_data() -> None:
    assert r.capability(["IMAP4rev1", "STARTTLS"]) == b"* CAPABILITY IMAP4rev1 STARTTLS\r\n"
    assert r.enabled([]) == b"* ENABLED\r\n"
    assert r.enabled(["CONDSTORE"]) == b"* ENABLED CONDSTORE\r\n"
    assert r.flags(["\\Seen", "$Junk"]) == b"* FLAGS (\\Seen $Junk)\r\n"
    assert r.exists(23) == b"* 23 EXISTS\r\n"
    assert r.recent(1) == b"* 1 RECENT\r\n"
    assert r.expunge(3) == b"* 3 EXPUNGE\r\n"
    assert r.vanished([41, 43, 44, 45], earlier=True) == b"* VANISHED (EARLIER) 41,43:45\r\n"
    assert r.list_response("INBOX", attributes=["\\HasNoChildren"]) == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
    )
    assert (
        r.list_response(
            "Sent Items",
            attributes=["\\Sent"],
            extended=[("CHILDINFO", b'("SUBSCRIBED")')],
        )
        == b'* LIST (\\Sent) "/" "Sent Items" ("CHILDINFO" ("SUBSCRIBED"))\r\n'
    )
    assert r.list_response("", attributes=["\\Noselect"], delimiter=None, lsub=True) == (
        b'* LSUB (\\Noselect) NIL ""\r\n'
    )
    assert r.status("blurdybloop", {StatusItem.MESSAGES: 231, StatusItem.UIDNEXT: 44292}) == (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n"
    )
    assert r.namespace([("", "/")]) == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    assert r.quota("", [("STORAGE", 10, 512)]) == b'* QUOTA "" (STORAGE 10 512)\r\n'
    assert r.quotaroot("INBOX", [""]) == b'* QUOTAROOT INBOX ""\r\n'
    assert r.id_response([("name", "mailhost"), ("os", None)]) == (
        b'* ID ("name" "mailhost" "os" NIL)\r\n'
    )
    assert r.id_response(None) == b"* ID NIL\r\n"


def test_search_esearch_sort() -> None:
    assert r.search([2, 3, 6]) == b"* SEARCH 2 3 6\r\n"
    assert r.search([]) == b"* SEARCH\r\n"
    assert r.search([2], modseq=917162500) == b"* SEARCH 2 (MODSEQ 917162500)\r\n"
    assert r.search([], modseq=5) == b"* SEARCH\r\n"
    every = frozenset(SearchReturn) - {SearchReturn.SAVE}
    assert r.esearch("A282", [2, 10, 11], every, uid=True) == (
        b'* ESEARCH (TAG "A282") UID MIN 2 MAX 11 COUNT 3 ALL 2,10:11\r\n'
    )
    assert r.esearch("A283", [], every) == b'* ESEARCH (TAG "A283") COUNT 0\r\n'
    assert r.esearch("A284", [5], frozenset({SearchReturn.SAVE})) == b""
    assert r.esearch("A285", [1, 2], frozenset({SearchReturn.ALL}), modseq=9) == (
        b'* ESEARCH (TAG "A285") ALL 1:2 MODSEQ 9\r\n'
    )
    assert r.sort([5, 3, 4]) == b"* SORT 5 3 4\r\n"


def test_thread_rendering() -> None:
    n = ThreadNode
    tree = [
        n(2),
        n(3, (n(6, (n(4, (n(23),)), n(44, (n(7, (n(96),)),)))),)),
    ]
    assert r.thread(tree) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"  # RFC 5256 4
    assert r.thread([n(None, (n(3), n(5)))]) == b"* THREAD ((3)(5))\r\n"
    assert r.thread([]) == b"* THREAD\r\n"
    chain = n(1)
    for i in range(2, 5000):
        chain = n(i, (chain,))
    assert r.thread([chain]).startswith(b"* THREAD (4999 4998")


def test_internal_date() -> None:
    value = dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=dt.timezone(-dt.timedelta(hours=7)))
    assert r.internal_date(value) == b'"17-Jul-1996 02:44:25 -0700"'
    assert r.internal_date(dt.datetime(2024, 1, 2, 3, 4, 5)) == b'"02-Jan-2024 03:04:05 +0000"'


ENVELOPE = Envelope(
    date="Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    subject="IMAP4rev1 WG mtg summary and minutes",
    from_=(Address(name="Terry Gray", mailbox="gray", host="cac.washington.edu"),),
    to=(Address(mailbox="imap", host="cac.washington.edu"),),
    cc=(
        Address(mailbox="minutes", host="CNRI.Reston.VA.US"),
        Address(name="John Klensin", mailbox="KLENSIN", host="MIT.EDU"),
    ),
    message_id="<B27397-0100000@cac.washington.edu>",
)


def test_envelope_rfc3501_example() -> None:
    assert r.envelope(ENVELOPE) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_envelope_groups_and_8bit() -> None:
    env = Envelope(
        subject="Grüße",
        to=(Address.group_start("undisclosed"), Address.group_end()),
    )
    wire = r.envelope(env)
    assert b"{7}\r\nGr\xc3\xbc\xc3\x9fe" in wire
    assert b'((NIL NIL "undisclosed" NIL)(NIL NIL NIL NIL))' in wire
    assert '"Grüße"'.encode() in r.envelope(env, utf8=True)


def test_bodystructure_multipart_and_message() -> None:
    text = BodyStructure(params=(("charset", "US-ASCII"),), size=3028, lines=92, encoding="7BIT")
    inner = BodyStructure(
        type="message",
        subtype="rfc822",
        size=400,
        lines=10,
        envelope=Envelope(subject="inner"),
        body=BodyStructure(size=5, lines=1),
    )
    attachment = BodyStructure(
        type="application",
        subtype="pdf",
        params=(("name", "a.pdf"),),
        encoding="base64",
        size=100,
        disposition=Disposition("attachment", (("filename", "a.pdf"),)),
        language=("en", "de"),
    )
    root = BodyStructure(
        type="multipart",
        subtype="mixed",
        params=(("boundary", "x"),),
        parts=(text, inner, attachment),
    )
    basic = r.body_structure(root, extensible=False)
    assert basic.startswith(b'(("text" "plain" ("charset" "US-ASCII") NIL NIL "7BIT" 3028 92)')
    assert basic.endswith(b' "mixed")')
    assert (
        b'("message" "rfc822" NIL NIL NIL "7BIT" 400 (NIL "inner" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7BIT" 5 1) 10)'
        in basic
    )
    full = r.body_structure(root)
    assert full.endswith(b' "mixed" ("boundary" "x") NIL NIL NIL)')
    assert b'"base64" 100 NIL ("attachment" ("filename" "a.pdf")) ("en" "de") NIL)' in full


def test_bodystructure_bounds() -> None:
    empty_multipart = BodyStructure(type="multipart", subtype="mixed")
    assert r.body_structure(empty_multipart, extensible=False).startswith(b'(("text" "plain"')
    deep = BodyStructure(size=1, lines=1)
    for _ in range(500):
        deep = BodyStructure(type="multipart", subtype="mixed", parts=(deep,))
    wire = r.body_structure(deep)
    assert wire.count(b"(") < 2000 and b"octet-stream" in wire


def test_fetch_response() -> None:
    att = FetchAttribute(item=FetchItem.BODY_SECTION, section=Section(part=(1,)), peek=True)
    line = r.fetch(
        12,
        [
            (b"UID", b"4827313"),
            (b"FLAGS", r.flag_list(["\\Seen"])),
            (att.response_name(), r.section_data(b"hello")),
            (b"BODY[9]", r.section_data(None)),
        ],
    )
    assert line == b"* 12 FETCH (UID 4827313 FLAGS (\\Seen) BODY[1] {5}\r\nhello BODY[9] NIL)\r\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60), st.booleans())
def test_rendered_strings_parse_back(value: bytes, utf8: bool) -> None:
    wire = r.string(value, utf8=utf8)
    cursor = Cursor(wire)
    assert cursor.string() == value.replace(b"\x00", "\ufffd".encode())
    assert cursor.at_end()


def test_lone_surrogates_do_not_crash() -> None:
    assert r.string("a\udc80") == b"{2}\r\na\x80"  # surrogateescape round trip
    assert r.string("a\ud800") == b'"a?"'


def test_the_store_envelope_renders_as_its_imap_model_with_a_shared_memo() -> None:
    """The metadata cache renders the store's envelope directly, remembering address
    lists between messages: the output is the same as through the IMAP model."""
    messages = [
        b"From: Ann <ann@example.org>\r\nTo: Bob <bob@example.org>, team: ;\r\n"
        b"Cc: =?utf-8?q?Gr=C3=BC=C3=9Fe?= <g@example.org>\r\nSubject: one\r\n\r\nx\r\n",
        b"From: Ann <ann@example.org>\r\nSender: s@example.org\r\nReply-To: r@example.org\r\n"
        b"To: Bob <bob@example.org>, team: ;\r\nSubject: two\r\n\r\ny\r\n",
        b"Subject: no addresses\r\n\r\nz\r\n",
    ]
    memo: r.AddressMemo = {}
    for raw in messages * 2:
        env = parse_message(raw).envelope
        for utf8 in (False, True):
            expected = r.envelope(storemap.envelope(env), utf8=utf8)
            assert r.envelope(env, utf8=utf8, memo=memo) == expected
            assert r.envelope(env, utf8=utf8) == expected
    assert len(memo) == 5 * 2  # (Ann), (Bob, group), (Grüße), (s), (r); by utf8
