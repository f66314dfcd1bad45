"""Provisioning rules without a server: `admission` (who may run a command) and the
`provision` handshake as pure functions of the stored device and the request."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from eas_client import acknowledgement, provision_request, wipe_acknowledgement

from protocols.activesync.devices import Device, DeviceAccess, WipeState
from protocols.activesync.policy import DEFAULT_POLICY, Policy
from protocols.activesync.provision import (
    HOUR,
    ProvisionParseError,
    admission,
    parse_provision,
    provision,
)
from protocols.activesync.request import PolicyKeyField, ProtocolVersion, parse_policy_key
from protocols.activesync.status import CommonStatus
from protocols.activesync.wbxml import E

NOW = 1_700_000_000.0
V121, V140, V141, V161 = (
    ProtocolVersion.V12_1,
    ProtocolVersion.V14_0,
    ProtocolVersion.V14_1,
    ProtocolVersion.V16_1,
)
NEW = Device(
    owner="mbx1", device_id="dev1", user="a@x.org", device_type="iPhone",
    first_sync=NOW, last_sync=NOW,
)  # fmt: skip
PROVISIONED = dataclasses.replace(
    NEW, policy_key=1234, policy_key_issued=NOW, policy_stamp=DEFAULT_POLICY.stamp
)


def check(
    device: Device,
    key: str | None,
    *,
    policy: Policy = DEFAULT_POLICY,
    version: ProtocolVersion = V141,
    provision_command: bool = False,
    needs: bool = True,
    now: float = NOW,
) -> CommonStatus | None:
    refusal = admission(
        device,
        policy,
        parse_policy_key(key),
        version=version,
        is_provision=provision_command,
        needs_provisioning=needs,
        now=now,
    )
    return None if refusal is None else refusal.status


def test_the_final_key_admits() -> None:
    assert check(PROVISIONED, "1234") is None


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (None, CommonStatus.DEVICE_NOT_PROVISIONED),
        ("", CommonStatus.DEVICE_NOT_PROVISIONED),
        ("0", CommonStatus.DEVICE_NOT_PROVISIONED),
        ("1" * 65, CommonStatus.INVALID_POLICY_KEY),
        ("abc", CommonStatus.INVALID_POLICY_KEY),
        ("1235", CommonStatus.INVALID_POLICY_KEY),
    ],
)
def test_keys_that_are_refused(key: str | None, status: CommonStatus) -> None:
    assert check(PROVISIONED, key) is status


def test_a_temporary_key_is_not_a_final_key() -> None:
    pending = dataclasses.replace(NEW, temporary_key=777, temporary_policy_stamp="x")
    assert check(pending, "777") is CommonStatus.DEVICE_NOT_PROVISIONED
    after = dataclasses.replace(PROVISIONED, temporary_key=777)
    assert check(after, "777") is CommonStatus.INVALID_POLICY_KEY


def test_policy_change_and_refresh_interval_ask_for_143() -> None:
    changed = Policy(require_password=True)
    assert check(PROVISIONED, "1234", policy=changed) is CommonStatus.POLICY_REFRESH
    hourly = Policy(refresh_interval_hours=1)
    device = dataclasses.replace(PROVISIONED, policy_stamp=hourly.stamp)
    assert check(device, "1234", policy=hourly, now=NOW + HOUR - 1) is None
    assert check(device, "1234", policy=hourly, now=NOW + HOUR) is CommonStatus.POLICY_REFRESH


def test_provision_and_exempt_commands_run_without_a_key() -> None:
    assert check(NEW, None, provision_command=True) is None
    assert check(NEW, None, needs=False) is None


def test_blocked_and_wiped_devices_are_forbidden_for_every_command() -> None:
    for device in (
        dataclasses.replace(PROVISIONED, access=DeviceAccess.BLOCKED),
        dataclasses.replace(PROVISIONED, access=DeviceAccess.QUARANTINED),
        dataclasses.replace(PROVISIONED, wipe=WipeState.WIPED),
        dataclasses.replace(PROVISIONED, wipe=WipeState.FAILED),
        dataclasses.replace(PROVISIONED, wipe=WipeState.ACCOUNT_ONLY_WIPED),
    ):
        for provision_command, needs in itertools.product((True, False), (True, False)):
            refusal = admission(
                device,
                DEFAULT_POLICY,
                PolicyKeyField(1234),
                version=V161,
                is_provision=provision_command,
                needs_provisioning=needs,
                now=NOW,
            )
            assert refusal is not None and refusal.forbidden


def test_a_pending_wipe_stops_every_command_but_provision() -> None:
    device = dataclasses.replace(PROVISIONED, wipe=WipeState.PENDING)
    assert check(device, "1234") is CommonStatus.REMOTE_WIPE_REQUESTED
    assert check(device, "1234", needs=False) is CommonStatus.REMOTE_WIPE_REQUESTED
    assert check(device, "1234", provision_command=True) is None
    account_only = dataclasses.replace(PROVISIONED, wipe=WipeState.ACCOUNT_ONLY_PENDING)
    assert check(account_only, "1234", version=V161) is CommonStatus.REMOTE_WIPE_REQUESTED
    refusal = admission(
        account_only,
        DEFAULT_POLICY,
        PolicyKeyField(1234),
        version=V141,
        is_provision=True,
        needs_provisioning=False,
        now=NOW,
    )
    assert refusal is not None and refusal.forbidden  # never a full wipe instead


# --- the handshake ------------------------------------------------------------------------


def keys(*values: int):  # type: ignore[no-untyped-def]
    supply = iter(values)
    return lambda *avoid: next(supply)


def test_initial_then_acknowledgement() -> None:
    first = provision(
        NEW, parse_provision(provision_request()), DEFAULT_POLICY, version=V161, now=NOW,
        keys=keys(11),
    )  # fmt: skip
    response = first.response
    assert [c.qname for c in response.children] == [
        "Settings:DeviceInformation",
        "Provision:Status",
        "Provision:Policies",
    ]
    assert response.text_of("Policies/Policy/PolicyKey") == "11"
    assert response.find("Policies/Policy/Data/EASProvisionDoc") is not None
    assert first.device.temporary_key == 11 and first.device.policy_key is None
    assert first.device.info.model == "iPhone15C2"
    second = provision(
        first.device, parse_provision(acknowledgement("11")), DEFAULT_POLICY, version=V161,
        now=NOW + 1, keys=keys(22),
    )  # fmt: skip
    assert second.response.text_of("Policies/Policy/PolicyKey") == "22"
    assert second.response.find("Policies/Policy/Data") is None
    device = second.device
    assert (device.policy_key, device.temporary_key, device.acknowledged_key) == (22, None, 11)
    assert device.policy_stamp == DEFAULT_POLICY.stamp
    assert device.last_policy_update == NOW + 1 and device.client_policy_status == 1
    # The acknowledgement again (the device lost the answer): the same final key.
    again = provision(
        device, parse_provision(acknowledgement("11")), DEFAULT_POLICY, version=V161, now=NOW + 2,
        keys=keys(33),
    )  # fmt: skip
    assert again.response.text_of("Policies/Policy/PolicyKey") == "22"
    assert again.device == device


def test_keys_are_never_zero_and_differ() -> None:
    from protocols.activesync.provision import new_key

    seen = {new_key(5) for _ in range(2000)}
    assert 0 not in seen and 5 not in seen
    assert all(0 < k <= 0xFFFFFFFF for k in seen)


@pytest.mark.parametrize("sent", ["12", "0", "", "1" * 65, "abc"])
def test_acknowledging_the_wrong_key_gets_policy_status_5(sent: str) -> None:
    pending = dataclasses.replace(NEW, temporary_key=11, temporary_policy_stamp="s")
    outcome = provision(
        pending, parse_provision(acknowledgement(sent)), DEFAULT_POLICY, version=V141, now=NOW
    )
    assert outcome.response.text_of("Status") == "1"
    assert outcome.response.text_of("Policies/Policy/Status") == "5"
    assert outcome.device.policy_key is None


def test_device_information_is_required_from_14_1() -> None:
    request = parse_provision(provision_request(device_information=False))
    for version, status in ((V141, "165"), (V161, "165"), (V140, "1"), (V121, "1")):
        outcome = provision(NEW, request, DEFAULT_POLICY, version=version, now=NOW)
        assert outcome.response.text_of("Status") == status, version


@pytest.mark.parametrize(("client_status", "expected"), [(2, "139"), (3, "139"), (4, "145")])
def test_strict_policy_refuses_devices_that_do_not_comply(
    client_status: int, expected: str
) -> None:
    strict = Policy(allow_non_provisionable_devices=False)
    pending = dataclasses.replace(NEW, temporary_key=11, temporary_policy_stamp=strict.stamp)
    request = parse_provision(acknowledgement("11", client_status))
    outcome = provision(pending, request, strict, version=V141, now=NOW)
    assert outcome.response.text_of("Status") == expected
    assert outcome.device.policy_key is None
    lenient = provision(pending, request, DEFAULT_POLICY, version=V141, now=NOW)
    assert lenient.device.policy_key is not None


def test_policy_type_errors() -> None:
    def request(policy_type: str | None):  # type: ignore[no-untyped-def]
        policy = E(
            "Provision:Policy",
            None if policy_type is None else E("Provision:PolicyType", policy_type),
        )
        return parse_provision(E("Provision:Provision", E("Provision:Policies", policy)))

    unknown = provision(
        NEW, request("MS-WAP-Provisioning-XML"), DEFAULT_POLICY, version=V121, now=NOW
    )
    assert unknown.response.text_of("Policies/Policy/Status") == "3"
    missing = provision(NEW, request(None), DEFAULT_POLICY, version=V121, now=NOW)
    assert missing.response.text_of("Status") == "2"
    with pytest.raises(ProvisionParseError):
        parse_provision(E("Settings:Settings"))


def test_wipe_directive_until_acknowledged() -> None:
    pending = dataclasses.replace(PROVISIONED, wipe=WipeState.PENDING)
    outcome = provision(
        pending, parse_provision(provision_request()), DEFAULT_POLICY, version=V141, now=NOW
    )
    assert [c.qname for c in outcome.response.children][-2:] == [
        "Provision:Status",
        "Provision:RemoteWipe",
    ]
    assert outcome.device.wipe is WipeState.PENDING and outcome.device.wipe_sent == NOW
    done = provision(
        outcome.device,
        parse_provision(wipe_acknowledgement(1)),
        DEFAULT_POLICY,
        version=V141,
        now=NOW + 5,
    )
    assert done.device.wipe is WipeState.WIPED and done.device.wipe_acknowledged == NOW + 5
    failed = provision(
        pending, parse_provision(wipe_acknowledgement(2)), DEFAULT_POLICY, version=V141, now=NOW
    )
    assert failed.device.wipe is WipeState.FAILED
    account_only = dataclasses.replace(PROVISIONED, wipe=WipeState.ACCOUNT_ONLY_PENDING)
    directive = provision(
        account_only, parse_provision(provision_request()), DEFAULT_POLICY, version=V161, now=NOW
    )
    assert directive.response.find("AccountOnlyRemoteWipe") is not None
    assert directive.response.find("RemoteWipe") is None
    acked = provision(
        account_only,
        parse_provision(wipe_acknowledgement(1, account_only=True)),
        DEFAULT_POLICY,
        version=V161,
        now=NOW,
    )
    assert acked.device.wipe is WipeState.ACCOUNT_ONLY_WIPED
