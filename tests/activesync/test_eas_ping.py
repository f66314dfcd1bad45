"""Ping (Direct Push) over the real HTTPS front end and a real store (in-process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    EasResponse,
    MailEnv,
    change_command,
    folder_list,
    folder_sync,
    ping_request,
    simple_message,
    start_mail_env,
    sync_collection,
    sync_request,
    sync_result,
)
from eas_env import ALICE, BOB, CAROL, default_settings

from protocols.activesync.commands.ping import MAX_PING_FOLDERS
from protocols.activesync.wbxml import E

ACCOUNTS = (ALICE, BOB, CAROL)
MBX = ALICE.mailbox_id
WAIT = 20.0


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    settings = default_settings(heartbeat_min=1, heartbeat_max=600)
    return start_mail_env(make_env, tmp_path, accounts=ACCOUNTS, settings=settings)


def _ready(mail: MailEnv, device: str = "pinger") -> tuple[EasClient, str, str]:
    client = mail.client(device_id=device)
    client.provision()
    folders = folder_list(client.command("FolderSync", folder_sync("0")))
    inbox = folders.by_type[2]
    first = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0"))))
    key = sync_result(client.command("Sync", sync_request(sync_collection(inbox, first.key))))
    return client, inbox, key.key


def _in_thread(call: Callable[[], EasResponse]) -> tuple[threading.Thread, list[EasResponse]]:
    out: list[EasResponse] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def _held(mail: MailEnv, count: int = 1) -> None:
    """Wait until `count` long polls are held (polling a statistic, bounded)."""
    deadline = time.monotonic() + WAIT
    while mail.services.push.statistics().held < count:
        assert time.monotonic() < deadline, "the Ping was never held"
        time.sleep(0.01)


def test_parameters_missing_cached_and_out_of_range(mail: MailEnv) -> None:
    client, inbox, _ = _ready(mail)
    assert client.command("Ping", None).status_at("Status") == 3
    assert client.command("Ping", ping_request(1)).status_at("Status") == 3  # no folders
    low = client.command("Ping", ping_request(0, inbox))
    assert low.status_at("Status") == 5 and low.text("HeartbeatInterval") == "1"
    high = client.command("Ping", ping_request(601, inbox))
    assert high.status_at("Status") == 5 and high.text("HeartbeatInterval") == "600"
    many = [f"f{i}" for i in range(MAX_PING_FOLDERS + 1)]
    too_many = client.command("Ping", ping_request(1, *many))
    assert too_many.status_at("Status") == 6
    assert too_many.text("MaxFolders") == str(MAX_PING_FOLDERS)
    assert client.command("Ping", ping_request(1, inbox)).status_at("Status") == 1  # expired
    started = time.monotonic()
    assert client.command("Ping", None).status_at("Status") == 1  # cached parameters
    assert time.monotonic() - started >= 0.9
    syntax = client.command("Ping", E("Ping:Ping", E("Ping:HeartbeatInterval", "soon")))
    assert syntax.status_at("Status") == 4


def test_ping_is_answered_the_moment_mail_arrives(mail: MailEnv) -> None:
    client, inbox, _ = _ready(mail)
    thread, replies = _in_thread(lambda: client.command("Ping", ping_request(300, inbox)))
    _held(mail)
    started = time.monotonic()
    mail.deliver(MBX, simple_message("wake up"))
    thread.join(WAIT)
    (reply,) = replies
    assert reply.status_at("Status") == 2 and reply.text("Folders/Folder") == inbox
    assert time.monotonic() - started < 2


def test_changes_are_relative_to_the_sync_state_not_the_ping(mail: MailEnv) -> None:
    client, inbox, key = _ready(mail)
    mail.deliver(MBX, simple_message("arrived before the ping"))
    assert client.command("Ping", ping_request(60, inbox)).status_at("Status") == 2
    # Once synced, the device's own change does not wake its Ping; another device's does.
    uid = mail.folder(MBX).snapshot().uids[-1]
    synced = sync_result(client.command("Sync", sync_request(sync_collection(inbox, key))))
    thread, replies = _in_thread(lambda: client.command("Ping", ping_request(2, inbox)))
    _held(mail)
    own = change_command(f"{inbox}:{uid}", E("Email:Read", 1))
    other = mail.client(device_id="other")
    other.provision()
    other_inbox = folder_list(other.command("FolderSync", folder_sync("0"))).by_type[2]
    okey = sync_result(other.command("Sync", sync_request(sync_collection(other_inbox, "0"))))
    sync_result(other.command("Sync", sync_request(sync_collection(inbox, okey.key))))
    thread.join(WAIT)
    assert replies[0].status_at("Status") == 1  # the other device's syncing changed nothing
    mine = mail.client(device_id="pinger")
    mine.policy_key = client.policy_key
    thread, replies = _in_thread(lambda: client.command("Ping", ping_request(2, inbox)))
    _held(mail)
    changed = sync_result(mine.command("Sync", sync_request(sync_collection(inbox, synced.key,
                                                                            commands=[own]))))  # fmt: skip
    assert changed.status == 1
    thread.join(WAIT)
    assert replies[0].status_at("Status") == 1  # its own change did not wake it
    thread, replies = _in_thread(lambda: client.command("Ping", ping_request(60, inbox)))
    _held(mail)
    mail.folder(MBX).store_flags([uid], "remove", ["seen"])  # e.g. an IMAP client
    thread.join(WAIT)
    assert replies[0].status_at("Status") == 2


def test_one_ping_per_device_the_new_one_ends_the_old(mail: MailEnv) -> None:
    client, inbox, _ = _ready(mail)
    second = mail.client(device_id="pinger")
    second.policy_key = client.policy_key
    thread, first = _in_thread(lambda: client.command("Ping", ping_request(300, inbox)))
    _held(mail)
    started = time.monotonic()
    thread2, latest = _in_thread(lambda: second.command("Ping", ping_request(300, inbox)))
    thread.join(WAIT)
    assert first[0].status_at("Status") == 1
    assert time.monotonic() - started < 5
    _held(mail)
    assert mail.services.push.statistics().superseded == 1
    mail.deliver(MBX, simple_message("for the newer ping"))
    thread2.join(WAIT)
    assert latest[0].status_at("Status") == 2


def test_hierarchy_changes_answer_seven(mail: MailEnv) -> None:
    client, inbox, _ = _ready(mail)
    assert client.command("Ping", ping_request(5, "no-such-folder")).status_at("Status") == 7
    thread, replies = _in_thread(lambda: client.command("Ping", ping_request(300, inbox)))
    _held(mail)
    mail.store.open_mailbox(MBX).create_folder("New Folder")
    thread.join(WAIT)
    assert replies[0].status_at("Status") == 7
    # Until the device runs FolderSync, a new Ping says so at once.
    assert client.command("Ping", ping_request(300, inbox)).status_at("Status") == 7
