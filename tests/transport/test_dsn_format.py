"""RFC 3464 DSNs as Python's email package reads them, and header safety (item 49)."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

import pytest

from transport.dsn import (
    BOUNCE_SIZE_LIMIT,
    DsnAction,
    DsnError,
    DsnRecipient,
    build_dsn,
    split_headers,
)
from transport.envelope import (
    Diagnostic,
    DsnReturn,
    OriginalRecipient,
    QueueEntry,
    ReceivedHop,
    Recipient,
    RecipientState,
)

ORIGINAL = (
    b"From: Alice <alice@local.test>\r\nTo: bob@remote.test\r\nSubject: quarterly report\r\n"
    b"Message-ID: <orig-1@local.test>\r\n\r\nThe numbers are in.\r\n"
)


def entry(
    *recipients: Recipient, ret: DsnReturn | None = None, envid: str | None = None
) -> QueueEntry:
    return QueueEntry(
        id="0123456789ABCDEF",
        sender="alice@local.test",
        recipients=recipients,
        arrival=1_700_000_000.0,
        size=len(ORIGINAL),
        next_attempt=0,
        ret=ret,
        envid=envid,
        hop=ReceivedHop("client.local.test", "192.0.2.1", "mail.local.test"),
    )


def failed(
    address: str = "bob@remote.test",
    text: str = "550 5.1.1 no such user",
    remote: str | None = "mx.remote.test",
) -> Recipient:
    return Recipient(
        address,
        orcpt=OriginalRecipient("rfc822", "robert@remote.test"),
        state=RecipientState.FAILED,
        diagnostic=Diagnostic("5.1.1", text, 550, remote),
        last_attempt=1_700_000_100.0,
    )


def make(
    e: QueueEntry, action: DsnAction = DsnAction.FAILED, original: bytes = ORIGINAL, **kw: object
) -> bytes:
    return build_dsn(
        e,
        [DsnRecipient(r, action) for r in e.recipients],
        original,
        to="alice@local.test",
        reporting_mta="mail.local.test",
        now=1_700_000_200.0,
        **kw,  # type: ignore[arg-type]
    )


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_structure_and_fields() -> None:
    dsn = parse(make(entry(failed(), failed("carol@remote.test"), envid="E1")))
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    human, status, returned = dsn.iter_parts()
    assert human.get_content_type() == "text/plain"
    assert "could not" in human.get_content()
    assert "<bob@remote.test> (host mx.remote.test): 550 5.1.1 no such user" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    per_message, bob, carol = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mail.local.test"
    assert per_message["Original-Envelope-Id"] == "E1"
    assert per_message["Received-From-MTA"] == "dns; client.local.test"
    assert per_message["Arrival-Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    assert bob["Original-Recipient"] == "rfc822;robert@remote.test"
    assert bob["Final-Recipient"] == "rfc822; bob@remote.test"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx.remote.test"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert bob["Last-Attempt-Date"] == "Tue, 14 Nov 2023 22:15:00 +0000"
    assert carol["Final-Recipient"] == "rfc822; carol@remote.test"
    assert returned.get_content_type() == "text/rfc822-headers"
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.local.test"
    assert dsn["References"] == "<orig-1@local.test>"


def test_delayed_report() -> None:
    deferred = Recipient(
        "bob@remote.test",
        state=RecipientState.DEFERRED,
        diagnostic=Diagnostic("4.4.1", "connect to mx.remote.test: Connection refused"),
    )
    dsn = parse(make(entry(deferred), DsnAction.DELAYED, will_retry_until=1_700_432_000.0))
    _m, recipient = list(dsn.iter_parts())[1].get_payload()
    assert recipient["Action"] == "delayed"
    assert recipient["Status"] == "4.4.1"
    assert recipient["Will-Retry-Until"] == "Sun, 19 Nov 2023 22:13:20 +0000"
    assert recipient["Diagnostic-Code"].startswith("X-mailhost; connect to")
    assert "keep trying" in next(dsn.iter_parts()).get_content()


def test_headers_only_by_default_and_full_on_request() -> None:
    headers = list(parse(make(entry(failed()))).iter_parts())[2]
    assert headers.get_payload(decode=True) == split_headers(ORIGINAL)[0]
    full = list(parse(make(entry(failed(), ret=DsnReturn.FULL))).iter_parts())[2]
    assert full.get_content_type() == "message/rfc822"
    inner = full.get_payload()[0]
    assert inner["Subject"] == "quarterly report"
    assert "The numbers are in." in inner.get_content()


def test_returned_content_is_truncated() -> None:
    big = ORIGINAL + (b"z" * 76 + b"\r\n") * 5000
    raw = make(entry(failed(), ret=DsnReturn.FULL), original=big)
    assert len(big) > 300_000
    assert len(raw) < BOUNCE_SIZE_LIMIT + 5_000
    assert list(parse(raw).iter_parts())[2].get_payload()[0]["Subject"] == "quarterly report"
    small = make(entry(failed()), original=ORIGINAL, size_limit=40)
    returned = list(parse(small).iter_parts())[2].get_payload(decode=True)
    assert returned == b"From: Alice <alice@local.test>\r\n"  # cut after a line end


def test_eight_bit_original_is_returned_intact() -> None:
    original = "Subject: Grüße\r\nFrom: a@local.test\r\n\r\nÄpfel\r\n".encode()
    raw = make(entry(failed(), ret=DsnReturn.FULL), original=original)
    assert "Äpfel".encode() in raw
    headers = make(entry(failed()), original=original)
    assert "Grüße".encode() in headers


def header_count(raw: bytes) -> int:
    return len(parse(raw).keys())


def test_hostile_values_cannot_add_headers() -> None:
    """Item 49: serialise, re-parse, and the header count is what we made."""
    hostile = failed(
        text="550 bad\r\nBcc: victim@example.test\r\n\r\nspoofed body",
        remote="mx.remote.test\r\nX-Injected: yes",
    )
    raw = make(entry(hostile))
    reference = make(entry(failed()))
    assert header_count(raw) == header_count(reference)
    assert b"\r\nBcc:" not in raw and b"\r\nX-Injected" not in raw
    for part in parse(raw).walk():
        assert "Bcc" not in part and "X-Injected" not in part
    _m, recipient = list(parse(raw).iter_parts())[1].get_payload()
    assert len(recipient.keys()) == 7


def test_encoded_word_and_long_values_stay_one_header() -> None:
    long_text = "550 " + "=?utf-8?q?a=0D=0ABcc:_x@y?= " * 40
    raw = make(entry(failed(text=long_text)))
    assert header_count(raw) == header_count(make(entry(failed())))
    _m, recipient = list(parse(raw).iter_parts())[1].get_payload()
    assert "Bcc" not in recipient


@pytest.mark.parametrize(
    "to",
    [
        "alice@local.test\r\nBcc: x@y",
        "a\n@b",
        "=?utf-8?q?a=0D=0ABcc:_x?=@evil.test",  # CR LF only after RFC 2047 decoding
        '"=?utf-8?q?a=0D=0ABcc:_x?="@evil.test',
    ],
)
def test_recipient_with_line_breaks_is_refused(to: str) -> None:
    e = entry(failed())
    with pytest.raises(DsnError):
        build_dsn(
            e,
            [DsnRecipient(e.recipients[0], DsnAction.FAILED)],
            ORIGINAL,
            to=to,
            reporting_mta="mail.local.test",
            now=0,
        )


def test_non_ascii_final_recipient_uses_the_utf8_type() -> None:
    raw = make(entry(failed("bjørn@remote.test")))
    _m, recipient = list(parse(raw).iter_parts())[1].get_payload()
    assert recipient["Final-Recipient"] == "utf-8; bjørn@remote.test"
