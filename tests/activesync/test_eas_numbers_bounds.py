"""Numbers in requests: Unicode digits (`²`, which `str.isdigit()` accepts and `int()`
refuses; Arabic-Indic digits, which `int()` reads) and overlong digit strings are each
command's own protocol error, never a ValueError turned into status 110 or HTTP 500."""

from __future__ import annotations

import email.policy
import logging
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    MailEnv,
    fetch_attachment,
    folder_list,
    folder_sync,
    move_items,
    search_mailbox,
    simple_message,
    start_mail_env,
    sync_collection,
    sync_request,
    sync_result,
)
from eas_env import ALICE, BOB, CAROL, default_settings

from protocols.activesync.commands.foldersync import _parse_edit
from protocols.activesync.commands.itemoperations import parse_range as item_range
from protocols.activesync.commands.items import ChangeRefused, _flag_record
from protocols.activesync.commands.oof import OofRequestError, parse_set
from protocols.activesync.commands.ping import PingError, parse_ping
from protocols.activesync.commands.resolverecipients import (
    ResolveRecipientsError,
    parse_resolve_recipients,
)
from protocols.activesync.commands.search import SearchError, SearchStatus
from protocols.activesync.commands.search import parse_range as search_range
from protocols.activesync.commands.sync import SyncRequestError, parse_sync
from protocols.activesync.http import RequestBody
from protocols.activesync.mail import parse_file_reference, parse_server_id
from protocols.activesync.numbers import NumberError, parse_int, parse_uint
from protocols.activesync.policy import PolicyValueError, parse_setting
from protocols.activesync.provision import parse_provision
from protocols.activesync.wbxml import E
from transport.autoreply import OofSettings

ACCOUNTS = (ALICE, BOB, CAROL)
MBX = ALICE.mailbox_id
SUPERSCRIPT = "\u00b2"  # '²': isdigit() is True, int() raises
ARABIC = "\u0661\u0662"  # '١٢': int() reads 12
LONG = "9" * 5000  # past CPython's 4300-digit int() limit
BAD_NUMBERS = (SUPERSCRIPT, "1" + SUPERSCRIPT, ARABIC, LONG, "", " ", "+1", "-1", "1 2", "1.0")


# --- the helper ------------------------------------------------------------------------------


def test_parse_uint_takes_ascii_digits_within_the_bound_only() -> None:
    assert parse_uint(" 42\r\n") == 42
    assert parse_uint("000000007") == 7
    assert parse_uint("1" * 10, max_digits=10) == 1_111_111_111
    for bad in (*BAD_NUMBERS, "1" * 10):
        with pytest.raises(NumberError):
            parse_uint(bad)

    class Mine(Exception):
        pass

    with pytest.raises(Mine):
        parse_uint(SUPERSCRIPT, error=Mine)
    assert parse_int("-5") == -5 and parse_int("5") == 5
    for bad in ("--5", "-", "-" + SUPERSCRIPT, "5-"):
        with pytest.raises(NumberError):
            parse_int(bad)


# --- each parser raises its own error ----------------------------------------------------------


@pytest.mark.parametrize("bad", [SUPERSCRIPT, ARABIC, LONG])
def test_sync_and_ping_numbers_are_their_protocol_errors(bad: str) -> None:
    for document in (
        E("AirSync:Sync", E("AirSync:Wait", bad)),
        E("AirSync:Sync", E("AirSync:WindowSize", bad)),
        E(
            "AirSync:Sync",
            E(
                "AirSync:Collections",
                E(
                    "AirSync:Collection",
                    E("AirSync:SyncKey", "0"),
                    E("AirSync:CollectionId", "1"),
                    E("AirSync:Options", E("AirSync:FilterType", bad)),
                ),
            ),
        ),
    ):
        with pytest.raises(SyncRequestError):
            parse_sync(document)
    with pytest.raises(PingError):
        parse_ping(E("Ping:Ping", E("Ping:HeartbeatInterval", bad)))


@pytest.mark.parametrize("bad", [SUPERSCRIPT, ARABIC, LONG])
def test_ids_references_and_ranges_are_refused_not_raised(bad: str) -> None:
    assert parse_server_id(f"abc:{bad}") is None
    assert parse_file_reference(f"abc:{bad}:2") is None
    assert parse_file_reference(f"abc:7:2.{bad}") is None
    assert item_range(f"0-{bad}", 100) is None
    assert item_range(f"{bad}-5", 100) is None
    with pytest.raises(SearchError) as caught:
        search_range(f"0-{bad}")
    assert caught.value.status == SearchStatus.INVALID_REQUEST
    # The ordinary forms still work.
    assert parse_server_id("abc:17") == ("abc", 17)
    assert parse_file_reference("abc:17:2.1") == ("abc", 17, (2, 1))
    assert item_range("0-9", 100) == (0, 9)


@pytest.mark.parametrize("bad", [SUPERSCRIPT, ARABIC, LONG])
def test_other_commands_and_settings_refuse_bad_numbers(bad: str) -> None:
    acknowledgement = E(
        "Provision:Provision",
        E(
            "Provision:Policies",
            E(
                "Provision:Policy",
                E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML"),
                E("Provision:PolicyKey", "123"),
                E("Provision:Status", bad),
            ),
        ),
        E("Provision:RemoteWipe", E("Provision:Status", bad)),
    )
    request = parse_provision(acknowledgement)
    assert request.client_status == -1 and request.wipe_status == -1
    create = E(
        "FolderHierarchy:FolderCreate",
        E("FolderHierarchy:SyncKey", "1"),
        E("FolderHierarchy:ParentId", "0"),
        E("FolderHierarchy:DisplayName", "x"),
        E("FolderHierarchy:Type", bad),
    )
    assert _parse_edit("Create", create) is None  # Status 10, malformed
    resolve = E(
        "ResolveRecipients:ResolveRecipients",
        E("ResolveRecipients:To", "bob"),
        E("ResolveRecipients:Options", E("ResolveRecipients:MaxAmbiguousRecipients", bad)),
    )
    with pytest.raises(ResolveRecipientsError):
        parse_resolve_recipients(resolve)
    with pytest.raises(OofRequestError):
        parse_set(E("Settings:Set", E("Settings:OofState", bad)), OofSettings())
    with pytest.raises(ChangeRefused):
        _flag_record(E("Email:Flag", E("Email:Status", bad)))
    with pytest.raises(PolicyValueError):
        parse_setting("password_history", "-" + bad)
    with pytest.raises(PolicyValueError):
        parse_setting("password_history", "--5")


async def test_a_content_length_that_is_not_a_number_is_not_a_server_error() -> None:
    messages = [{"type": "http.request", "body": b"hello", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    body = RequestBody(receive)
    assert await body.read({"content-length": SUPERSCRIPT}, 100) == b"hello"


# --- over the wire: each command's status, no traceback ------------------------------------


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    return start_mail_env(
        make_env, tmp_path, accounts=ACCOUNTS, settings=default_settings(heartbeat_min=1)
    )


def _ready(mail: MailEnv) -> tuple[EasClient, str, str]:
    client = mail.client(device_id="numbers")
    client.provision()
    folders = folder_list(client.command("FolderSync", folder_sync("0")))
    return client, folders.by_type[2], folders.by_type[4]


def _with_attachment(payload: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "carol@example.org"
    message["To"] = "alice@example.org"
    message["Subject"] = "numbers"
    message.set_content("The body text.")
    message.add_attachment(payload, maintype="application", subtype="octet-stream",
                           filename="blob.bin")  # fmt: skip
    return message.as_bytes(policy=email.policy.SMTP)


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_each_command_answers_its_protocol_error(
    mail: MailEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    uid = mail.deliver(MBX, _with_attachment(b"x" * 1000))
    client, inbox, _ = _ready(mail)
    ping = client.command("Ping", E("Ping:Ping", E("Ping:HeartbeatInterval", SUPERSCRIPT)))
    assert ping.status == 200 and ping.status_at("Status") == 4  # MS-ASCMD 2.2.3.177.10
    sync = client.command("Sync", E("AirSync:Sync", E("AirSync:Wait", SUPERSCRIPT)))
    assert sync.status == 200 and sync.status_at("Status") == 4  # MS-ASCMD 2.2.3.177.17
    ranged = client.command("ItemOperations", fetch_attachment(f"{inbox}:{uid}:2", "0-\u00b9"))
    assert ranged.status_at("Response/Fetch/Status") == 8  # byte range invalid
    search = client.command("Search", search_mailbox("numbers", range_=f"0-{SUPERSCRIPT}"))
    assert search.status_at("Response/Store/Status") == 2
    estimate = client.command(
        "GetItemEstimate",
        E(
            "GetItemEstimate:GetItemEstimate",
            E(
                "GetItemEstimate:Collections",
                E(
                    "GetItemEstimate:Collection",
                    E("AirSync:SyncKey", "1"),
                    E("GetItemEstimate:CollectionId", inbox),
                    E("AirSync:Options", E("AirSync:FilterType", SUPERSCRIPT)),
                ),
            ),
        ),
    )
    assert estimate.status_at("Response/Status") == 2
    assert _errors(caplog) == []


def test_move_items_reports_a_bad_id_per_item_after_earlier_moves(
    mail: MailEnv, caplog: pytest.LogCaptureFixture
) -> None:
    uid = mail.deliver(MBX, simple_message("moved"))
    client, inbox, trash = _ready(mail)
    key = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0")))).key
    sync_result(client.command("Sync", sync_request(sync_collection(inbox, key))))
    reply = client.command(
        "MoveItems",
        move_items((f"{inbox}:{uid}", inbox, trash), (f"{inbox}:{SUPERSCRIPT}", inbox, trash)),
    )
    assert reply.status == 200 and reply.document is not None
    statuses = [r.text_of("Status") for r in reply.document.findall("Response")]
    assert statuses == ["3", "1"]  # moved; invalid source
    assert uid not in mail.folder(MBX).snapshot().uids
    assert _errors(caplog) == []
