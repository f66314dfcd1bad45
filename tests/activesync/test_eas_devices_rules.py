"""Device access rules (sans-IO): which rule wins, wildcards, the default level; and the
front end applying them, learning the model of a refused device, telling the user once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from eas_client import POLICY_TYPE, device_information_set, user_information
from eas_env import ALICE, EasEnv

from protocols.activesync.access import (
    AccessConfiguration,
    AccessRule,
    Characteristic,
    evaluate_access,
)
from protocols.activesync.app import MAX_LEARNING_BODY
from protocols.activesync.devices import Device, DeviceAccess, DeviceInformation
from protocols.activesync.notices import MAX_SHOWN_FIELD, access_notice
from protocols.activesync.wbxml import E, encode
from protocols.auth import Account

PHONE = Device(
    owner="mbx",
    device_id="appl123",
    user="alice@example.org",
    device_type="iPhone",
    first_sync=0.0,
    last_sync=0.0,
    user_agent="Apple-iPhone15C2/2101.1",
    info=DeviceInformation(model="iPhone15C2", os="iOS 17.4"),
)


def rule(rid: int, kind: Characteristic, value: str, access: DeviceAccess) -> AccessRule:
    return AccessRule(rid, kind, value, access)


def decide(*rules: AccessRule, default: DeviceAccess = DeviceAccess.ALLOWED,
           device: Device = PHONE) -> tuple[DeviceAccess, str]:  # fmt: skip
    return evaluate_access(device, AccessConfiguration(tuple(rules), default))


def test_default_level_when_no_rule_matches() -> None:
    assert decide() == (DeviceAccess.ALLOWED, "default access level")
    assert decide(default=DeviceAccess.QUARANTINED)[0] is DeviceAccess.QUARANTINED
    other = rule(1, Characteristic.DEVICE_TYPE, "Android", DeviceAccess.BLOCKED)
    assert decide(other)[0] is DeviceAccess.ALLOWED


def test_the_most_specific_characteristic_wins() -> None:
    by_type = rule(1, Characteristic.DEVICE_TYPE, "iphone", DeviceAccess.BLOCKED)
    by_model = rule(2, Characteristic.MODEL, "iPhone15*", DeviceAccess.QUARANTINED)
    by_id = rule(3, Characteristic.DEVICE_ID, "appl123", DeviceAccess.ALLOWED)
    assert decide(by_type) == (DeviceAccess.BLOCKED, "rule 1 (device-type iphone)")
    assert decide(by_type, by_model)[0] is DeviceAccess.QUARANTINED
    assert decide(by_type, by_model, by_id) == (DeviceAccess.ALLOWED, "rule 3 (device-id appl123)")
    by_os = rule(4, Characteristic.OS, "iOS 17*", DeviceAccess.BLOCKED)
    by_agent = rule(5, Characteristic.USER_AGENT, "Apple-*", DeviceAccess.QUARANTINED)
    assert decide(by_agent, by_os)[0] is DeviceAccess.BLOCKED


def test_the_most_restrictive_rule_of_one_characteristic_wins() -> None:
    allow = rule(1, Characteristic.MODEL, "iPhone*", DeviceAccess.ALLOWED)
    block = rule(2, Characteristic.MODEL, "iphone15c2", DeviceAccess.BLOCKED)
    assert decide(allow, block)[0] is DeviceAccess.BLOCKED


def test_model_rules_wait_for_the_model() -> None:
    unknown = dataclasses.replace(PHONE, info=DeviceInformation())
    block = rule(1, Characteristic.MODEL, "*", DeviceAccess.BLOCKED)
    assert decide(block, device=unknown)[0] is DeviceAccess.ALLOWED
    assert decide(block)[0] is DeviceAccess.BLOCKED


@dataclasses.dataclass
class Rules:
    configuration: AccessConfiguration = dataclasses.field(default_factory=AccessConfiguration)

    def access_configuration(self) -> AccessConfiguration:
        return self.configuration


@dataclasses.dataclass
class Inbox:
    notices: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    async def notify(self, account: Account, subject: str, text: str) -> None:
        self.notices.append((account.address, subject))


@pytest.fixture
def ruled(make_env: Any) -> tuple[EasEnv, Rules, Inbox]:
    rules, inbox = Rules(), Inbox()
    env: EasEnv = make_env()
    env.app._access = rules  # the app as the service builds it: with rules and notices
    env.app._notices = inbox
    return env, rules, inbox


def test_the_front_end_applies_rules_and_notifies_once(ruled: Any) -> None:
    env, rules, inbox = ruled
    phone = env.client(version="16.1")
    phone.provision()
    rules.configuration = AccessConfiguration(
        (rule(1, Characteristic.MODEL, "iPhone15C2", DeviceAccess.QUARANTINED),)
    )
    for _ in range(2):
        assert phone.command("Settings", user_information()).status == 403
    assert inbox.notices == [(ALICE.address, "Your device Alice's iPhone is quarantined")]
    device = env.device()
    assert device.access is DeviceAccess.QUARANTINED and device.access_notified == "quarantined"
    rules.configuration = AccessConfiguration()
    assert phone.command("Settings", user_information()).status_at() == 1
    assert env.device().access_notified == ""  # a later quarantine is told again


def test_a_refused_device_still_says_what_it_is(ruled: Any) -> None:
    env, rules, inbox = ruled
    rules.configuration = AccessConfiguration(default=DeviceAccess.QUARANTINED)
    phone = env.client(version="16.1", device_id="newphone")
    request = E(
        "Provision:Provision",
        device_information_set(Model="Pixel 8", FriendlyName="Work phone"),
        E("Provision:Policies", E("Provision:Policy", E("Provision:PolicyType", POLICY_TYPE))),
    )
    assert phone.command("Provision", request, policy_key=None).status == 403
    device = env.device(device_id="newphone")
    assert device.info.model == "Pixel 8" and device.access is DeviceAccess.QUARANTINED
    rules.configuration = AccessConfiguration(
        (rule(1, Characteristic.MODEL, "Pixel 8", DeviceAccess.ALLOWED),),
        DeviceAccess.QUARANTINED,
    )
    answer = phone.command("Provision", request, policy_key=None)
    assert answer.status == 200 and answer.status_at() == 1
    assert inbox.notices == [(ALICE.address, "Your device Work phone is quarantined")]


def test_notices_cut_device_strings_and_refused_bodies_are_read_up_to_a_limit(ruled: Any) -> None:
    env, rules, _ = ruled
    rules.configuration = AccessConfiguration(default=DeviceAccess.BLOCKED)
    device = dataclasses.replace(
        PHONE, access=DeviceAccess.BLOCKED, info=DeviceInformation(friendly_name="n" * 500)
    )
    notice = access_notice(device)
    assert notice is not None and "n" * MAX_SHOWN_FIELD + " is blocked" in notice.subject
    assert "n" * (MAX_SHOWN_FIELD + 1) not in notice.subject + notice.text
    phone = env.client(version="16.1", device_id="bigbody")
    padding = E("Provision:Policies", [
        E("Provision:Policy", E("Provision:PolicyType", "x" * 1000)) for _ in range(70)
    ])  # fmt: skip
    request = E("Provision:Provision", device_information_set(Model="Too Big"), padding)
    assert len(encode(request)) > MAX_LEARNING_BODY
    assert phone.command("Provision", request, policy_key=None).status == 403
    assert env.device(device_id="bigbody").info.model is None  # not read: too large
