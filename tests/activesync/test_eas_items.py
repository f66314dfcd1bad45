"""MoveItems, ItemOperations and GetItemEstimate over the in-process server."""

from __future__ import annotations

import base64
import email.policy
import struct
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    MailEnv,
    body_preference,
    fetch_attachment,
    folder_list,
    folder_sync,
    move_items,
    simple_message,
    start_mail_env,
    sync_collection,
    sync_request,
    sync_result,
)
from eas_env import ALICE, BOB, CAROL
from wbxml_tool import check_with_libwbxml

from protocols.activesync.commands.itemoperations import multipart_body, parse_range
from protocols.activesync.wbxml import E

MBX = ALICE.mailbox_id
PAYLOAD = bytes(range(256)) * 8


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    return start_mail_env(make_env, tmp_path, accounts=(ALICE, BOB, CAROL))


def _ready(mail: MailEnv, **kw: Any) -> tuple[EasClient, Any]:
    client = mail.client(**kw)
    client.provision()
    return client, folder_list(client.command("FolderSync", folder_sync("0")))


def _synced(client: EasClient, collection: str) -> str:
    key = sync_result(client.command("Sync", sync_request(sync_collection(collection, "0")))).key
    return sync_result(client.command("Sync", sync_request(sync_collection(collection, key)))).key


def test_move_items_statuses_and_both_states_know(mail: MailEnv) -> None:
    uid = mail.deliver(MBX, simple_message("to archive"))
    client, folders = _ready(mail)
    inbox, archive = folders.by_type[2], folders.by_name["Archive"]
    inbox_key, archive_key = _synced(client, inbox), _synced(client, archive)
    reply = client.command(
        "MoveItems",
        move_items(
            (f"{inbox}:{uid}", inbox, archive),
            (f"{inbox}:{uid}", inbox, archive),  # already moved
            (f"{inbox}:1", inbox, inbox),
            (f"{inbox}:1", inbox, "nowhere"),
            ("garbage", "nowhere", archive),
        ),
    )
    statuses = [r.text_of("Status") for r in reply.document.findall("Response")]
    assert statuses == ["3", "1", "4", "2", "1"]
    new_id = reply.document.findall("Response")[0].text_of("DstMsgId")
    assert new_id and new_id.startswith(archive + ":")
    inbox_after = sync_result(client.command("Sync", sync_request(sync_collection(inbox,
                                                                                  inbox_key))))  # fmt: skip
    archive_after = sync_result(client.command("Sync", sync_request(sync_collection(
        archive, archive_key))))  # fmt: skip
    assert not inbox_after.deletes and not archive_after.adds  # nothing echoed


def test_item_operations_fetch_forms_ranges_multipart_and_errors(mail: MailEnv) -> None:
    message = EmailMessage()
    message["From"] = "carol@example.org"
    message["To"] = "alice@example.org"
    message["Subject"] = "with attachment"
    message.set_content("The body text.")
    message.add_attachment(PAYLOAD, maintype="application", subtype="octet-stream",
                           filename="blob.bin")  # fmt: skip
    uid = mail.deliver(MBX, message.as_bytes(policy=email.policy.SMTP))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    reference = f"{inbox}:{uid}:2"
    whole = client.command("ItemOperations", fetch_attachment(reference))
    assert whole.text("Response/Fetch/Properties/AirSyncBase:ContentType") == (
        "application/octet-stream"
    )
    assert base64.b64decode(whole.text("Response/Fetch/Properties/Data") or "") == PAYLOAD
    bad_range = client.command("ItemOperations", fetch_attachment(reference, "5000-6000"))
    assert bad_range.status_at("Response/Fetch/Status") == 8
    bad_ref = client.command("ItemOperations", fetch_attachment(f"{inbox}:{uid}:9"))
    assert bad_ref.status_at("Response/Fetch/Status") == 15
    assert client.command("ItemOperations", fetch_attachment("nonsense")).status_at(
        "Response/Fetch/Status") == 15  # fmt: skip
    # Multipart: the data follows the WBXML as part 1.
    multi = client.command("ItemOperations", fetch_attachment(reference, "0-99"),
                           headers={"MS-ASAcceptMultiPart": "T"})  # fmt: skip
    assert multi.headers["content-type"] == "application/vnd.ms-sync.multipart"
    count = struct.unpack_from("<i", multi.body)[0]
    assert count == 2
    (o0, n0), (o1, n1) = (struct.unpack_from("<ii", multi.body, 4 + 8 * i) for i in range(2))
    document = check_with_libwbxml(multi.body[o0 : o0 + n0])
    assert document.text_of("Response/Fetch/Properties/Part") == "1"
    assert multi.body[o1 : o1 + n1] == PAYLOAD[:100]
    # The item itself, by CollectionId + ServerId and by LongId.
    item = E(
        "ItemOperations:ItemOperations",
        E(
            "ItemOperations:Fetch",
            E("ItemOperations:Store", "Mailbox"),
            E("AirSync:CollectionId", inbox),
            E("AirSync:ServerId", f"{inbox}:{uid}"),
            E("ItemOperations:Options", body_preference(1)),
        ),
        E(
            "ItemOperations:Fetch",
            E("ItemOperations:Store", "Mailbox"),
            E("Search:LongId", f"{inbox}:{uid}"),
        ),
        E(
            "ItemOperations:Fetch",
            E("ItemOperations:Store", "Mailbox"),
            E("Search:LongId", f"{inbox}:777"),
        ),
    )
    fetched = client.command("ItemOperations", item)
    responses = fetched.document.findall("Response/Fetch")
    assert [r.text_of("Status") for r in responses] == ["1", "1", "6"]
    assert "The body text." in (responses[0].text_of("Properties/AirSyncBase:Body/Data") or "")
    assert responses[1].text_of("Search:LongId") == f"{inbox}:{uid}"
    unknown_store = client.command("ItemOperations", E("ItemOperations:ItemOperations", E(
        "ItemOperations:Fetch", E("ItemOperations:Store", "DocumentLibrary"))))  # fmt: skip
    assert unknown_store.status_at("Response/Fetch/Status") == 9


def test_empty_folder_contents(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    trash = folders.by_type[4]
    mail.deliver(MBX, simple_message("junk 1"), folder="Deleted Items")
    mail.deliver(MBX, simple_message("junk 2"), folder="Deleted Items")
    mail.store.open_mailbox(MBX).create_folder("Deleted Items/Old")
    reply = client.command("ItemOperations", E("ItemOperations:ItemOperations", E(
        "ItemOperations:EmptyFolderContents", E("AirSync:CollectionId", trash),
        E("ItemOperations:Options", E("ItemOperations:DeleteSubFolders")))))  # fmt: skip
    assert reply.status_at("Response/EmptyFolderContents/Status") == 1
    mailbox = mail.store.open_mailbox(MBX)
    assert len(mailbox.folder_by_id(trash).snapshot()) == 0
    assert "Deleted Items/Old" not in [f.name for f in mailbox.list_folders()]


def test_get_item_estimate(mail: MailEnv) -> None:
    for i in range(4):
        mail.deliver(MBX, simple_message(f"count {i}"))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    key = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0")))).key

    def estimate(collection: str, sync_key: str) -> tuple[str | None, str | None]:
        reply = client.command("GetItemEstimate", E(
            "GetItemEstimate:GetItemEstimate", E("GetItemEstimate:Collections", E(
                "GetItemEstimate:Collection", E("AirSync:SyncKey", sync_key),
                E("GetItemEstimate:CollectionId", collection)))))  # fmt: skip
        return (reply.text("Response/Status"), reply.text("Response/Collection/Estimate"))

    assert estimate(inbox, key) == ("1", "4")
    assert estimate(inbox, "0") == ("3", None)
    assert estimate(inbox, "{00}9") == ("4", None)
    assert estimate("nowhere", key) == ("2", None)


def test_multipart_layout_and_ranges() -> None:
    body = multipart_body(b"WBXML", [b"one", b"two!"])
    assert struct.unpack_from("<i", body)[0] == 3
    offsets = [struct.unpack_from("<ii", body, 4 + 8 * i) for i in range(3)]
    assert [body[o : o + n] for o, n in offsets] == [b"WBXML", b"one", b"two!"]
    assert parse_range("0-9", 5) == (0, 4)
    assert parse_range("9-0", 50) is None
    assert parse_range("x", 50) is None
    assert parse_range(None, 0) == (0, -1)


def test_conversation_move_and_search_by_conversation(mail: MailEnv) -> None:
    first = simple_message("thread start")
    reply = (
        b"From: carol@example.org\r\nTo: alice@example.org\r\nSubject: Re: thread start\r\n"
        b"Message-ID: <r1@example.org>\r\nIn-Reply-To: " + first.split(b"Message-ID: ")[1]
        .split(b"\r\n")[0] + b"\r\nReferences: " + first.split(b"Message-ID: ")[1]
        .split(b"\r\n")[0] + b"\r\n\r\nreply\r\n"
    )  # fmt: skip
    mail.deliver(MBX, first)
    mail.deliver(MBX, reply)
    mail.deliver(MBX, simple_message("unrelated"))
    client, folders = _ready(mail)
    inbox, archive = folders.by_type[2], folders.by_name["Archive"]
    key = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0")))).key
    items = sync_result(client.command("Sync", sync_request(sync_collection(inbox, key))))
    by_subject = {d.text_of("Email:Subject"): d for d in items.adds.values()}
    conversation = by_subject["thread start"].bytes_of("Email2:ConversationId")
    assert conversation == by_subject["Re: thread start"].bytes_of("Email2:ConversationId")
    assert conversation != by_subject["unrelated"].bytes_of("Email2:ConversationId")
    found = client.command("Search", E("Search:Search", E(
        "Search:Store", E("Search:Name", "Mailbox"),
        E("Search:Query", E("Search:And", E("Search:ConversationId", conversation))),
        E("Search:Options", E("Search:Range", "0-9")))))  # fmt: skip
    assert found.text("Response/Store/Total") == "2"
    moved = client.command("ItemOperations", E("ItemOperations:ItemOperations", E(
        "ItemOperations:Move", E("ItemOperations:ConversationId", conversation),
        E("ItemOperations:DstFldId", archive))))  # fmt: skip
    assert moved.status_at("Response/Move/Status") == 1
    names = mail.store.open_mailbox(MBX)
    assert len(names.folder_by_id(archive).snapshot()) == 2
    assert len(names.inbox.snapshot()) == 1
