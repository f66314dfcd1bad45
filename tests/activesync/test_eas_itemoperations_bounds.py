"""ItemOperations holds a budget for its whole response (MAX_ITEMOPERATIONS_RESPONSE_BYTES,
Status 11 past it), and large responses are encoded off the event loop."""

from __future__ import annotations

import base64
import email.policy
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    MailEnv,
    body_preference,
    folder_list,
    folder_sync,
    ping_request,
    start_mail_env,
)
from eas_env import ALICE, BOB, CAROL, default_settings

from protocols.activesync import app as app_module
from protocols.activesync import wbxml
from protocols.activesync.commands import itemoperations
from protocols.activesync.wbxml import E, Element

ACCOUNTS = (ALICE, BOB, CAROL)
MBX = ALICE.mailbox_id
PAYLOAD = bytes(range(256)) * 400  # 100 KB
BUDGET = 250_000  # two copies of PAYLOAD fit, a third does not


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    return start_mail_env(
        make_env, tmp_path, accounts=ACCOUNTS, settings=default_settings(heartbeat_min=1)
    )


def _deliver_attachment(mail: MailEnv) -> int:
    message = EmailMessage()
    message["From"] = "carol@example.org"
    message["To"] = "alice@example.org"
    message["Subject"] = "large attachment"
    message.set_content("The body text.")
    message.add_attachment(PAYLOAD, maintype="application", subtype="octet-stream",
                           filename="blob.bin")  # fmt: skip
    return mail.deliver(MBX, message.as_bytes(policy=email.policy.SMTP))


def _ready(mail: MailEnv) -> tuple[EasClient, str]:
    client = mail.client(device_id="itemops")
    client.provision()
    return client, folder_list(client.command("FolderSync", folder_sync("0"))).by_type[2]


def _fetch(reference: str) -> Element:
    return E(
        "ItemOperations:Fetch",
        E("ItemOperations:Store", "Mailbox"),
        E("AirSyncBase:FileReference", reference),
    )


def test_fetches_past_the_response_budget_get_status_11(
    mail: MailEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(itemoperations, "MAX_ITEMOPERATIONS_RESPONSE_BYTES", BUDGET)
    uid = _deliver_attachment(mail)
    client, inbox = _ready(mail)
    reference = f"{inbox}:{uid}:2"
    item = E(
        "ItemOperations:Fetch",
        E("ItemOperations:Store", "Mailbox"),
        E("AirSync:CollectionId", inbox),
        E("AirSync:ServerId", f"{inbox}:{uid}"),
        E("ItemOperations:Options", body_preference(1)),
    )
    many = [_fetch(reference) for _ in range(itemoperations.MAX_OPERATIONS - 1)]
    reply = client.command("ItemOperations", E("ItemOperations:ItemOperations", *many, item))
    assert reply.status == 200 and reply.document is not None
    assert reply.status_at("Status") == 1
    fetches = reply.document.findall("Response/Fetch")
    statuses = [f.text_of("Status") for f in fetches]
    # Two copies fit; the rest of the attachments do not; the small message body still
    # fits in what is left (the budget counts bytes, not operations).
    assert statuses == ["1", "1"] + ["11"] * (len(many) - 2) + ["1"]
    for fetch in fetches[:2]:
        assert base64.b64decode(fetch.text_of("Properties/Data") or "") == PAYLOAD
    assert all(f.find("Properties") is None for f in fetches[2:-1])
    assert len(reply.body) < BUDGET * 4 // 3 + 10_000  # two copies in base64, and the rest
    # A new request has a budget of its own.
    alone = client.command("ItemOperations", E("ItemOperations:ItemOperations", many[0]))
    assert alone.status_at("Response/Fetch/Status") == 1
    # An item whose rendered data does not fit in what is left is Status 11 as well.
    monkeypatch.setattr(itemoperations, "MAX_ITEMOPERATIONS_RESPONSE_BYTES", 2 * len(PAYLOAD))
    full = client.command("ItemOperations", E("ItemOperations:ItemOperations", *many[:2], item))
    assert full.document is not None
    assert [f.text_of("Status") for f in full.document.findall("Response/Fetch")] == [
        "1",
        "1",
        "11",
    ]


def test_a_large_response_is_encoded_in_a_worker_thread(
    mail: MailEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[tuple[int, str]] = []
    real_encode = wbxml.encode

    def spy(document: Element) -> bytes:
        data = real_encode(document)
        threads.append((len(data), threading.current_thread().name))
        return data

    monkeypatch.setattr(app_module, "encode", spy)
    uid = _deliver_attachment(mail)
    client, inbox = _ready(mail)
    threads.clear()
    large = client.command(
        "ItemOperations", E("ItemOperations:ItemOperations", _fetch(f"{inbox}:{uid}:2"))
    )
    assert large.status_at("Response/Fetch/Status") == 1
    small = client.command("Ping", ping_request(1))  # Status 3: a tiny answer
    assert small.status_at("Status") == 3
    (big_size, big_thread), (small_size, small_thread) = threads
    assert big_size > app_module.THREADED_ENCODE_SIZE > small_size
    assert small_thread == "eas-test-server"  # the event loop's thread
    assert big_thread != "eas-test-server"
