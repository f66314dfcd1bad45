"""What an iPhone does after adding the account, at 14.1 and 16.1, against the real
server (`mailhost serve`): FolderSync, Sync of the Inbox (initial, then the changes an SMTP
delivery makes), a Ping woken by an SMTP delivery, SendMail to another local user,
SmartReply and SmartForward, MoveItems, ItemOperations fetch of an attachment, Search.
Every WBXML body the server sends is also decoded by libwbxml (EasClient checks it)."""

from __future__ import annotations

import base64
import email
import email.policy
import smtplib
import threading
import time
from email.message import EmailMessage

import pytest
from eas_client import (
    EasClient,
    EasResponse,
    body_preference,
    fetch_attachment,
    folder_list,
    folder_sync,
    move_items,
    ping_request,
    search_mailbox,
    send_mail,
    smart,
    sync_collection,
    sync_options,
    sync_request,
    sync_result,
)
from harness import Instance, Server

ATTACHMENT = bytes(range(256)) * 40  # 10 KiB of every byte value


def _client(server: Server, instance: Instance, version: str, device: str) -> EasClient:
    return EasClient(
        server.port("https"),
        instance.client_context(check_hostname=False),
        instance.user,
        instance.password,
        host="127.0.0.1",
        version=version,
        device_id=device,
    )


def _deliver(server: Server, subject: str, *, attachment: bool = False) -> None:
    message = EmailMessage()
    message["From"] = "Carol Sender <carol@example.org>"
    message["To"] = "demo@example.test"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '.')}@example.org>"
    message.set_content(f"Body of {subject}.\nMore text.\n")
    if attachment:
        message.add_attachment(
            ATTACHMENT, maintype="application", subtype="octet-stream", filename="data.bin"
        )
    with smtplib.SMTP(*server.address("smtp")) as smtp:
        smtp.send_message(message, "carol@example.org", ["demo@example.test"])


def _mime(subject: str, to: str, body: str = "Sent from my phone") -> bytes:
    message = EmailMessage()
    message["From"] = "demo@example.test"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    return message.as_bytes(policy=email.policy.SMTP)


def _sync(client: EasClient, collection: str, key: str, **kw: object) -> EasResponse:
    options = sync_options(body_preference(2, 5000, preview=100), body_preference(4, 100000))
    return client.command(
        "Sync",
        sync_request(sync_collection(collection, key, options=options, **kw)),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_iphone_walk_on_the_real_server(server: Server, instance: Instance, version: str) -> None:
    instance.add_user("bob@example.test", "bob-pw")
    client = _client(server, instance, version, f"applwalk{version.replace('.', '')}")
    pinger = _client(server, instance, version, f"applwalk{version.replace('.', '')}")
    try:
        client.provision()
        pinger.policy_key = client.policy_key
        folders = folder_list(client.command("FolderSync", folder_sync("0")))
        inbox, sent, trash = folders.by_type[2], folders.by_type[5], folders.by_type[4]
        assert folders.count >= 6 and {"Inbox", "Sent Items", "Drafts"} <= set(folders.by_name)

        # Initial Sync: a key, no items; then the first delivery arrives as an Add.
        first = sync_result(_sync(client, inbox, "0"))
        assert first.status == 1 and not first.adds
        _deliver(server, "first message", attachment=True)
        changes = sync_result(_sync(client, inbox, first.key, window=50))
        assert changes.status == 1 and len(changes.adds) == 1
        (server_id, data) = next(iter(changes.adds.items()))
        assert data.text_of("Email:Subject") == "first message"
        assert data.text_of("AirSyncBase:Body/Type") == "2"
        assert "Body of first message" in (data.text_of("AirSyncBase:Body/Data") or "")
        reference = data.text_of("AirSyncBase:Attachments/Attachment/FileReference")
        assert reference and data.text_of("Email:Read") == "0"
        key = changes.key

        # Ping, woken by an SMTP delivery.
        replies: list[EasResponse] = []
        thread = threading.Thread(
            target=lambda: replies.append(pinger.command("Ping", ping_request(300, inbox)))
        )
        thread.start()
        time.sleep(0.3)  # let the Ping reach the server; the test does not depend on it
        started = time.monotonic()
        _deliver(server, "second message")
        thread.join(20)
        assert replies and replies[0].status_at("Status") == 2
        assert replies[0].text("Folders/Folder") == inbox
        assert time.monotonic() - started < 10
        update = sync_result(_sync(client, inbox, key))
        assert [d.text_of("Email:Subject") for d in update.adds.values()] == ["second message"]
        key = update.key

        # SendMail to another local user, saved in Sent Items.
        reply = client.command("SendMail", send_mail(_mime("hello bob", "bob@example.test"), "c1"))
        assert reply.status == 200 and reply.body == b""
        again = client.command("SendMail", send_mail(_mime("hello bob", "bob@example.test"), "c1"))
        assert again.status_at("Status") == 118  # MessagePreviouslySent
        bob_inbox = instance.inbox("bob@example.test")
        assert [m["Subject"] for m in bob_inbox] == ["hello bob"]

        # SmartReply and SmartForward of the first message (original appended / attached).
        item_id = server_id
        reply = client.command(
            "SmartReply",
            smart(
                "SmartReply",
                _mime("Re: first message", "bob@example.test", "Thanks!"),
                "c2",
                inbox,
                item_id,
            ),
        )
        assert reply.status == 200 and reply.body == b""
        reply = client.command(
            "SmartForward",
            smart(
                "SmartForward",
                _mime("Fw: first message", "bob@example.test", "FYI"),
                "c3",
                inbox,
                item_id,
            ),
        )
        assert reply.status == 200 and reply.body == b""
        bob_inbox = instance.inbox("bob@example.test")
        replied = next(m for m in bob_inbox if m["Subject"] == "Re: first message")
        assert "Thanks!" in replied.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "> Body of first message" in replied.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        forwarded = next(m for m in bob_inbox if m["Subject"] == "Fw: first message")
        attachments = list(forwarded.iter_attachments())
        assert [a.get_filename() for a in attachments] == ["data.bin"]
        assert attachments[0].get_content() == ATTACHMENT
        assert all("Bcc" not in m for m in bob_inbox)
        # The source now shows it was answered and forwarded; Sent Items has the copies.
        update = sync_result(_sync(client, inbox, key))
        assert update.changes[server_id].text_of("Email2:LastVerbExecuted") in ("1", "3")
        key = update.key
        sent_sync = sync_result(_sync(client, sent, "0"))
        sent_items = sync_result(_sync(client, sent, sent_sync.key))
        assert len(sent_items.adds) == 3

        # ItemOperations: the attachment, whole and as a range.
        fetched = client.command("ItemOperations", fetch_attachment(reference))
        assert fetched.status_at("Status") == 1
        assert fetched.status_at("Response/Fetch/Status") == 1
        data_text = fetched.text("Response/Fetch/Properties/Data") or ""
        assert base64.b64decode(data_text) == ATTACHMENT
        part = client.command("ItemOperations", fetch_attachment(reference, "10-19"))
        assert part.text("Response/Fetch/Properties/Range") == "10-19"
        assert part.text("Response/Fetch/Properties/Total") == str(len(ATTACHMENT))
        assert (
            base64.b64decode(part.text("Response/Fetch/Properties/Data") or "") == ATTACHMENT[10:20]
        )

        # Search.
        found = client.command("Search", search_mailbox("second"))
        assert found.status_at("Status") == 1
        assert found.status_at("Response/Store/Status") == 1
        assert found.text("Response/Store/Total") == "1"
        assert found.text("Response/Store/Result/Properties/Email:Subject") == "second message"
        none = client.command("Search", search_mailbox("no-such-word"))
        assert none.text("Response/Store/Total") == "0"
        assert none.text("Response/Store/Range") is not None

        # MoveItems to Deleted Items: recorded in both states (no echo afterwards).
        moved = client.command("MoveItems", move_items((server_id, inbox, trash)))
        assert moved.status_at("Response/Status") == 3
        new_id = moved.text("Response/DstMsgId")
        assert new_id and new_id.startswith(trash + ":")
        after = sync_result(_sync(client, inbox, key))
        assert server_id not in after.deletes and not after.adds
    finally:
        client.close()
        pinger.close()


def test_sent_copy_keeps_bcc_but_recipients_do_not_see_it(
    server: Server, instance: Instance
) -> None:
    instance.add_user("bob@example.test", "bob-pw")
    instance.add_user("eve@example.test", "eve-pw")
    client = _client(server, instance, "16.1", "applbcc")
    try:
        client.provision()
        folders = folder_list(client.command("FolderSync", folder_sync("0")))
        message = EmailMessage()
        message["From"] = "demo@example.test"
        message["To"] = "bob@example.test"
        message["Bcc"] = "eve@example.test"
        message["Subject"] = "secret copy"
        message.set_content("hi")
        reply = client.command("SendMail", send_mail(message.as_bytes(), "b1"))
        assert reply.status == 200 and reply.body == b""
        for user in ("bob@example.test", "eve@example.test"):
            (received,) = instance.inbox(user)
            assert received["Subject"] == "secret copy" and "Bcc" not in received
        sent = folders.by_type[5]
        first = sync_result(client.command("Sync", sync_request(sync_collection(sent, "0"))))
        options = sync_options(body_preference(4), mime_support=2)
        items = sync_result(
            client.command("Sync", sync_request(sync_collection(sent, first.key, options=options)))
        )
        (data,) = items.adds.values()
        mime = data.bytes_of("AirSyncBase:Body/Data") or b""
        saved = email.message_from_bytes(mime, policy=email.policy.default)
        assert saved["Bcc"] == "eve@example.test"
    finally:
        client.close()


def test_a_12_1_device_downloads_an_attachment_with_get_attachment(
    server: Server, instance: Instance
) -> None:
    # MS-ASCMD 2.2.1.7: up to 12.1 an attachment comes as the raw body of GetAttachment,
    # named by the FileReference Sync gave; from 14.0 on it is ItemOperations' job.
    client = _client(server, instance, "12.1", "getattach121")
    try:
        client.provision()
        inbox = folder_list(client.command("FolderSync", folder_sync("0"))).by_type[2]
        first = sync_result(_sync(client, inbox, "0"))
        _deliver(server, "file for an old phone", attachment=True)
        changes = sync_result(_sync(client, inbox, first.key, window=50))
        (data,) = changes.adds.values()
        reference = data.text_of("AirSyncBase:Attachments/Attachment/FileReference")
        assert reference

        got = client.command("GetAttachment", params={"AttachmentName": reference})
        assert got.status == 200
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.body == ATTACHMENT

        missing = reference.rsplit(":", 1)[0] + ":9"  # no such part
        assert client.command("GetAttachment", params={"AttachmentName": missing}).status == 500
        assert client.command("GetAttachment", params={"AttachmentName": "x"}).status == 500
        assert client.command("GetAttachment").status == 400  # no AttachmentName
        newer = client.command("GetAttachment", params={"AttachmentName": reference},
                               version="14.1")  # fmt: skip
        assert newer.status == 501  # not a 14.1 command
    finally:
        client.close()
