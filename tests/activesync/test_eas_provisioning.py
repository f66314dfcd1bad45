"""What a phone does on setup, over real HTTPS: Autodiscover, OPTIONS, Provision (both
phases), Settings; and provisioning enforcement per protocol version, bad keys, the
base64 query form, remote wipe, and the partnership record."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from eas_client import (
    EasClient,
    acknowledgement,
    folder_sync,
    provision_request,
    user_information,
    wipe_acknowledgement,
)
from eas_env import ALICE, BOB, BOB_PASSWORD, EasEnv, default_settings

from protocols.activesync.commands import TrustStore, default_commands
from protocols.activesync.context import CommandContext, CommandReply, CommandSpec
from protocols.activesync.devices import DeviceAccess, WipeState
from protocols.activesync.policy import Policy
from protocols.activesync.provision import HOUR
from protocols.activesync.wbxml import E

DEVICE = "applf17xr4y2jclm"


async def folder_sync_ok(ctx: CommandContext) -> CommandReply:
    return CommandReply.wbxml(
        E(
            "FolderHierarchy:FolderSync",
            E("FolderHierarchy:Status", 1),
            E("FolderHierarchy:SyncKey", "1"),
            E("FolderHierarchy:Changes", E("FolderHierarchy:Count", 0)),
        )
    )


@pytest.fixture
def env(make_env: Any) -> EasEnv:
    """The front end with a FolderSync that needs provisioning, like the real one."""
    table = {**default_commands(trust=TrustStore.of([])), "FolderSync": CommandSpec(folder_sync_ok)}
    started: EasEnv = make_env(commands=table)
    return started


def refused_with(response: Any, version: str, status: int) -> None:
    if version == "12.1":
        assert response.status == 449 and response.body == b""
    else:
        assert response.status == 200
        assert response.document.qname == "FolderHierarchy:FolderSync"
        assert [c.tag for c in response.document.children] == ["Status"]
        assert response.text("Status") == str(status)


@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_iphone_setup(env: EasEnv, version: str) -> None:
    client = env.client(version=version)
    discovered = client.autodiscover(ALICE.address)
    assert b"<Url>https://mail.example.org/Microsoft-Server-ActiveSync</Url>" in discovered.body
    assert client.options(auth=False).status == 401
    assert "Provision" in client.options().headers["ms-asprotocolcommands"]
    # Before provisioning: told to provision, in the body from 14.0.
    refused_with(client.command("FolderSync", folder_sync(), policy_key=None), version, 142)
    first = client.provision_initial()
    document = first.document
    assert document is not None
    assert [c.qname for c in document.children] == [
        "Settings:DeviceInformation",
        "Provision:Status",
        "Provision:Policies",
    ]
    assert first.text("Settings:DeviceInformation/Status") == "1"
    assert first.text("Policies/Policy/PolicyType") == "MS-EAS-Provisioning-WBXML"
    assert first.text("Policies/Policy/Status") == "1"
    policy = document.find("Policies/Policy")
    assert policy is not None
    assert [c.tag for c in policy.children] == ["PolicyType", "Status", "PolicyKey", "Data"]
    temporary = first.text("Policies/Policy/PolicyKey")
    assert temporary and temporary.isdigit() and int(temporary) > 0
    assert first.text("Policies/Policy/Data/EASProvisionDoc/DevicePasswordEnabled") == "0"
    # The temporary key only works for the acknowledgement.
    refused_with(client.command("FolderSync", folder_sync(), policy_key=temporary), version, 142)
    second = client.acknowledge(temporary)
    final = second.text("Policies/Policy/PolicyKey")
    assert final and final != temporary and second.text("Policies/Policy/Status") == "1"
    assert second.document is not None and second.document.find("Policies/Policy/Data") is None
    client.policy_key = final
    assert client.command("FolderSync", folder_sync()).status_at("Status") == 1
    info = client.command("Settings", user_information())
    assert info.status_at("Status") == 1
    account = "UserInformation/Get/Accounts/Account"
    assert info.text(f"{account}/UserDisplayName") == "Alice Liddell"
    assert info.text(f"{account}/EmailAddresses/PrimarySmtpAddress") == ALICE.address
    device = env.device()
    assert device.policy_key == int(final) and device.protocol_version == version
    assert device.info.model == "iPhone15C2" and device.info.imei == "356938035643809"
    assert device.info.friendly_name == "Alice's iPhone" and device.info.os == "iOS 17.4 21E219"
    assert device.info.os_language == "en" and device.info.phone_number == "+15555550100"
    assert device.info.mobile_operator == "Carrier"
    assert device.user_agent == "Apple-iPhone15C2/2101.1" and device.device_type == "iPhone"
    assert device.first_sync == device.last_sync == env.clock.now
    assert device.policy_name == "Default" and device.last_policy_update == env.clock.now
    assert device.client_policy_status == 1 and device.status == "ok"


def test_12_1_gets_http_449_and_provisions_without_device_information(env: EasEnv) -> None:
    client = env.client(version="12.1", device_type="SmartPhone")
    response = client.command("FolderSync", folder_sync(), policy_key=None)
    assert response.status == 449 and response.body == b""
    client.provision()
    assert client.command("FolderSync", folder_sync()).status == 200
    info = client.command("Settings", user_information())
    addresses = [
        e.text for e in info.document.findall("UserInformation/Get/EmailAddresses/SMTPAddress")
    ]
    assert addresses == [ALICE.address, "a.liddell@example.org"]


def test_14_0_uses_the_plain_address_list(env: EasEnv) -> None:
    client = env.client(version="14.0")
    client.provision()
    info = client.command("Settings", user_information())
    assert info.document.find("UserInformation/Get/Accounts") is None
    assert len(info.document.findall("UserInformation/Get/EmailAddresses/SMTPAddress")) == 2


def test_device_information_required_from_14_1(env: EasEnv) -> None:
    client = env.client(version="14.1")
    response = client.provision_initial(device_information=False)
    assert response.text("Status") == "165"
    assert response.document.find("Policies") is None


@pytest.mark.parametrize("version", ["12.1", "14.0", "14.1", "16.0", "16.1"])
def test_bad_keys_are_refused(env: EasEnv, version: str) -> None:
    client = env.client(version=version)
    final = client.provision()
    assert client.command("FolderSync", folder_sync()).status == 200
    for key, status in (
        (None, 142),
        ("", 142),
        ("0", 142),
        ("1" * 65, 144),
        ("12ab", 144),
        (str(int(final) % 4294967295 + 1), 144),
    ):
        refused_with(client.command("FolderSync", folder_sync(), policy_key=key), version, status)


def test_another_devices_key_and_another_users_key_are_refused(env: EasEnv) -> None:
    alice = env.client(version="16.1")
    alice_key = alice.provision()
    other_phone = env.client(version="16.1", device_id="OtherPhone1")
    other_phone.provision()
    bob = env.client(BOB, BOB_PASSWORD, version="16.1")  # same DeviceId as Alice's phone
    bob.provision()
    for client in (other_phone, bob):
        refused_with(client.command("FolderSync", folder_sync(), policy_key=alice_key), "16.1", 144)
    # Bob's partnership is his own: Alice's record is untouched.
    assert env.device().policy_key == int(alice_key)
    assert env.device(BOB).policy_key == int(bob.policy_key or 0)


def test_policy_change_asks_for_143_then_the_old_key_is_stale(env: EasEnv) -> None:
    client = env.client(version="14.1")
    old = client.provision()
    env.policies.policy = Policy(require_password=True, min_password_length=6)
    refused_with(client.command("FolderSync", folder_sync()), "14.1", 143)
    legacy = env.client(version="12.1", device_id="legacy1")
    # 12.1 devices get 449 for a policy refresh too.
    env.policies.policy = Policy()
    legacy.provision()
    env.policies.policy = Policy(require_password=True)
    assert legacy.command("FolderSync", folder_sync()).status == 449
    new = client.provision()
    assert new != old
    first = client.provision_initial()
    assert first.text("Policies/Policy/Data/EASProvisionDoc/DevicePasswordEnabled") == "1"
    client.policy_key = new
    assert client.command("FolderSync", folder_sync()).status == 200
    refused_with(client.command("FolderSync", folder_sync(), policy_key=old), "14.1", 144)


def test_refresh_interval(env: EasEnv) -> None:
    env.policies.policy = Policy(refresh_interval_hours=2)
    client = env.client(version="16.1")
    client.provision()
    env.clock.now += 2 * HOUR - 1
    assert client.command("FolderSync", folder_sync()).status_at() == 1
    env.clock.now += 1
    refused_with(client.command("FolderSync", folder_sync()), "16.1", 143)
    client.provision()
    assert client.command("FolderSync", folder_sync()).status_at() == 1


def test_acknowledging_the_wrong_key(env: EasEnv) -> None:
    client = env.client(version="14.1")
    first = client.provision_initial()
    temporary = first.text("Policies/Policy/PolicyKey")
    wrong = client.acknowledge(str(int(temporary) % 4294967295 + 1))
    assert wrong.text("Status") == "1" and wrong.text("Policies/Policy/Status") == "5"
    assert wrong.document.find("Policies/Policy/PolicyKey") is None
    assert client.acknowledge(temporary).text("Policies/Policy/Status") == "1"


def test_a_lost_acknowledgement_answer_gets_the_same_final_key(env: EasEnv) -> None:
    client = env.client(version="16.1")
    temporary = client.provision_initial().text("Policies/Policy/PolicyKey")
    client.policy_key = temporary
    once = client.acknowledge(temporary).text("Policies/Policy/PolicyKey")
    twice = client.acknowledge(temporary).text("Policies/Policy/PolicyKey")
    assert once == twice
    client.policy_key = once
    assert client.command("FolderSync", folder_sync()).status == 200


def test_provision_protocol_errors(env: EasEnv) -> None:
    client = env.client(version="14.1")
    empty = client.command("Provision", E("Provision:Provision"), policy_key=None)
    assert empty.text("Status") == "2"
    other = client.command("Provision", folder_sync(), policy_key=None)
    assert other.text("Status") == "2"
    assert client.command("Provision", body=b"", policy_key=None).text("Status") == "2"


@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_base64_query_form(env: EasEnv, version: str) -> None:
    client = env.client(version=version, base64_form=True, raw_device_id=bytes(range(16)))
    response = client.command("FolderSync", folder_sync(), policy_key=None)
    if version == "12.1":
        assert response.status == 449
    else:
        assert response.text("Status") == "142"
    final = client.provision()
    # The key travels in the query (uint32 LE), not in a header.
    assert client.command("FolderSync", folder_sync()).status_at() == 1
    device = env.registry.get(ALICE.mailbox_id, bytes(range(16)).hex())
    assert device is not None and device.policy_key == int(final)
    assert client.command("Settings", user_information()).status_at() == 1


def test_user_parameter_does_not_choose_the_partnership(env: EasEnv) -> None:
    client = env.client(version="16.1", login=ALICE.address)
    client.user = BOB.address  # the query says Bob; the login is Alice
    client.provision()
    assert env.device() is not None and env.device(BOB) is None


def test_too_many_devices(make_env: Any) -> None:
    env: EasEnv = make_env(settings=default_settings(max_devices_per_user=2))
    for name in ("one", "two"):
        env.client(version="16.1", device_id=name).provision()
    third = env.client(version="16.1", device_id="three").provision_initial()
    assert third.status == 200 and third.text("Status") == "177"
    old = env.client(version="12.1", device_id="four").provision_initial(device_information=False)
    assert old.status == 403
    assert env.client(version="16.1", device_id="one").provision()  # known devices still work


def test_blocked_device_is_403_for_everything(env: EasEnv) -> None:
    client = env.client(version="16.1")
    client.provision()
    env.registry.modify(
        ALICE.mailbox_id, DEVICE, lambda d: dataclasses.replace(d, access=DeviceAccess.BLOCKED)
    )
    assert client.command("FolderSync", folder_sync()).status == 403
    assert client.provision_initial().status == 403
    assert client.options().status == 200  # OPTIONS is not a device command


def request_wipe(env: EasEnv, state: WipeState) -> None:
    env.registry.modify(
        ALICE.mailbox_id,
        DEVICE,
        lambda d: dataclasses.replace(
            d, wipe=state, wipe_requested=env.clock.now, wipe_requested_by="admin"
        ),
    )


@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_remote_wipe(env: EasEnv, version: str) -> None:
    client = env.client(version=version)
    client.provision()
    request_wipe(env, WipeState.PENDING)
    response = client.command("FolderSync", folder_sync())
    if version == "12.1":
        assert response.status == 449
    else:
        assert response.text("Status") == "140"
    settings = client.command("Settings", user_information())
    assert settings.status == 449 if version == "12.1" else settings.text("Status") == "140"
    # Provision gets the directive, again and again until acknowledged.
    for _ in range(2):
        directive = client.provision_initial(device_information=version != "12.1")
        document = directive.document
        assert document.find("RemoteWipe") is not None and document.find("Policies") is None
        assert document.children[-1].qname == "Provision:RemoteWipe"
    env.clock.now += 60
    done = client.command("Provision", wipe_acknowledgement(1))
    assert done.status == 200 and done.text("Status") == "1"
    device = env.device()
    assert device.wipe is WipeState.WIPED and device.wipe_acknowledged == env.clock.now
    assert device.wipe_sent is not None and device.status == "wipe-wiped"
    # The partnership stays refused: a client can acknowledge without wiping.
    assert client.command("FolderSync", folder_sync()).status == 403
    assert client.provision_initial().status == 403


def test_account_only_wipe_at_16_1_and_refusal_before(env: EasEnv) -> None:
    client = env.client(version="16.1")
    client.provision()
    request_wipe(env, WipeState.ACCOUNT_ONLY_PENDING)
    assert client.command("FolderSync", folder_sync()).text("Status") == "140"
    directive = client.provision_initial()
    assert directive.document.find("AccountOnlyRemoteWipe") is not None
    assert directive.document.find("RemoteWipe") is None
    done = client.command("Provision", wipe_acknowledgement(1, account_only=True))
    assert done.text("Status") == "1"
    assert env.device().wipe is WipeState.ACCOUNT_ONLY_WIPED
    old = env.client(version="14.1", device_id="oldphone")
    old.provision()
    env.registry.modify(
        ALICE.mailbox_id,
        "oldphone",
        lambda d: dataclasses.replace(d, wipe=WipeState.ACCOUNT_ONLY_PENDING),
    )
    assert old.provision_initial().status == 403  # never a full wipe instead


def test_failed_wipe_is_recorded(env: EasEnv) -> None:
    client = env.client(version="14.1")
    client.provision()
    request_wipe(env, WipeState.PENDING)
    client.command("Provision", wipe_acknowledgement(2))
    assert env.device().wipe is WipeState.FAILED


def test_last_seen_is_written_at_most_once_a_minute(env: EasEnv) -> None:
    client = env.client(version="16.1")
    client.provision()
    first = env.device().last_sync
    env.clock.now += 30
    client.command("FolderSync", folder_sync())
    assert env.device().last_sync == first
    env.clock.now += 30
    client.command("FolderSync", folder_sync())
    assert env.device().last_sync == env.clock.now
    client.user_agent = "Apple-iPhone15C2/2102.1"
    client.command("FolderSync", folder_sync())
    assert env.device().user_agent == "Apple-iPhone15C2/2102.1"


def test_the_same_phone_in_plain_and_base64_form_is_one_partnership(env: EasEnv) -> None:
    plain = env.client(version="14.1", device_id="SEC1234ABCD")
    plain.provision()
    encoded = env.client(version="14.1", device_id="SEC1234ABCD", base64_form=True)
    encoded.policy_key = plain.policy_key
    assert encoded.command("FolderSync", folder_sync()).status_at() == 1
    assert len(env.registry.devices_of(ALICE.mailbox_id)) == 1


def test_initial_request_with_a_legacy_policy_type(env: EasEnv) -> None:
    client: EasClient = env.client(version="12.1")
    document = E(
        "Provision:Provision",
        E(
            "Provision:Policies",
            E("Provision:Policy", E("Provision:PolicyType", "MS-WAP-Provisioning-XML")),
        ),
    )
    response = client.command("Provision", document, policy_key=None)
    assert response.text("Policies/Policy/Status") == "3"
    assert provision_request and acknowledgement  # builders shared with later suites
