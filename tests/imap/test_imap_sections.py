"""MIME part numbering and section extraction (RFC 3501 6.4.5), HEADER.FIELDS, BINARY."""

from __future__ import annotations

import pytest

from protocols.imap.commands import Partial, Section, SectionText
from protocols.imap.limits import MAX_MIME_DEPTH, MAX_MIME_PARTS
from protocols.imap.sections import (
    UnknownTransferEncoding,
    apply_partial,
    decode_transfer_encoding,
    extract_section,
    filter_header_fields,
    parse_spans,
    resolve_section,
)


def part(ctype: str, body: bytes, extra: str = "") -> bytes:
    return f"Content-Type: {ctype}\r\n{extra}\r\n".encode() + body


def multipart(boundary: str, *parts: bytes, sub: str = "mixed") -> tuple[str, bytes]:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return (
        f'multipart/{sub}; boundary="{boundary}"',
        b"preamble\r\n" + body + b"--" + boundary.encode() + b"--\r\n",
    )


# The example structure of RFC 3501 6.4.5.
ct_32, body_32 = multipart(
    "b32", part("text/plain", b"3.1 text"), part("application/octet-stream", b"3.2 data")
)
msg3 = b"Subject: three\r\n" + part(ct_32, body_32)
ct_4222, body_4222 = multipart(
    "b4222",
    part("text/plain", b"4.2.2.1 plain"),
    part("text/richtext", b"4.2.2.2 rich"),
    sub="alternative",
)
ct_42, body_42 = multipart("b42", part("text/plain", b"4.2.1 text"), part(ct_4222, body_4222))
msg42 = b"Subject: four-two\r\n" + part(ct_42, body_42)
ct_4, body_4 = multipart(
    "b4", part("image/gif", b"GIF89a", "Content-ID: <gif>\r\n"), part("message/rfc822", msg42)
)
ct_top, body_top = multipart(
    "top",
    part("text/plain", b"1 text"),
    part("application/octet-stream", b"2 data"),
    part("message/rfc822", msg3),
    part(ct_4, body_4),
)
MESSAGE = b"From: a@example.org\r\nSubject: top\r\n" + part(ct_top, body_top)
ROOT = parse_spans(MESSAGE)


def get(path: tuple[int, ...], text: SectionText | None = None) -> bytes | None:
    return extract_section(MESSAGE, ROOT, Section(part=path, text=text))


def test_rfc3501_numbering() -> None:
    assert get(()) == MESSAGE
    assert get((), SectionText.HEADER) == MESSAGE[: MESSAGE.index(b"\r\n\r\n") + 4]
    assert get((), SectionText.TEXT) == body_top
    assert get((1,)) == b"1 text"
    assert get((2,)) == b"2 data"
    assert get((3,)) == msg3
    assert get((3,), SectionText.HEADER) == msg3[: msg3.index(b"\r\n\r\n") + 4]
    assert get((3,), SectionText.TEXT) == body_32
    assert get((3, 1)) == b"3.1 text"
    assert get((3, 2)) == b"3.2 data"
    assert get((4,)) == body_4
    assert get((4, 1)) == b"GIF89a"
    assert get((4, 1), SectionText.MIME) == b"Content-Type: image/gif\r\nContent-ID: <gif>\r\n\r\n"
    assert get((4, 2)) == msg42
    assert (get((4, 2), SectionText.HEADER) or b"").startswith(b"Subject: four-two\r\n")
    assert get((4, 2), SectionText.TEXT) == body_42
    assert get((4, 2, 1)) == b"4.2.1 text"
    assert get((4, 2, 2)) == body_4222
    assert get((4, 2, 2, 1)) == b"4.2.2.1 plain"
    assert get((4, 2, 2, 2)) == b"4.2.2.2 rich"


def test_missing_and_invalid_sections() -> None:
    assert get((5,)) is None
    assert get((1, 1)) is None  # a text part has no sub-parts
    assert get((1,), SectionText.HEADER) is None  # HEADER needs message/rfc822
    assert get((4, 3)) is None
    assert resolve_section(ROOT, Section(text=SectionText.MIME)) is None


def test_single_part_message_numbering() -> None:
    raw = b"Subject: x\r\nContent-Type: text/plain\r\n\r\nbody text\r\n"
    root = parse_spans(raw)
    assert extract_section(raw, root, Section(part=(1,))) == b"body text\r\n"
    assert extract_section(raw, root, Section(part=(1,), text=SectionText.MIME)) == raw[:-11]
    assert extract_section(raw, root, Section(part=(2,))) is None


def test_message_rfc822_with_single_part_inner() -> None:
    inner = b"Subject: in\r\n\r\ninner body"
    raw = b"Content-Type: message/rfc822\r\n\r\n" + inner
    root = parse_spans(raw)
    assert extract_section(raw, root, Section(part=(1,))) == inner
    assert extract_section(raw, root, Section(part=(1, 1))) == b"inner body"
    assert extract_section(raw, root, Section(part=(1,), text=SectionText.TEXT)) == b"inner body"


def test_resolve_gives_offsets_for_disk_reads() -> None:
    rng = resolve_section(ROOT, Section(part=(4, 2, 1)))
    assert rng is not None
    assert MESSAGE[rng.start : rng.end] == b"4.2.1 text"


def test_header_fields_filter() -> None:
    header = (
        b"From: a@example.org\r\n"
        b"Subject: a folded\r\n subject line\r\n"
        b"X-Spam: yes\r\n"
        b"to: b@example.org\r\n"
        b"\r\n"
    )
    assert filter_header_fields(header, ["SUBJECT", "To"]) == (
        b"Subject: a folded\r\n subject line\r\nto: b@example.org\r\n\r\n"
    )
    assert filter_header_fields(header, ["subject", "x-spam", "to"], exclude=True) == (
        b"From: a@example.org\r\n\r\n"
    )
    assert filter_header_fields(b"From: x\r\n", ["from"]) == b"From: x\r\n"  # no blank line
    assert filter_header_fields(b"From: x\n\n", ["nothing"]) == b"\n"
    sec = Section(text=SectionText.HEADER_FIELDS, fields=("subject",))
    assert extract_section(MESSAGE, ROOT, sec) == b"Subject: top\r\n\r\n"
    sec = Section(part=(3,), text=SectionText.HEADER_FIELDS_NOT, fields=("content-type",))
    assert extract_section(MESSAGE, ROOT, sec) == b"Subject: three\r\n\r\n"


def test_partial() -> None:
    assert apply_partial(b"0123456789", Partial(origin=2, count=3)) == b"234"
    assert apply_partial(b"0123456789", Partial(origin=8, count=100)) == b"89"
    assert apply_partial(b"0123456789", Partial(origin=50, count=1)) == b""
    assert apply_partial(b"abc", None) == b"abc"


def test_binary_decoding() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n'
        b"--x\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC\r\n/w==\r\n"
        b"--x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9=\r\n!\r\n"
        b"--x\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
        b"--x--\r\n"
    )
    root = parse_spans(raw)
    assert extract_section(raw, root, Section(part=(1,)), binary=True) == b"\x00\x01\x02\xff"
    assert extract_section(raw, root, Section(part=(2,)), binary=True) == "café!".encode()
    assert extract_section(raw, root, Section(part=(1,))) == b"AAEC\r\n/w=="
    with pytest.raises(UnknownTransferEncoding):
        extract_section(raw, root, Section(part=(3,)), binary=True)
    assert decode_transfer_encoding(b"abc", "8BIT") == b"abc"


def test_lf_only_message() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=z\n\n--z\n\none\n--z\n\ntwo\n--z--\n"
    root = parse_spans(raw)
    assert extract_section(raw, root, Section(part=(1,))) == b"one"
    assert extract_section(raw, root, Section(part=(2,))) == b"two"


def test_unterminated_multipart_and_prefix_boundary() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=ab\r\n\r\n--ab\r\n\r\none\r\n--abc\r\n--ab\r\n\r\ntwo"
    root = parse_spans(raw)
    assert extract_section(raw, root, Section(part=(1,))) == b"one\r\n--abc"
    assert extract_section(raw, root, Section(part=(2,))) == b"two"


def test_nesting_bomb_is_bounded() -> None:
    depth = 10_000
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(depth)
    )
    raw = head + b"\r\nleaf"
    root = parse_spans(raw)
    levels = 0
    node = root
    while node.parts:
        node = node.parts[0]
        levels += 1
    assert levels <= MAX_MIME_DEPTH


def test_part_count_bomb_is_bounded() -> None:
    raw = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n" + b"--q\r\n\r\nx\r\n" * (
        MAX_MIME_PARTS + 50
    )
    root = parse_spans(raw)
    assert len(root.parts) < MAX_MIME_PARTS
