"""Sync for e-mail over the real HTTPS front end and a real store (in-process): keys,
windows, client changes, filters, bodies, empty and Partial requests, Wait, persistence,
and the classic pitfalls (lost-response replay, FolderSync 0 keeping item state, no
echo of a device's own changes, large messages with truncation, malformed WBXML)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    EasResponse,
    MailEnv,
    body_preference,
    change_command,
    delete_command,
    fetch_command,
    folder_list,
    folder_sync,
    simple_message,
    start_mail_env,
    sync_collection,
    sync_options,
    sync_request,
    sync_result,
)
from eas_env import ALICE, BOB, CAROL, default_settings

from protocols.activesync.wbxml import E
from store import Flag

ACCOUNTS = (ALICE, BOB, CAROL)
MBX = ALICE.mailbox_id


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    return start_mail_env(
        make_env, tmp_path, accounts=ACCOUNTS, settings=default_settings(heartbeat_min=1)
    )


def _ready(mail: MailEnv, version: str = "16.1", device: str = "devone") -> tuple[EasClient, Any]:
    client = mail.client(version=version, device_id=device)
    client.provision()
    folders = folder_list(client.command("FolderSync", folder_sync("0")))
    return client, folders


def _start(client: EasClient, collection: str, **kw: Any) -> str:
    first = sync_result(client.command("Sync", sync_request(sync_collection(collection, "0"))))
    assert first.status == 1 and not first.adds
    return first.key


def _sync(client: EasClient, collection: str, key: str, **kw: Any) -> EasResponse:
    return client.command("Sync", sync_request(sync_collection(collection, key, **kw)))


def test_initial_sync_returns_a_key_and_no_items_even_with_get_changes(mail: MailEnv) -> None:
    mail.deliver(MBX, simple_message("already there"))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    first = sync_result(_sync(client, inbox, "0", get_changes=True))
    assert first.status == 1 and not first.adds and first.key
    items = sync_result(_sync(client, inbox, first.key))
    assert [d.text_of("Email:Subject") for d in items.adds.values()] == ["already there"]


def test_windows_page_through_without_loss_or_duplicates_newest_first(mail: MailEnv) -> None:
    uids = [mail.deliver(MBX, simple_message(f"message {i}")) for i in range(25)]
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    key = _start(client, inbox)
    seen: list[str] = []
    rounds = []
    while True:
        page = sync_result(_sync(client, inbox, key, window=10))
        rounds.append((len(page.adds), page.more))
        seen += list(page.adds)
        key = page.key
        if not page.more:
            break
        # A delivery while paging is neither lost nor sent twice.
        if len(rounds) == 1:
            uids.append(mail.deliver(MBX, simple_message("late arrival")))
    assert rounds[0] == (10, True) and rounds[-1][1] is False
    assert len(seen) == len(set(seen)) == 26
    assert seen[0].endswith(f":{uids[24]}")  # newest first
    assert not sync_result(_sync(client, inbox, key)).adds


def test_lost_response_replay_and_unknown_key(mail: MailEnv) -> None:
    for i in range(3):
        mail.deliver(MBX, simple_message(f"replayed {i}"))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    key = _start(client, inbox)
    first = sync_result(_sync(client, inbox, key))
    assert len(first.adds) == 3
    again = sync_result(_sync(client, inbox, key))  # the answer was lost: same key again
    assert again.status == 1 and set(again.adds) == set(first.adds)
    assert again.key not in (key, "")
    assert not sync_result(_sync(client, inbox, again.key)).adds
    assert sync_result(_sync(client, inbox, "{0123456789abcdef}7")).status == 3
    assert sync_result(_sync(client, inbox, "garbage")).status == 3


def test_client_changes_apply_and_are_not_echoed_but_reach_other_devices(mail: MailEnv) -> None:
    uid = mail.deliver(MBX, simple_message("flag me"))
    phone, folders = _ready(mail, device="phone")
    tablet, _ = _ready(mail, device="tablet")
    inbox = folders.by_type[2]
    keys = {}
    for name, client in (("phone", phone), ("tablet", tablet)):
        key = _start(client, inbox)
        keys[name] = sync_result(_sync(client, inbox, key)).key
    sid = f"{inbox}:{uid}"
    flag = E(
        "Email:Flag",
        E("Email:Status", 2),
        E("Email:FlagType", "Follow up"),
        E("Tasks:StartDate", "2024-01-02T00:00:00.000Z"),
        E("Tasks:UtcStartDate", "2024-01-02T00:00:00.000Z"),
        E("Tasks:DueDate", "2024-01-05T00:00:00.000Z"),
        E("Tasks:UtcDueDate", "2024-01-05T00:00:00.000Z"),
    )
    categories = E("Email:Categories", E("Email:Category", "Red"), E("Email:Category", "Work"))
    change = change_command(sid, E("Email:Read", 1), flag, categories)
    reply = sync_result(_sync(phone, inbox, keys["phone"], commands=[change]))
    assert reply.status == 1 and not reply.changes and not reply.responses
    summary = mail.folder(MBX).snapshot().summary(uid)
    assert Flag.SEEN in summary.flags and Flag.FLAGGED in summary.flags
    assert summary.keywords == frozenset({"Red", "Work"})
    assert not sync_result(_sync(phone, inbox, reply.key)).changes  # no echo
    seen = sync_result(_sync(tablet, inbox, keys["tablet"]))
    data = seen.changes[sid]
    assert data.text_of("Email:Read") == "1"
    assert data.text_of("Email:Flag/Status") == "2"
    assert data.text_of("Email:Flag/Tasks:DueDate") == "2024-01-05T00:00:00.000Z"
    assert [c.text for c in data.findall("Email:Categories/Category")] == ["Red", "Work"]
    # Completing the flag keeps its dates; clearing it sends an empty Flag.
    done = E("Email:Flag", E("Email:Status", 1), E("Email:CompleteTime",
                                                    "2024-01-06T00:00:00.000Z"))  # fmt: skip
    reply = sync_result(_sync(phone, inbox, reply.key, commands=[change_command(sid, done)]))
    after = sync_result(_sync(tablet, inbox, seen.key)).changes[sid]
    assert after.text_of("Email:Flag/Status") == "1"
    assert after.text_of("Email:Flag/CompleteTime") == "2024-01-06T00:00:00.000Z"
    bad = change_command(sid, E("Email:Flag", E("Email:Status", 2),
                                E("Tasks:DueDate", "yesterday")))  # fmt: skip
    refused = sync_result(_sync(phone, inbox, reply.key, commands=[bad]))
    assert [r.text_of("Status") for r in refused.responses] == ["6"]
    gone = sync_result(_sync(phone, inbox, refused.key,
                             commands=[change_command(f"{inbox}:999", E("Email:Read", 1))]))  # fmt: skip
    assert [r.text_of("Status") for r in gone.responses] == ["8"]


def test_delete_moves_to_deleted_items_or_removes(mail: MailEnv) -> None:
    keep = mail.deliver(MBX, simple_message("to trash"))
    purge = mail.deliver(MBX, simple_message("to purge"))
    client, folders = _ready(mail)
    inbox, trash = folders.by_type[2], folders.by_type[4]
    key = sync_result(_sync(client, inbox, _start(client, inbox))).key
    key = sync_result(_sync(client, inbox, key, commands=[delete_command(f"{inbox}:{keep}")])).key
    reply = sync_result(_sync(client, inbox, key, deletes_as_moves=False,
                              commands=[delete_command(f"{inbox}:{purge}")]))  # fmt: skip
    assert not reply.deletes  # the device's own deletes are not echoed
    assert len(mail.folder(MBX)) if False else mail.folder(MBX).snapshot().uids.tolist() == []
    trashed = mail.store.open_mailbox(MBX).folder_by_id(trash).snapshot()
    assert len(trashed) == 1
    tkey = _start(client, trash)
    assert [d.text_of("Email:Subject") for d in
            sync_result(_sync(client, trash, tkey)).adds.values()] == ["to trash"]  # fmt: skip


def test_filter_type_window_and_soft_delete(mail: MailEnv) -> None:
    now = dt.datetime.now(dt.UTC)
    mail.deliver(MBX, simple_message("old"), internal_date=now - dt.timedelta(days=10))
    mail.deliver(MBX, simple_message("recent"), internal_date=now - dt.timedelta(hours=2))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    key = _start(client, inbox)
    week = sync_options(filter_type=3)
    got = sync_result(_sync(client, inbox, key, options=week))
    assert [d.text_of("Email:Subject") for d in got.adds.values()] == ["recent"]
    everything = sync_result(_sync(client, inbox, got.key, options=sync_options(filter_type=0)))
    assert [d.text_of("Email:Subject") for d in everything.adds.values()] == ["old"]
    day = sync_result(_sync(client, inbox, everything.key, options=sync_options(filter_type=1)))
    assert len(day.soft_deletes) == 1 and not day.deletes


def test_bodies_truncation_all_or_none_mime_and_preview(mail: MailEnv) -> None:
    html = "Content-Type: multipart/alternative; boundary=b\r\nMIME-Version: 1.0\r\n"
    body = (
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlain ünïcode text here.\r\n"
        "--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>HTML <b>ünïcode</b></p>\r\n"
        "--b--\r\n"
    )
    uid = mail.deliver(MBX, simple_message("bodies", body=body, extra=html))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    sid = f"{inbox}:{uid}"
    key = sync_result(_sync(client, inbox, _start(client, inbox))).key

    def fetch(*prefs: Any, mime: int | None = None) -> Any:
        reply = sync_result(_sync(client, inbox, key, options=sync_options(*prefs,
                                                                           mime_support=mime),
                                  commands=[fetch_command(sid)]))  # fmt: skip
        (response,) = reply.responses
        assert response.text_of("Status") == "1"
        return response.find("ApplicationData")

    plain = fetch(body_preference(1, 8))
    assert plain.text_of("AirSyncBase:Body/Type") == "1"
    assert plain.text_of("AirSyncBase:Body/Truncated") == "1"
    data = plain.text_of("AirSyncBase:Body/Data") or ""
    assert len(data.encode()) <= 8 and "Plain ü".startswith(data)
    whole = fetch(body_preference(2, 10000, preview=10))
    assert "<b>ünïcode</b>" in (whole.text_of("AirSyncBase:Body/Data") or "")
    assert whole.text_of("AirSyncBase:Body/Preview") == "Plain ünïc"
    assert whole.text_of("AirSyncBase:NativeBodyType") == "2"
    none = fetch(body_preference(1, 5, all_or_none=True))
    assert none.find("AirSyncBase:Body/Data") is None
    assert none.text_of("AirSyncBase:Body/Truncated") == "1"
    mime = fetch(body_preference(4), mime=2)
    assert mime.text_of("AirSyncBase:Body/Type") == "4"
    assert "multipart/alternative" in (mime.text_of("AirSyncBase:Body/Data") or "")
    no_mime = fetch(body_preference(4), mime=0)
    assert no_mime.text_of("AirSyncBase:Body/Type") == "1"


def test_large_message_is_truncated_without_reading_it_all(mail: MailEnv) -> None:
    big = "x" * 76 + "\r\n"
    body = big * (10 * 1024 * 1024 // len(big))  # a 10 MB text body
    uid = mail.deliver(MBX, simple_message("huge", body=body))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    key = _start(client, inbox)
    options = sync_options(body_preference(1, 500))
    reply = _sync(client, inbox, key, options=options)
    assert len(reply.body) < 10_000
    (data,) = sync_result(reply).adds.values()
    assert data.text_of("AirSyncBase:Body/Truncated") == "1"
    assert len(data.text_of("AirSyncBase:Body/Data") or "") == 500
    assert int(data.text_of("AirSyncBase:Body/EstimatedDataSize") or 0) >= 10_000_000
    assert uid


def test_empty_and_partial_sync_reuse_the_cached_request(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    inbox, sent = folders.by_type[2], folders.by_type[5]
    empty = client.command("Sync", None)
    assert empty.status_at("Status") == 13  # nothing cached
    key = _start(client, inbox)
    full = sync_result(_sync(client, inbox, key, window=5))
    mail.deliver(MBX, simple_message("after the full request"))
    reused = sync_result(client.command("Sync", None))
    assert [d.text_of("Email:Subject") for d in reused.adds.values()] == ["after the full request"]
    assert reused.key != full.key
    both = client.command(
        "Sync", sync_request(sync_collection(inbox, reused.key), sync_collection(sent, "0"))
    )
    skey = sync_result(both, sent).key
    mail.deliver(MBX, simple_message("seen through the cache"))
    partial = client.command("Sync", sync_request(sync_collection(sent, skey), partial=True))
    assert partial.document is not None
    ids = [c.text_of("CollectionId") for c in partial.document.findall("Collections/Collection")]
    assert sync_result(partial, inbox).adds
    assert set(ids) == {inbox, sent}


def test_wait_is_answered_on_delivery_and_empty_when_it_expires(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    key = sync_result(_sync(client, inbox, _start(client, inbox))).key
    bad = client.command("Sync", sync_request(sync_collection(inbox, key), wait=70))
    assert bad.status_at("Status") == 14 and bad.text("Limit") == "59"
    both = client.command("Sync", sync_request(sync_collection(inbox, key), wait=1,
                                               heartbeat=60))  # fmt: skip
    assert both.status_at("Status") == 4
    expired = client.command("Sync", sync_request(sync_collection(inbox, key), heartbeat=1))
    assert expired.status == 200 and expired.body == b""
    replies: list[EasResponse] = []
    thread = threading.Thread(
        target=lambda: replies.append(
            client.command("Sync", sync_request(sync_collection(inbox, key), heartbeat=60))
        )
    )
    thread.start()
    deadline = time.monotonic() + 20
    while mail.services.push.statistics().held < 1:  # the Sync is waiting on the bus
        assert time.monotonic() < deadline
        time.sleep(0.01)
    mail.deliver(MBX, simple_message("pushed"))
    thread.join(20)
    (reply,) = replies
    assert [d.text_of("Email:Subject") for d in sync_result(reply).adds.values()] == ["pushed"]


def test_sync_state_survives_a_restart(make_env: Any, tmp_path: Path) -> None:
    first = start_mail_env(make_env, tmp_path, accounts=ACCOUNTS)
    first.deliver(MBX, simple_message("before restart"))
    client, folders = _ready(first)
    inbox = folders.by_type[2]
    key = sync_result(_sync(client, inbox, _start(client, inbox))).key
    second = start_mail_env(make_env, tmp_path, accounts=ACCOUNTS)
    second.env.registry = first.env.registry
    again = second.client(device_id="devone")
    again.policy_key = None
    again.provision()
    second.deliver(MBX, simple_message("after restart"))
    reply = sync_result(_sync(again, inbox, key))
    assert reply.status == 1
    assert [d.text_of("Email:Subject") for d in reply.adds.values()] == ["after restart"]


def test_folder_sync_zero_keeps_item_state(mail: MailEnv) -> None:
    mail.deliver(MBX, simple_message("known"))
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    key = sync_result(_sync(client, inbox, _start(client, inbox))).key
    again = folder_list(client.command("FolderSync", folder_sync("0")))
    assert again.count == folders.count and again.key != folders.key
    unchanged = client.command("FolderSync", folder_sync(again.key))
    assert unchanged.text("Changes/Count") == "0"
    reply = sync_result(_sync(client, inbox, key))
    assert reply.status == 1 and not reply.adds  # nothing sent twice
    assert client.command("FolderSync", folder_sync("{00}1")).status_at("Status") == 9


def test_folder_create_update_delete_are_not_echoed(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    key = folders.key
    created = client.command("FolderCreate", E(
        "FolderHierarchy:FolderCreate", E("FolderHierarchy:SyncKey", key),
        E("FolderHierarchy:ParentId", folders.by_type[2]),
        E("FolderHierarchy:DisplayName", "Projects"), E("FolderHierarchy:Type", 12)))  # fmt: skip
    assert created.status_at("Status") == 1
    new_id = created.text("ServerId")
    key = created.text("SyncKey") or ""
    assert "Inbox/Projects" in [f.name for f in mail.store.open_mailbox(MBX).list_folders()]
    assert client.command("FolderSync", folder_sync(key)).text("Changes/Count") == "0"
    dup = client.command("FolderCreate", E(
        "FolderHierarchy:FolderCreate", E("FolderHierarchy:SyncKey", key),
        E("FolderHierarchy:ParentId", folders.by_type[2]),
        E("FolderHierarchy:DisplayName", "Projects"), E("FolderHierarchy:Type", 12)))  # fmt: skip
    assert dup.status_at("Status") == 2
    renamed = client.command("FolderUpdate", E(
        "FolderHierarchy:FolderUpdate", E("FolderHierarchy:SyncKey", key),
        E("FolderHierarchy:ServerId", new_id), E("FolderHierarchy:ParentId", "0"),
        E("FolderHierarchy:DisplayName", "Top")))  # fmt: skip
    assert renamed.status_at("Status") == 1
    key = renamed.text("SyncKey") or ""
    special = client.command("FolderDelete", E(
        "FolderHierarchy:FolderDelete", E("FolderHierarchy:SyncKey", key),
        E("FolderHierarchy:ServerId", folders.by_type[2])))  # fmt: skip
    assert special.status_at("Status") == 3
    deleted = client.command("FolderDelete", E(
        "FolderHierarchy:FolderDelete", E("FolderHierarchy:SyncKey", key),
        E("FolderHierarchy:ServerId", new_id)))  # fmt: skip
    assert deleted.status_at("Status") == 1
    assert client.command("FolderSync", folder_sync(deleted.text("SyncKey") or "")).text(
        "Changes/Count") == "0"  # fmt: skip
    # A change made elsewhere is reported.
    mail.store.open_mailbox(MBX).create_folder("Elsewhere")
    report = client.command("FolderSync", folder_sync(deleted.text("SyncKey") or ""))
    assert report.text("Changes/Add/DisplayName") == "Elsewhere"


def test_drafts_add_change_send_at_16(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    drafts = folders.by_type[3]
    key = _start(client, drafts)
    add = E(
        "AirSync:Add",
        E("AirSync:ClientId", "draft-1"),
        E(
            "AirSync:ApplicationData",
            E("Email:To", "bob@example.org"),
            E("Email:Subject", "draft subject"),
            E("AirSyncBase:Body", E("AirSyncBase:Type", 1), E("AirSyncBase:Data", "draft body")),
        ),
    )
    reply = sync_result(_sync(client, drafts, key, commands=[add]))
    (response,) = reply.responses
    assert response.text_of("Status") == "1"
    sid = response.text_of("ServerId") or ""
    again = sync_result(_sync(client, drafts, key, commands=[add]))  # replayed: no duplicate
    assert again.responses[0].text_of("ServerId") == sid
    assert len(mail.store.open_mailbox(MBX).folder_by_id(drafts).snapshot()) == 1
    change = change_command(sid, E("Email:Subject", "final subject"), E("Email2:Send"))
    sent = sync_result(_sync(client, drafts, again.key, commands=[change]))
    assert sent.status == 1 and not sent.responses
    (received,) = mail.store.open_mailbox(BOB.mailbox_id).inbox.metadata([1]).values()
    assert received.subject == "final subject"
    assert len(mail.store.open_mailbox(MBX).folder("Sent Items").snapshot()) == 1
    old = _ready(mail, version="14.1", device="old")[0]
    okey = _start(old, drafts)
    refused = sync_result(_sync(old, drafts, okey, commands=[add]))
    assert refused.responses[0].text_of("Status") == "6"


def test_malformed_wbxml_is_400_and_the_server_carries_on(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    bad = client.command("Sync", body=b"\x03\x01\x6a\x00\x45\x5c\x4f\x4b", policy_key=...)
    assert bad.status == 400
    bad = client.command("Sync", body=b"\x03\x01\x6a\x00\xff\xff")
    assert bad.status == 400
    wrong = client.command("Sync", E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:CollectionId", "x")))))  # fmt: skip
    assert wrong.status_at("Status") == 4
    assert sync_result(_sync(client, folders.by_type[2], "0")).status == 1


def test_unknown_collection_is_hierarchy_changed(mail: MailEnv) -> None:
    client, _ = _ready(mail)
    assert sync_result(_sync(client, "nosuchfolder", "0")).status == 12
    assert CAROL  # the other accounts exist but are not this user's


def test_fetches_share_the_response_byte_budget(
    mail: MailEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fetch commands in a Sync count against the response's byte budget like the window's
    Adds: past it a body is sent truncated (the device gets the rest with ItemOperations),
    so a thousand fetches of a large message never build a response of that size."""
    from protocols.activesync.commands import sync as sync_command

    monkeypatch.setattr(sync_command, "MAX_RESPONSE_BYTES", 25_000)
    line = "y" * 76 + "\r\n"
    uid = mail.deliver(MBX, simple_message("fetched", body=line * 128))  # ~10 kB of body
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    sid = f"{inbox}:{uid}"
    key = sync_result(_sync(client, inbox, _start(client, inbox))).key
    reply = sync_result(_sync(client, inbox, key, options=sync_options(body_preference(1)),
                              commands=[fetch_command(sid)] * 4))  # fmt: skip
    bodies = [r.find("ApplicationData") for r in reply.responses]
    assert [r.text_of("Status") for r in reply.responses] == ["1"] * 4
    sizes = [len((b.text_of("AirSyncBase:Body/Data") or "").encode()) for b in bodies]
    truncated = [b.text_of("AirSyncBase:Body/Truncated") for b in bodies]
    assert sizes[:2] == [len(line) * 128] * 2 and truncated[:2] == [None, None]
    assert 0 < sizes[2] < len(line) * 128 and truncated[2] == "1"
    assert sizes[3] == 0 and truncated[3] == "1"
    assert sum(sizes) <= 25_000
