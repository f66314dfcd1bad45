"""Metadata parsed at delivery: envelope, MIME structure with offsets, attachments, preview."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import Importance
from store.limits import (
    MAX_ADDRESSES,
    MAX_BOUNDARY_LENGTH,
    MAX_HEADER_FIELD_BYTES,
    MAX_HEADER_FIELDS,
    MAX_HEADER_LINES,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    PREVIEW_CHARS,
)
from store.metadata import base_subject, build_metadata, from_record, to_record
from store.mime import Address, decode_words, parse_address_list, parse_message

MIXED = (
    b'From: "Joe Q. Public" <john.q.public@example.com>\r\n'
    b"To: Mary Smith <mary@x.test>, jdoe@example.org\r\n"
    b"Cc: A Group:Ed Jones <c@a.test>,joe@where.test;, <boss@nil.test>\r\n"
    b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= =?utf-8?q?_aus_K=C3=B6ln?=\r\n"
    b"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    b"Message-ID: <5678.21-Nov-1997@example.com>\r\n"
    b"In-Reply-To: <parent@example.com>\r\n"
    b"References: <root@example.com> <parent@example.com>\r\n"
    b"X-Priority: 1 (Highest)\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=----=_Part_1\r\n"
    b"\r\n"
    b"preamble\r\n"
    b"------=_Part_1\r\n"
    b'Content-Type: multipart/alternative; boundary="alt"\r\n'
    b"\r\n"
    b"--alt\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"Hello =C3=BCber   all\r\n"
    b"second line\r\n"
    b"--alt\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n"
    b"\r\n"
    b"<p>Hello</p>\r\n"
    b"--alt--\r\n"
    b"------=_Part_1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"From: x@y.z\r\n"
    b"\r\n"
    b"inner body\r\n"
    b"------=_Part_1\r\n"
    b'Content-Type: application/pdf; name="a.pdf"\r\n'
    b"Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"Content-ID: <pdf@x>\r\n"
    b"\r\n"
    b"QUJDREVGR0g=\r\n"
    b"------=_Part_1--\r\n"
    b"epilogue\r\n"
)


def test_envelope_is_raw_and_addresses_are_parsed() -> None:
    meta = build_metadata(MIXED)
    env = meta.envelope
    assert env.subject == "=?utf-8?q?Gr=C3=BC=C3=9Fe?= =?utf-8?q?_aus_K=C3=B6ln?="
    assert meta.subject == "Grüße aus Köln"
    assert env.from_ == (Address("Joe Q. Public", None, "john.q.public", "example.com"),)
    assert env.to[1] == Address(None, None, "jdoe", "example.org")
    assert env.cc == (
        Address(None, None, "A Group", None),
        Address("Ed Jones", None, "c", "a.test"),
        Address(None, None, "joe", "where.test"),
        Address(None, None, None, None),
        Address(None, None, "boss", "nil.test"),
    )
    assert env.date == "Tue, 1 Jul 2003 10:52:37 +0200"
    assert env.message_id == "<5678.21-Nov-1997@example.com>"
    assert meta.message_id == "5678.21-Nov-1997@example.com"
    assert meta.references == ("root@example.com", "parent@example.com")
    assert meta.sent_date is not None and meta.sent_date.hour == 8
    assert meta.importance is Importance.HIGH


def test_structure_offsets_serve_sections() -> None:
    meta = build_metadata(MIXED)
    root = meta.structure
    assert root.mime_type == "multipart/mixed"
    assert root.param("boundary") == "----=_Part_1"
    text = root.part((1, 1))
    assert text is not None and text.mime_type == "text/plain"
    assert MIXED[text.body_start : text.end] == b"Hello =C3=BCber   all\r\nsecond line"
    assert MIXED[text.header_start : text.body_start].startswith(b"Content-Type: text/plain")
    assert text.lines == 2 and text.encoding == "quoted-printable"
    inner = root.part((2,))
    assert inner is not None and inner.envelope is not None and inner.message is not None
    assert inner.envelope.subject == "inner"
    assert MIXED[inner.body_start : inner.end] == b"Subject: inner\r\nFrom: x@y.z\r\n\r\ninner body"
    assert root.part((2, 1)) is inner.message  # BODY[2.1] is the attached message's body
    pdf = root.part((3,))
    assert pdf is not None and pdf.filename() == "€.pdf" and pdf.content_id == "<pdf@x>"
    assert root.part((4,)) is None and root.part((1, 3)) is None


def test_attachments_preview_thread_class() -> None:
    meta = build_metadata(MIXED)
    assert [a.part for a in meta.attachments] == [(2,), (3,)]
    pdf = meta.attachments[1]
    assert pdf.filename == "€.pdf" and pdf.content_type == "application/pdf" and not pdf.inline
    assert 8 <= pdf.size <= 9  # an estimate: base64 padding is not counted out
    assert meta.has_attachments
    assert meta.preview == "Hello über all second line"
    assert meta.message_class == "IPM.Note"
    reply_thread = build_metadata(b"References: <root@example.com>\r\n\r\nx").thread_id
    root_thread = build_metadata(b"Message-ID: <root@example.com>\r\n\r\nx").thread_id
    assert meta.thread_id == reply_thread == root_thread
    assert len(meta.thread_id) == 32


def test_records_round_trip() -> None:
    meta = build_metadata(MIXED)
    assert from_record(to_record(meta)) == meta


def test_html_preview_and_single_part() -> None:
    html = b"Content-Type: text/html\r\n\r\n<style>p{}</style><p>Hi &amp; bye</p>\r\n"
    meta = build_metadata(html)
    assert meta.preview == "Hi & bye"
    assert meta.structure.part((1,)) is meta.structure
    assert not meta.attachments


def test_base_subject() -> None:
    assert base_subject("Re: Fwd: [list] RE[2]: Hello  World") == "hello world"


def test_decode_words_tolerates_garbage() -> None:
    assert decode_words("=?bogus-charset?q?x?=") == "=?bogus-charset?q?x?="
    assert decode_words("=?utf-8?b?!!!?=") in ("=?utf-8?b?!!!?=", "")
    assert decode_words("plain") == "plain"


def test_lf_only_messages() -> None:
    meta = build_metadata(b"Subject: lf\n\nbody\nline\n")
    assert meta.envelope.subject == "lf"
    assert meta.structure.body_start == len(b"Subject: lf\n\n")
    assert meta.structure.lines == 2


def test_garbage_never_crashes() -> None:
    for data in (b"", b"\r\n", b"no header at all", b":\r\n\r\n", b"\xff\xfe\x00" * 100):
        meta = build_metadata(data)
        assert meta.structure.end == len(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_fuzz_parse_never_raises(data: bytes) -> None:
    meta = build_metadata(data)
    assert from_record(to_record(meta)) == meta


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"--b\r\n",
                b"--b--\r\n",
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b"\r\n",
                b"x\r\n",
                b"Content-Type: message/rfc822\r\n",
                b"--b",
            ]
        ),
        max_size=60,
    )
)
def test_fuzz_mime_shapes(chunks: list[bytes]) -> None:
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"".join(chunks)
    meta = build_metadata(data)
    for _, part in meta.structure.walk():
        assert 0 <= part.header_start <= part.body_start <= part.end <= len(data)


# --- limits -----------------------------------------------------------------------------


def _nested(depth: int) -> bytes:
    head = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    return (
        b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
        + head
        + b"--b%d\r\n\r\nleaf\r\n" % depth
    )


def test_mime_depth_limit() -> None:
    start = time.perf_counter()
    meta = build_metadata(_nested(MAX_MIME_DEPTH + 50))
    assert time.perf_counter() - start < 5
    node = meta.structure
    depth = 0
    while node.is_multipart:
        node = node.parts[0]
        depth += 1
    assert depth == MAX_MIME_DEPTH
    assert node.mime_type == "application/octet-stream"
    shallow = build_metadata(_nested(MAX_MIME_DEPTH - 5)).structure
    depth = 0
    while shallow.is_multipart:
        shallow = shallow.parts[0]
        depth += 1
    assert shallow.mime_type == "text/plain" and depth == MAX_MIME_DEPTH - 4


def test_deep_nesting_bomb_is_bounded() -> None:
    start = time.perf_counter()
    meta = build_metadata(_nested(10_000))
    assert time.perf_counter() - start < 10
    assert meta.structure.is_multipart


def test_part_count_limit() -> None:
    parts = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(MAX_MIME_PARTS + 10))
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    meta = build_metadata(data)
    assert meta.parse_failed and meta.structure.mime_type == "text/plain"
    assert meta.structure.end == len(data)
    ok = build_metadata(
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        + b"".join(b"--b\r\n\r\nx\r\n" for _ in range(100))
        + b"--b--\r\n"
    )
    assert not ok.parse_failed and len(ok.structure.parts) == 100


def test_header_field_size_limit() -> None:
    huge = b"Subject: " + b"x" * (MAX_HEADER_FIELD_BYTES * 3) + b"\r\n\r\nbody"
    meta = build_metadata(huge)
    assert meta.envelope.subject is not None
    assert MAX_HEADER_FIELD_BYTES - 1 <= len(meta.envelope.subject) <= MAX_HEADER_FIELD_BYTES
    folded = b"Subject: a\r\n" + b" b\r\n" * (MAX_HEADER_FIELD_BYTES // 2) + b"\r\nbody"
    assert len(build_metadata(folded).envelope.subject or "") <= MAX_HEADER_FIELD_BYTES


def test_header_count_limit() -> None:
    data = b"X-A: 1\r\n" * (MAX_HEADER_FIELDS + 100) + b"Subject: late\r\n\r\nbody"
    parsed = parse_message(data)
    assert len(parsed.headers.fields) == MAX_HEADER_FIELDS
    assert parsed.envelope.subject is None  # beyond the limit: ignored
    assert parsed.structure.body_start == len(data) - 4


def test_address_count_limit() -> None:
    value = ", ".join(f"u{i}@example.com" for i in range(MAX_ADDRESSES + 50))
    assert len(parse_address_list(value)) == MAX_ADDRESSES
    assert len(parse_address_list(", ".join(["a@b.c"] * 10))) == 10


def test_boundary_length_limit() -> None:
    ok = "b" * MAX_BOUNDARY_LENGTH
    data = f"Content-Type: multipart/mixed; boundary={ok}\r\n\r\n--{ok}\r\n\r\nx\r\n--{ok}--\r\n"
    assert build_metadata(data.encode()).structure.is_multipart
    long = "b" * (MAX_BOUNDARY_LENGTH + 1)
    data = f"Content-Type: multipart/mixed; boundary={long}\r\n\r\n--{long}\r\n\r\nx\r\n"
    assert build_metadata(data.encode()).structure.mime_type == "text/plain"
    empty = b'Content-Type: multipart/mixed; boundary=""\r\n\r\n--\r\n\r\nx\r\n'
    assert build_metadata(empty).structure.mime_type == "text/plain"


def test_preview_length_limit() -> None:
    meta = build_metadata(b"Subject: p\r\n\r\n" + b"word " * 1000)
    assert len(meta.preview) == PREVIEW_CHARS


@pytest.mark.parametrize(
    ("headers", "importance"),
    [
        (b"Importance: low\r\n", Importance.LOW),
        (b"X-Priority: 5\r\n", Importance.LOW),
        (b"X-MSMail-Priority: High\r\n", Importance.HIGH),
        (b"", Importance.NORMAL),
    ],
)
def test_importance(headers: bytes, importance: Importance) -> None:
    assert build_metadata(headers + b"\r\nx").importance is importance


def test_message_classes() -> None:
    signed = (
        b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary=s\r\n'
        b"\r\n--s\r\n\r\nbody\r\n--s\r\nContent-Type: application/pkcs7-signature\r\n\r\nsig\r\n--s--\r\n"
    )
    meta = build_metadata(signed)
    assert meta.message_class == "IPM.Note.SMIME.MultipartSigned"
    assert meta.attachments == ()
    invite = b"Content-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\n"
    assert build_metadata(invite).message_class == "IPM.Schedule.Meeting.Request"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("<a@b.test>", Address(None, None, "a", "b.test")),
        (" a.b@c.test\t", Address(None, None, "a.b", "c.test")),
        ("Joe  Q\tPublic <jq@x.test>", Address("Joe Q Public", None, "jq", "x.test")),
        ("Joe<jq@x.test>", Address("Joe", None, "jq", "x.test")),
        # Not the simple form: the general parser (quoted name, comment, literal, group).
        ('"Joe, Q." <jq@x.test>', Address("Joe, Q.", None, "jq", "x.test")),
        ("jq@x.test (Joe)", Address("Joe", None, "jq", "x.test")),
        ("jq@[192.0.2.1]", Address(None, None, "jq", "[192.0.2.1]")),
    ],
)
def test_single_mailbox_forms(value: str, expected: Address) -> None:
    assert parse_address_list(value) == (expected,)


@given(
    st.lists(
        st.sampled_from(["a", "b.c", "@", "<", ">", " ", "\t", '"', "(x)", ",", ":", ";", "é"]),
        max_size=10,
    )
)
@settings(max_examples=300, deadline=None)
def test_simple_mailbox_path_agrees_with_lexer(pieces: list[str]) -> None:
    # The one-expression path for a lone mailbox must give what the lexer gives.
    from store import mime

    value = "".join(pieces)
    if value and mime._SIMPLE_MAILBOX.fullmatch(value) is not None:
        assert parse_address_list(value) == (mime._mailbox(mime._lex_addresses(value)),)


def test_header_field_names() -> None:
    data = (
        b"Subject \t: spaced\r\n"  # blanks before the colon (obs-optional WSP)
        b"Bad Name: dropped\r\n"
        b" continuation of a dropped field\r\n"
        b"X-Long: " + b"v" * 10 + b"\r\n" + b"N" * 1000 + b": colon too far\r\n"
        b"\r\nbody\n\nnot a header: x\r\n"
    )
    parsed = parse_message(data)
    assert parsed.headers.fields == (("subject", "spaced"), ("x-long", "v" * 10))
    assert data[parsed.structure.body_start :].startswith(b"body")


def test_bare_lf_header_end_before_crlf_one() -> None:
    data = b"Subject: a\n\nbody\r\n\r\nmore"
    assert parse_message(data).structure.body_start == data.index(b"body")
    data = b"Subject: a\r\n\r\nbody\n\nmore"
    assert parse_message(data).structure.body_start == data.index(b"body")


def test_preview_collapses_like_the_whole_text() -> None:
    text = b"  first \t line\r\n\r\n" + b"w" * 2000 + b" tail"
    assert (
        build_metadata(b"Subject: p\r\n\r\n" + text).preview
        == (" ".join(text.decode().split())[:PREVIEW_CHARS])
    )
    short = b"a  b\r\n" * 3
    assert build_metadata(b"Subject: p\r\n\r\n" + short).preview == "a b a b a b"


def test_a_header_that_never_ends_is_read_in_bounded_pieces() -> None:
    # No blank line: the header section is the whole message. It is split a batch at a
    # time, so what the parse holds does not grow with the message.
    import tracemalloc

    line = b"x" * 998 + b"\r\n"
    data = b"Subject: s\r\n" + line * 4000  # 4 MB of lines that are not fields
    tracemalloc.start()
    try:
        parsed = parse_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.envelope.subject == "s"
    assert peak < 1024 * 1024


def test_header_line_limit() -> None:
    # Line MAX_HEADER_LINES - 1 (counting from 0) is read; the next is not. The body
    # still starts after the blank line.
    data = (
        b"X-A: 1\r\n"
        + b" c\r\n" * (MAX_HEADER_LINES - 2)
        + b"Subject: last read\r\n"
        + b"Cc: too late\r\n"
        + b"\r\nbody"
    )
    parsed = parse_message(data)
    assert parsed.headers.get("subject") == "last read"
    assert parsed.headers.get("cc") is None
    assert parsed.structure.body_start == len(data) - 4
