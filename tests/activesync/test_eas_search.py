"""Search (Mailbox and GAL) and Find (16.1) over the in-process server."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    MailEnv,
    folder_list,
    folder_sync,
    search_mailbox,
    simple_message,
    start_mail_env,
)
from eas_env import ALICE, BOB, CAROL, DIRECTORY
from eas_server import FakeRecipients

from protocols.activesync.wbxml import E

MBX = ALICE.mailbox_id


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    env = start_mail_env(make_env, tmp_path, accounts=(ALICE, BOB, CAROL),
                         recipients=FakeRecipients(DIRECTORY))  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    env.deliver(MBX, simple_message("Quarterly budget", body="numbers inside\r\n"),
                internal_date=now - dt.timedelta(days=40))  # fmt: skip
    env.deliver(MBX, simple_message("Lunch plans", body="budget is small\r\n"),
                internal_date=now - dt.timedelta(days=1))  # fmt: skip
    env.deliver(MBX, simple_message("Archived budget"), folder="Archive")
    env.store.open_mailbox(MBX).create_folder("Inbox/Sub")
    env.deliver(MBX, simple_message("Nested budget"), folder="Inbox/Sub")
    return env


def _ready(mail: MailEnv, version: str = "16.1") -> tuple[EasClient, Any]:
    client = mail.client(version=version)
    client.provision()
    return client, folder_list(client.command("FolderSync", folder_sync("0")))


def _subjects(reply: Any) -> list[str]:
    return [
        r.text_of("Properties/Email:Subject") or ""
        for r in reply.document.findall("Response/Store/Result")
    ]


def test_mailbox_search_free_text_collections_deep_and_ranges(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    inbox = folders.by_type[2]
    everywhere = client.command("Search", search_mailbox("budget"))
    assert everywhere.text("Response/Store/Total") == "4"
    assert _subjects(everywhere)[0] in ("Nested budget", "Archived budget")
    in_inbox = client.command("Search", search_mailbox("budget", collection=inbox))
    assert sorted(_subjects(in_inbox)) == ["Lunch plans", "Quarterly budget"]
    deep = client.command("Search", search_mailbox("budget", collection=inbox, deep=True))
    assert len(_subjects(deep)) == 3
    first = client.command("Search", search_mailbox("budget", range_="0-1"))
    assert first.text("Response/Store/Range") == "0-1" and len(_subjects(first)) == 2
    result = first.document.find("Response/Store/Result")
    long_id = result.text_of("Search:LongId") or ""
    assert long_id.startswith(result.text_of("AirSync:CollectionId") or "-")
    bad = client.command("Search", search_mailbox("budget", range_="5-1"))
    assert bad.status_at("Response/Store/Status") == 2


def test_mailbox_search_by_date(mail: MailEnv) -> None:
    client, folders = _ready(mail)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    query = E(
        "Search:Search",
        E(
            "Search:Store",
            E("Search:Name", "Mailbox"),
            E(
                "Search:Query",
                E(
                    "Search:And",
                    E("AirSync:Class", "Email"),
                    E("AirSync:CollectionId", folders.by_type[2]),
                    E("Search:FreeText", "budget"),
                    E("Search:GreaterThan", E("Email:DateReceived"), E("Search:Value", since)),
                ),
            ),
            E("Search:Options", E("Search:Range", "0-9")),
        ),
    )
    assert _subjects(client.command("Search", query)) == ["Lunch plans"]


def test_gal_search(mail: MailEnv) -> None:
    client, _ = _ready(mail)
    reply = client.command("Search", E("Search:Search", E(
        "Search:Store", E("Search:Name", "GAL"), E("Search:Query", "bob"),
        E("Search:Options", E("Search:Range", "0-9"), E("Search:Picture")))))  # fmt: skip
    results = reply.document.findall("Response/Store/Result")
    addresses = [r.text_of("Properties/GAL:EmailAddress") for r in results]
    assert addresses == ["bob@example.org", "bobby@example.org"]
    assert results[0].text_of("Properties/GAL:FirstName") == "Bob"
    assert reply.text("Response/Store/Total") == "2"


def test_find_mailbox_and_gal(mail: MailEnv) -> None:
    client, folders = _ready(mail)

    def find(criterion: Any) -> Any:
        return client.command("Find", E("Find:Find", E("Find:SearchId", "6d0e5c38-1"),
                                        E("Find:ExecuteSearch", criterion)))  # fmt: skip

    mailbox = find(E(
        "Find:MailBoxSearchCriterion",
        E("Find:Query", E("AirSync:Class", "Email"),
          E("AirSync:CollectionId", folders.by_type[2]), E("Find:FreeText", "budget")),
        E("Find:Options", E("Find:Range", "0-24"), E("Find:DeepTraversal"))))  # fmt: skip
    assert mailbox.status_at("Status") == 1
    assert mailbox.text("Response/ItemOperations:Store") == "Mailbox"
    assert mailbox.text("Response/Total") == "3"
    result = mailbox.document.find("Response/Result")
    assert result.text_of("Properties/Email:Subject") in ("Nested budget", "Lunch plans")
    assert result.text_of("Properties/Find:HasAttachments") == "0"
    gal = find(E("Find:GALSearchCriterion", E("Find:Query", E("Find:FreeText", "carol")),
                 E("Find:Options", E("Find:Range", "0-9"))))  # fmt: skip
    assert gal.text("Response/Result/Properties/GAL:EmailAddress") == "carol@example.org"
    misplaced = client.command("Find", E("Find:Find", E("Find:SearchId", "x"), E(
        "Find:ExecuteSearch", E("Find:MailBoxSearchCriterion", E("Find:Query",
        E("Find:FreeText", "budget"))), E("Find:Options", E("Find:Range", "0-9")))))  # fmt: skip
    assert misplaced.status_at("Status") == 2
    older, _ = _ready(mail, "14.1")
    assert older.command("Find", E("Find:Find", E("Find:SearchId", "x"))).status == 501
