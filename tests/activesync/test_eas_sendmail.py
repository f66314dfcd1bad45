"""SendMail, SmartReply and SmartForward: the submission rules (transport.submission) and
the commands in both forms over the in-process server with a real store."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    MailEnv,
    folder_list,
    folder_sync,
    send_mail,
    simple_message,
    smart,
    start_mail_env,
    sync_collection,
    sync_request,
    sync_result,
)
from eas_env import ALICE, BOB, CAROL

from protocols.activesync.wbxml import E
from transport.submission import (
    MAX_RECIPIENTS,
    Outcome,
    SubmissionError,
    prepare,
    valid_address,
)

ACCOUNTS = (ALICE, BOB, CAROL)
MINE = ("alice@example.org", "a.liddell@example.org")


def _raw(headers: str, body: str = "hi\r\n") -> bytes:
    return (headers.replace("\n", "\r\n") + "\r\n" + body).encode()


# --- the submission rules ------------------------------------------------------------------


def test_prepare_strips_bcc_adds_ids_and_collects_recipients() -> None:
    raw = _raw(
        'From: Alice <alice@example.org>\nTo: bob@example.org, "C" <carol@Example.ORG>\n'
        "Bcc: eve@example.org,\n  bob@example.org\nSubject: s\n"
    )
    prepared = prepare(raw, addresses=MINE, hostname="mx.example.org", now=1_700_000_000)
    assert prepared.recipients == ("bob@example.org", "carol@example.org", "eve@example.org")
    delivered = email.message_from_bytes(prepared.message, policy=email.policy.default)
    assert "Bcc" not in delivered and delivered["Message-ID"].endswith("@mx.example.org>")
    assert delivered["Date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    saved = email.message_from_bytes(prepared.saved, policy=email.policy.default)
    assert "eve@example.org" in saved["Bcc"]
    assert prepared.sender == "alice@example.org"
    assert prepared.message.endswith(b"\r\n\r\nhi\r\n")


def test_prepare_keeps_ids_and_uses_an_alias_as_sender() -> None:
    raw = _raw(
        "From: a.liddell@example.org\nTo: bob@example.org\nMessage-ID: <own@id>\n"
        "Date: Mon, 01 Jan 2024 00:00:00 +0000\n"
    )
    prepared = prepare(raw, addresses=MINE, hostname="h")
    assert prepared.message_id == "own@id" and prepared.sender == "a.liddell@example.org"
    assert prepared.message.count(b"Message-ID") == 1 and prepared.message.count(b"Date:") == 1


@pytest.mark.parametrize(
    ("headers", "outcome"),
    [
        ("From: mallory@evil.example\nTo: bob@example.org\n", Outcome.SENDER_NOT_OWNED),
        ("From: alice@example.org\nSender: x@evil.example\nTo: b@example.org\n",
         Outcome.SENDER_NOT_OWNED),
        ("From: alice@example.org\nSubject: nobody\n", Outcome.NO_RECIPIENTS),
        # CVE-2023-27043: getaddresses would read this as bob@example.org.
        ("From: alice@example.org\nTo: alice@example.org)<bob@example.org>\n",
         Outcome.INVALID_MESSAGE),
        ("From: alice@example.org\nTo: bob@localhost\n", Outcome.INVALID_MESSAGE),
        ("From: alice@example.org\nTo: \"a b\"@example.org\n", Outcome.INVALID_MESSAGE),
        ("From: alice@example.org\nTo: bob@[127.0.0.1]\n", Outcome.INVALID_MESSAGE),
    ],
)  # fmt: skip
def test_prepare_refuses(headers: str, outcome: Outcome) -> None:
    with pytest.raises(SubmissionError) as caught:
        prepare(_raw(headers), addresses=MINE, hostname="h")
    assert caught.value.outcome is outcome


def test_prepare_limits() -> None:
    many = ", ".join(f"u{i}@example.org" for i in range(MAX_RECIPIENTS + 1))
    with pytest.raises(SubmissionError) as caught:
        prepare(_raw(f"From: alice@example.org\nTo: {many}\n"), addresses=MINE, hostname="h")
    assert caught.value.outcome is Outcome.TOO_MANY_RECIPIENTS
    with pytest.raises(SubmissionError) as caught:
        prepare(b"x" * 2000, addresses=MINE, hostname="h", max_size=1000)
    assert caught.value.outcome is Outcome.TOO_LARGE
    assert valid_address("Bob@Example.ORG") == "Bob@example.org"
    assert valid_address("b@bücher.example") == "b@bücher.example"
    assert valid_address("b@-bad.example") is None


# --- the commands --------------------------------------------------------------------------


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    return start_mail_env(make_env, tmp_path, accounts=ACCOUNTS)


def _mime(to: str, subject: str = "s", body: str = "typed on the phone", sender: str =
          "alice@example.org", bcc: str | None = None) -> bytes:  # fmt: skip
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    if bcc:
        message["Bcc"] = bcc
    message["Subject"] = subject
    message.set_content(body)
    return message.as_bytes(policy=email.policy.SMTP)


def _inbox(mail: MailEnv, account: Any) -> list[email.message.EmailMessage]:
    folder = mail.store.open_mailbox(account.mailbox_id).inbox
    out = []
    for uid in folder.snapshot().uids:
        parsed = email.message_from_bytes(folder.read_message(uid), policy=email.policy.default)
        out.append(parsed)
    return out


def _client(mail: MailEnv, version: str = "16.1") -> EasClient:
    client = mail.client(version=version, device_id=f"sender{version.replace('.', '')}")
    client.provision()
    return client


@pytest.mark.parametrize(
    ("mime_kw", "status"),
    [
        ({"to": "nobody@example.org"}, 116),  # no such local user
        ({"to": "someone@remote.example"}, 120),  # no send connector for it
        ({"to": "bob@example.org", "sender": "mallory@example.org"}, 130),
        ({"to": "bob@example.org, alice@example.org)<bob@example.org>"}, 107),
    ],
)
def test_send_mail_failures_carry_common_statuses(mail: MailEnv, mime_kw: Any,
                                                  status: int) -> None:  # fmt: skip
    client = _client(mail)
    reply = client.command("SendMail", send_mail(_mime(**mime_kw), "x1"))
    assert reply.status == 200 and reply.status_at("Status") == status
    assert not _inbox(mail, BOB)
    no_recipient = EmailMessage()
    no_recipient["From"] = "alice@example.org"
    no_recipient.set_content("x")
    reply = client.command("SendMail", send_mail(no_recipient.as_bytes(), "x2"))
    assert reply.status_at("Status") == 119


def test_send_mail_delivers_saves_and_is_idempotent(mail: MailEnv) -> None:
    client = _client(mail)
    reply = client.command("SendMail", send_mail(_mime("bob@example.org", bcc="carol@example.org"),
                                                 "once"))  # fmt: skip
    assert reply.status == 200 and reply.body == b""
    assert client.command("SendMail", send_mail(_mime("bob@example.org"), "once")).status_at(
        "Status") == 118  # fmt: skip
    (bob,) = _inbox(mail, BOB)
    (carol,) = _inbox(mail, CAROL)
    assert "Bcc" not in bob and "Bcc" not in carol
    assert "Received: from" in bob.as_string() and "with ActiveSync" in bob.as_string()
    sent = mail.store.open_mailbox(ALICE.mailbox_id).folder("Sent Items").snapshot()
    assert len(sent) == 1
    unsaved = client.command("SendMail", send_mail(_mime("bob@example.org"), "twice",
                                                   save=False))  # fmt: skip
    assert unsaved.status == 200
    assert len(mail.store.open_mailbox(ALICE.mailbox_id).folder("Sent Items").snapshot()) == 1


def test_legacy_raw_send_mail_and_smart_reply(mail: MailEnv) -> None:
    uid = mail.deliver(ALICE.mailbox_id, simple_message("legacy original",
                                                       body="Original words.\r\n"))  # fmt: skip
    client = _client(mail, "12.1")
    inbox = mail.folder(ALICE.mailbox_id).id
    reply = client.command("SendMail", body=_mime("bob@example.org", "raw"),
                           content_type="message/rfc822", params={"SaveInSent": "T"})  # fmt: skip
    assert reply.status == 200 and reply.body == b""
    reply = client.command(
        "SmartReply", body=_mime("carol@example.org", "Re: legacy", "My answer."),
        content_type="message/rfc822", params={"ItemId": str(uid), "CollectionId": inbox},
    )  # fmt: skip
    assert reply.status == 200
    (answer,) = _inbox(mail, CAROL)
    text = answer.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "My answer." in text and "> Original words." in text
    missing = client.command(
        "SmartReply", body=_mime("carol@example.org"), content_type="message/rfc822",
        params={"ItemId": "999", "CollectionId": inbox},
    )  # fmt: skip
    assert missing.status == 500  # 12.1 has no status in the body
    assert len(mail.store.open_mailbox(ALICE.mailbox_id).folder("Sent Items").snapshot()) == 1


def test_smart_forward_carries_attachments_and_replace_mime_does_not(mail: MailEnv) -> None:
    original = EmailMessage()
    original["From"] = "carol@example.org"
    original["To"] = "alice@example.org"
    original["Subject"] = "report"
    original.set_content("<p>See the <b>report</b>.</p>", subtype="html")
    original.add_attachment(b"%PDF-1.4 data", maintype="application", subtype="pdf",
                            filename="report.pdf")  # fmt: skip
    uid = mail.deliver(ALICE.mailbox_id, original.as_bytes(policy=email.policy.SMTP))
    inbox = mail.folder(ALICE.mailbox_id).id
    client = _client(mail)
    forward = smart("SmartForward", _mime("bob@example.org", "Fw: report", "FYI"), "f1",
                    inbox, str(uid))  # fmt: skip
    assert client.command("SmartForward", forward).status == 200
    reply = smart("SmartReply", _mime("bob@example.org", "Re: report", "complete text"), "f2",
                  inbox, f"{inbox}:{uid}", replace_mime=True)  # fmt: skip
    assert client.command("SmartReply", reply).status == 200
    forwarded, replied = _inbox(mail, BOB)
    (attachment,) = forwarded.iter_attachments()
    assert attachment.get_filename() == "report.pdf"
    assert attachment.get_content() == b"%PDF-1.4 data"
    assert "FYI" in forwarded.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Forwarded message" in forwarded.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert replied.get_body(("plain",)).get_content().strip() == "complete text"  # type: ignore[union-attr]
    assert not list(replied.iter_attachments())
    # The source shows both verbs to a device (14.0+).
    folders = folder_list(client.command("FolderSync", folder_sync("0")))
    key = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0")))).key
    (data,) = sync_result(client.command("Sync", sync_request(sync_collection(inbox, key)))
                          ).adds.values()  # fmt: skip
    assert data.text_of("Email2:LastVerbExecuted") == "1"
    assert data.text_of("Email2:LastVerbExecutionTime")
    assert folders.by_type[2] == inbox
    unknown = smart("SmartReply", _mime("bob@example.org"), "f3", inbox, f"{inbox}:4242")
    assert client.command("SmartReply", unknown).status_at("Status") == 150
    broken = E("ComposeMail:SendMail", E("ComposeMail:ClientId", "x"))
    assert client.command("SendMail", broken).status_at("Status") == 101
