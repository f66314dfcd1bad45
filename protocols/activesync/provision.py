"""Provisioning (MS-ASPROV): who may run a command, and the Provision handshake itself.

The rules, in the order they are applied to every request (`admission`):

| device state                                  | Provision          | other commands          |
|-----------------------------------------------|--------------------|-------------------------|
| blocked, quarantined, or wipe acknowledged    | 403                | 403                     |
| remote wipe pending                           | wipe directive     | 449 / 140               |
| account-only wipe pending, version < 16.1     | 403                | 403                     |
| command exempt from provisioning              | -                  | runs                    |
| no key, device said it cannot provision (*)   | runs               | runs, or 403 / 141      |
| no key sent (absent, empty, "0")              | runs               | 449 / 142               |
| key malformed (not a uint32, > 64 chars)      | runs               | 449 / 144               |
| device holds no final key (never acknowledged)| runs               | 449 / 142               |
| key is not the device's final key             | runs               | 449 / 144               |
| final key issued under another policy stamp   | runs               | 449 / 143               |
| refresh interval since the key passed         | runs               | 449 / 143               |

(*) It runs if the policy allows non-provisionable devices, else 403 (≤12.1) or 141.
449 for protocol ≤12.1 (MS-ASHTTP 3.1.5.2), the status in the command's body for 14.0+
(MS-ASCMD 3.1.5.1). A temporary key is never a final key, so it only works in the
acknowledgement (reliability-security item 44).

The handshake (`provision`) is a pure function of the stored device and the request,
run inside the registry's transaction, so two parallel requests cannot both issue keys.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from .devices import Device, DeviceAccess, DeviceInformation, WipeState, parse_device_information
from .numbers import NumberError, parse_uint
from .policy import LEGACY_POLICY_TYPE, POLICY_TYPE, Policy, provision_document
from .request import PolicyKeyField, ProtocolVersion, parse_policy_key
from .status import (
    ClientPolicyStatus,
    CommonStatus,
    PolicyStatus,
    ProvisionStatus,
    SettingsStatus,
    WipeStatus,
)
from .wbxml import E, Element

HOUR: Final = 3600.0
MAX_KEY: Final = 0xFFFF_FFFF  # MS-ASPROV 2.2.2.42: keys are uint32 strings


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not run. `forbidden` ones are answered 403 for every version;
    the others with 449 (≤12.1) or `status` in the command's body (14.0+)."""

    status: CommonStatus
    forbidden: bool = False
    reason: str = ""
    forbidden_before_14: bool = False  # ≤12.1 has no status for it: 403, not 449


def admission(
    device: Device,
    policy: Policy,
    key: PolicyKeyField,
    *,
    version: ProtocolVersion,
    is_provision: bool,
    needs_provisioning: bool,
    now: float,
) -> Refusal | None:
    """None if the request may run; otherwise why not (see the module table)."""
    if device.access is not DeviceAccess.ALLOWED:
        return Refusal(CommonStatus.DEVICE_IS_BLOCKED_FOR_THIS_USER, True, device.access.value)
    if device.wipe.finished:
        return Refusal(CommonStatus.DEVICE_IS_BLOCKED_FOR_THIS_USER, True, "wiped")
    if device.wipe is WipeState.ACCOUNT_ONLY_PENDING and version < ProtocolVersion.V16_1:
        # MS-ASPROV 2.2.2.1: AccountOnlyRemoteWipe exists from 16.1. Never turn it into
        # a full wipe for an older client; refuse the partnership instead.
        return Refusal(
            CommonStatus.DEVICE_IS_BLOCKED_FOR_THIS_USER, True, "account-only wipe pending"
        )
    if device.wipe.pending:
        if is_provision:
            return None
        return Refusal(CommonStatus.REMOTE_WIPE_REQUESTED, reason="remote wipe pending")
    if is_provision or not needs_provisioning:
        return None
    if key.absent and device.non_provisionable and device.policy_key is None:
        # MS-ASPROV 3.2.5.1.2.1 / Exchange's AllowNonProvisionableDevices: a device that
        # cannot apply the policy runs without one only if the policy says so.
        if policy.allow_non_provisionable_devices:
            return None
        return Refusal(
            CommonStatus.LEGACY_DEVICE_ON_STRICT_POLICY,
            reason="non-provisionable device on a strict policy",
            forbidden_before_14=True,
        )
    if key.absent:
        return Refusal(CommonStatus.DEVICE_NOT_PROVISIONED, reason="no policy key")
    if key.malformed:
        return Refusal(CommonStatus.INVALID_POLICY_KEY, reason="malformed policy key")
    if device.policy_key is None:
        return Refusal(CommonStatus.DEVICE_NOT_PROVISIONED, reason="provisioning not finished")
    if key.value != device.policy_key:
        return Refusal(CommonStatus.INVALID_POLICY_KEY, reason="not the device's policy key")
    if device.policy_stamp != policy.stamp:
        return Refusal(CommonStatus.POLICY_REFRESH, reason="policy changed")
    interval = policy.refresh_interval_hours
    issued = device.policy_key_issued or 0.0
    if interval is not None and now - issued >= interval * HOUR:
        return Refusal(CommonStatus.POLICY_REFRESH, reason="refresh interval passed")
    return None


# --- the Provision request ---------------------------------------------------------------


class ProvisionParseError(ValueError):
    """The body is not a Provision request (answered with Provision Status 2)."""


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    """A decoded Provision request (MS-ASPROV 2.2.2)."""

    device_information: DeviceInformation | None = None
    has_policy: bool = False
    policy_type: str | None = None
    policy_key: PolicyKeyField | None = None  # None: no PolicyKey element (initial request)
    client_status: int | None = None
    wipe_status: int | None = None  # RemoteWipe/Status
    account_only_wipe_status: int | None = None  # AccountOnlyRemoteWipe/Status (16.1)

    @property
    def acknowledges_wipe(self) -> bool:
        return self.wipe_status is not None or self.account_only_wipe_status is not None


def parse_provision(document: Element | None) -> ProvisionRequest:
    if document is None or document.qname != "Provision:Provision":
        raise ProvisionParseError("the body is not a Provision document")
    information = None
    set_element = document.find("Settings:DeviceInformation/Set")
    if set_element is not None:
        information = parse_device_information(set_element)
    policy = document.find("Policies/Policy")
    policy_key = None
    client_status = None
    if policy is not None:
        key_text = policy.text_of("PolicyKey")
        if key_text is not None:
            policy_key = parse_policy_key(key_text)
        client_status = _int_or_none(policy.text_of("Status"))
    return ProvisionRequest(
        device_information=information,
        has_policy=policy is not None,
        policy_type=None if policy is None else policy.text_of("PolicyType"),
        policy_key=policy_key,
        client_status=client_status,
        wipe_status=_int_or_none(document.text_of("RemoteWipe/Status")),
        account_only_wipe_status=_int_or_none(document.text_of("AccountOnlyRemoteWipe/Status")),
    )


def _int_or_none(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_uint(text, what="Status")
    except NumberError:
        return -1  # no status any client sends: a bad acknowledgement (Status 2)


# --- the handshake -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvisionOutcome:
    """What a Provision request did: the response and the device record to store."""

    response: Element
    device: Device
    event: str  # for the log: "policy sent", "key issued", "wipe sent", ...


def new_key(*avoid: int | None) -> int:
    """A random non-zero uint32 differing from `avoid` (never 0: grommunio-sync notes that
    iOS mishandles key 0; MS-ASPROV 2.2.2.42: a uint32 string)."""
    while True:
        key = secrets.randbelow(MAX_KEY) + 1
        if key not in avoid:
            return key


def provision(
    device: Device,
    request: ProvisionRequest,
    policy: Policy,
    *,
    version: ProtocolVersion,
    now: float,
    keys: Callable[..., int] = new_key,
) -> ProvisionOutcome:
    """Answer one Provision request for `device` (MS-ASPROV 3.2.5.1)."""
    if request.device_information is not None:
        device = dataclasses.replace(
            device, info=request.device_information.merged_into(device.info)
        )
    # MS-ASPROV 2.2.2.52 / 6.3: DeviceInformation status first, then Status, Policies,
    # RemoteWipe, in this order.
    information_status = (
        E("Settings:DeviceInformation", E("Settings:Status", SettingsStatus.SUCCESS))
        if request.device_information is not None
        else None
    )

    def reply(status: int, *rest: Element | None) -> Element:
        return E("Provision:Provision", information_status, E("Provision:Status", status), rest)

    if device.wipe.pending:
        return _wipe(device, request, reply, version=version, now=now)
    if request.acknowledges_wipe:
        # A wipe acknowledgement with no wipe pending: nothing to record.
        return ProvisionOutcome(reply(ProvisionStatus.SUCCESS), device, "stray wipe status")
    if not request.has_policy or not request.policy_type:
        return ProvisionOutcome(reply(ProvisionStatus.PROTOCOL_ERROR), device, "no policy type")
    if request.policy_type != POLICY_TYPE:
        # MS-ASPROV 3.2.5.1: 12.0+ devices ask for the WBXML policy; the 2.5 XML one and
        # anything else is an unknown PolicyType.
        unknown = _policy(request.policy_type, PolicyStatus.UNKNOWN_POLICY_TYPE)
        if request.policy_type == LEGACY_POLICY_TYPE:
            # The device can only apply the 2.5 XML policy: it cannot be provisioned,
            # and admission lets it in only if the policy allows such devices.
            device = dataclasses.replace(device, non_provisionable=True)
            return ProvisionOutcome(
                reply(ProvisionStatus.SUCCESS, unknown), device, "legacy policy type"
            )
        return ProvisionOutcome(reply(ProvisionStatus.SUCCESS, unknown), device, "unknown")
    if request.policy_key is None:
        return _initial(device, request, policy, reply, version=version, now=now, keys=keys)
    return _acknowledgement(device, request, policy, reply, now=now, keys=keys)


def _policy(
    policy_type: str, status: int, key: int | None = None, data: Element | None = None
) -> Element:
    # MS-ASPROV 6.3: PolicyType, Status, PolicyKey, Data.
    return E(
        "Provision:Policies",
        E(
            "Provision:Policy",
            E("Provision:PolicyType", policy_type),
            E("Provision:Status", status),
            None if key is None else E("Provision:PolicyKey", str(key)),
            None if data is None else E("Provision:Data", data),
        ),
    )


def _initial(
    device: Device,
    request: ProvisionRequest,
    policy: Policy,
    reply: Callable[..., Element],
    *,
    version: ProtocolVersion,
    now: float,
    keys: Callable[..., int],
) -> ProvisionOutcome:
    if version >= ProtocolVersion.V14_1 and request.device_information is None:
        # MS-ASPROV 3.1.5.1.1: from 14.1 the initial request MUST carry DeviceInformation.
        status = CommonStatus.DEVICE_INFORMATION_REQUIRED
        return ProvisionOutcome(reply(status), device, "device information missing")
    temporary = keys(device.policy_key, device.temporary_key, device.acknowledged_key)
    device = dataclasses.replace(
        device,
        temporary_key=temporary,
        temporary_key_issued=now,
        temporary_policy_stamp=policy.stamp,
    )
    document = _policy(POLICY_TYPE, PolicyStatus.SUCCESS, temporary, provision_document(policy))
    return ProvisionOutcome(reply(ProvisionStatus.SUCCESS, document), device, "policy sent")


def _acknowledgement(
    device: Device,
    request: ProvisionRequest,
    policy: Policy,
    reply: Callable[..., Element],
    *,
    now: float,
    keys: Callable[..., int],
) -> ProvisionOutcome:
    assert request.policy_key is not None
    sent = request.policy_key.value
    if sent is not None and sent == device.acknowledged_key and device.policy_key is not None:
        # The device lost our answer and acknowledges again: the same final key.
        final = _policy(POLICY_TYPE, PolicyStatus.SUCCESS, device.policy_key)
        return ProvisionOutcome(reply(ProvisionStatus.SUCCESS, final), device, "key re-sent")
    if sent is None or sent != device.temporary_key:
        # MS-ASPROV 2.2.2.54.1: 5 = the client acknowledged the wrong policy key.
        wrong = _policy(POLICY_TYPE, PolicyStatus.WRONG_POLICY_KEY)
        return ProvisionOutcome(reply(ProvisionStatus.SUCCESS, wrong), device, "wrong key")
    status = request.client_status
    if status not in tuple(ClientPolicyStatus):
        return ProvisionOutcome(reply(ProvisionStatus.PROTOCOL_ERROR), device, "bad status")
    if not policy.allow_non_provisionable_devices:
        if status in (ClientPolicyStatus.PARTIALLY_APPLIED, ClientPolicyStatus.NOT_APPLIED):
            refused = CommonStatus.DEVICE_NOT_FULLY_PROVISIONABLE  # MS-ASPROV 3.2.5.1.2.1
            return ProvisionOutcome(reply(refused), device, "policy not applied")
        if status == ClientPolicyStatus.EXTERNALLY_MANAGED:
            refused = CommonStatus.EXTERNALLY_MANAGED_DEVICES_NOT_ALLOWED
            return ProvisionOutcome(reply(refused), device, "externally managed")
    final_key = keys(device.policy_key, device.temporary_key, device.acknowledged_key)
    device = dataclasses.replace(
        device,
        non_provisionable=False,
        policy_key=final_key,
        policy_key_issued=now,
        policy_name=policy.name,
        # The stamp of the document the device applied; if the policy changed since, the
        # next command gets 143 and the device fetches the new one.
        policy_stamp=device.temporary_policy_stamp,
        last_policy_update=now,
        client_policy_status=status,
        temporary_key=None,
        temporary_key_issued=None,
        temporary_policy_stamp=None,
        acknowledged_key=sent,
    )
    final = _policy(POLICY_TYPE, PolicyStatus.SUCCESS, final_key)
    return ProvisionOutcome(reply(ProvisionStatus.SUCCESS, final), device, "key issued")


def _wipe(
    device: Device,
    request: ProvisionRequest,
    reply: Callable[..., Element],
    *,
    version: ProtocolVersion,
    now: float,
) -> ProvisionOutcome:
    account_only = device.wipe is WipeState.ACCOUNT_ONLY_PENDING
    acknowledged = request.account_only_wipe_status if account_only else request.wipe_status
    if acknowledged is None and account_only:
        acknowledged = request.wipe_status  # lenient: the status under the other element
    if acknowledged is not None:
        # MS-ASPROV 3.2.5.1.2.2: the device reports the wipe; record it with the time.
        if acknowledged == WipeStatus.WIPED:
            state = WipeState.ACCOUNT_ONLY_WIPED if account_only else WipeState.WIPED
        else:
            state = WipeState.FAILED
        device = dataclasses.replace(device, wipe=state, wipe_acknowledged=now)
        return ProvisionOutcome(reply(ProvisionStatus.SUCCESS), device, f"wipe {state.value}")
    # MS-ASPROV 3.2.5.1.2: the directive, repeated until acknowledged. 16.1 has
    # AccountOnlyRemoteWipe (admission refuses older clients for account-only wipes).
    if account_only and version >= ProtocolVersion.V16_1:
        directive = E("Provision:AccountOnlyRemoteWipe")
    else:
        directive = E("Provision:RemoteWipe")
    device = dataclasses.replace(device, wipe_sent=now)
    return ProvisionOutcome(reply(ProvisionStatus.SUCCESS, directive), device, "wipe sent")
