"""Long polls end at once when the server starts draining: a held Ping answers Status 1
(the client pings again and reaches the restarted server), a Sync with Wait an empty 200;
a long poll that arrives while draining is not held at all."""

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
    folder_list,
    folder_sync,
    ping_request,
    start_mail_env,
    sync_collection,
    sync_request,
    sync_result,
)
from eas_env import ALICE, BOB, CAROL, default_settings

from protocols.activesync.wbxml import E
from protocols.connection import Drain

ACCOUNTS = (ALICE, BOB, CAROL)
WAIT = 20.0
HELD = 1800  # seconds a long poll would be held without the drain


@pytest.fixture
def drain() -> Drain:
    return Drain()


@pytest.fixture
def mail(make_env: Any, tmp_path: Path, drain: Drain) -> MailEnv:
    settings = default_settings(heartbeat_min=1, heartbeat_max=3540)
    return start_mail_env(make_env, tmp_path, accounts=ACCOUNTS, settings=settings, drain=drain)


def _ready(mail: MailEnv, device: str) -> tuple[EasClient, str, str]:
    client = mail.client(device_id=device)
    client.provision()
    inbox = folder_list(client.command("FolderSync", folder_sync("0"))).by_type[2]
    first = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0"))))
    key = sync_result(client.command("Sync", sync_request(sync_collection(inbox, first.key))))
    return client, inbox, key.key


def _in_thread(call: Callable[[], EasResponse]) -> tuple[threading.Thread, list[EasResponse]]:
    out: list[EasResponse] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def _held(mail: MailEnv, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while mail.services.push.statistics().held < count:
        assert time.monotonic() < deadline, "the long polls were never held"
        time.sleep(0.01)


def test_held_ping_and_sync_with_wait_answer_when_the_drain_starts(
    mail: MailEnv, drain: Drain
) -> None:
    pinger, inbox, _ = _ready(mail, "pinger")
    syncer, sync_inbox, key = _ready(mail, "syncer")
    ping_thread, pings = _in_thread(lambda: pinger.command("Ping", ping_request(HELD, inbox)))
    wait = E(
        "AirSync:Sync",
        E(
            "AirSync:Collections",
            E(
                "AirSync:Collection",
                E("AirSync:SyncKey", key),
                E("AirSync:CollectionId", sync_inbox),
            ),
        ),
        E("AirSync:Wait", HELD // 60),
    )
    sync_thread, syncs = _in_thread(lambda: syncer.command("Sync", wait))
    _held(mail, 2)
    started = time.monotonic()
    mail.env.server.run_sync(drain.start)
    ping_thread.join(WAIT)
    sync_thread.join(WAIT)
    assert time.monotonic() - started < 5
    (ping,) = pings
    assert ping.status == 200 and ping.status_at("Status") == 1
    (sync,) = syncs
    assert sync.status == 200 and sync.body == b""  # MS-ASCMD 3.2.5.3: nothing new
    # Once draining, a new long poll is answered at once too.
    started = time.monotonic()
    assert pinger.command("Ping", ping_request(HELD, inbox)).status_at("Status") == 1
    assert time.monotonic() - started < 5
