"""Device partnerships: one record per (account, device id), what Exchange's
Get-ActiveSyncDevice / Get-ActiveSyncDeviceStatistics show.

A partnership belongs to the authenticated account, never to the `User` of the query:
one user cannot touch (or wipe) another user's record by sending its DeviceId
(reliability-security item 45). The owner is the account's mailbox id, which never
changes, so renaming a user keeps their phones.

`DeviceRegistry` is blocking (SQLite in the application); the front end reaches it
through `AsyncDevices`, which runs each call in a worker thread so a slow disk never
stalls the event loop. `MemoryDeviceRegistry` is the same contract over a dict, for tests
and tools.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol, TypeVar

import trio

from .wbxml import Element

_T = TypeVar("_T")

# Each DeviceInformation value is display data (MS-ASCMD 2.2.3.44); longer values are cut.
MAX_DEVICE_FIELD: Final = 256
DEVICE_SCHEMA_VERSION: Final = 1
# Threads for registry calls at once: SQLite serialises writers anyway.
REGISTRY_THREADS: Final = 4


class DeviceAccess(StrEnum):
    """Exchange 2010 SP1 device access states (Set-CASMailbox / device access rules)."""

    ALLOWED = "allowed"
    BLOCKED = "blocked"
    QUARANTINED = "quarantined"


class WipeState(StrEnum):
    """Remote wipe as grommunio-sync tracks it: requested, then acknowledged by the device
    (MS-ASPROV 3.1.5.2). A device past `requested` is refused until an administrator
    removes the record: a client can acknowledge without wiping (item 45)."""

    NONE = "none"
    PENDING = "pending"  # full device wipe requested
    ACCOUNT_ONLY_PENDING = "account-only-pending"  # 16.1 AccountOnlyRemoteWipe requested
    WIPED = "wiped"  # the device acknowledged with status 1
    ACCOUNT_ONLY_WIPED = "account-only-wiped"
    FAILED = "failed"  # the device acknowledged with status 2

    @property
    def pending(self) -> bool:
        return self in (WipeState.PENDING, WipeState.ACCOUNT_ONLY_PENDING)

    @property
    def finished(self) -> bool:
        return self in (WipeState.WIPED, WipeState.ACCOUNT_ONLY_WIPED, WipeState.FAILED)


@dataclass(frozen=True, slots=True)
class DeviceInformation:
    """What a device says about itself in Settings or Provision DeviceInformation/Set
    (MS-ASCMD 2.2.3.44); None where it said nothing."""

    model: str | None = None
    imei: str | None = None
    friendly_name: str | None = None
    os: str | None = None
    os_language: str | None = None
    phone_number: str | None = None
    user_agent: str | None = None
    mobile_operator: str | None = None
    enable_outbound_sms: bool | None = None

    def merged_into(self, older: DeviceInformation) -> DeviceInformation:
        """These values over `older`: a field the device left out keeps its old value."""
        changes = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }
        return dataclasses.replace(older, **changes)


_INFORMATION_TAGS: Final = {
    "Model": "model",
    "IMEI": "imei",
    "FriendlyName": "friendly_name",
    "OS": "os",
    "OSLanguage": "os_language",
    "PhoneNumber": "phone_number",
    "UserAgent": "user_agent",
    "MobileOperator": "mobile_operator",
}


def parse_device_information(set_element: Element) -> DeviceInformation:
    """`Settings:Set` under `Settings:DeviceInformation` -> DeviceInformation. Unknown
    children are ignored; values are cut to MAX_DEVICE_FIELD characters."""
    values: dict[str, str | bool | None] = {}
    for child in set_element.children:
        if child.ns != "Settings":
            continue
        if child.tag in _INFORMATION_TAGS:
            values[_INFORMATION_TAGS[child.tag]] = child.text.strip()[:MAX_DEVICE_FIELD]
        elif child.tag == "EnableOutboundSMS":
            values["enable_outbound_sms"] = child.text.strip() == "1"
    return DeviceInformation(**values)  # type: ignore[arg-type]  # keys are the fields above


@dataclass(frozen=True, slots=True)
class Device:
    """One partnership. Times are seconds since the epoch (UTC)."""

    owner: str  # the account's mailbox id
    device_id: str  # normalised (request.normalize_device_id)
    user: str  # the account's primary address when last seen, for listings
    device_type: str
    first_sync: float
    last_sync: float
    user_agent: str = ""  # HTTP User-Agent of the last request
    protocol_version: str = ""  # of the last request
    info: DeviceInformation = DeviceInformation()
    # Provisioning (MS-ASPROV 3.2.5.1): the final key the device must send, when and under
    # which policy it was issued; the temporary key of a handshake in progress.
    policy_key: int | None = None
    policy_key_issued: float | None = None
    policy_name: str | None = None
    policy_stamp: str | None = None
    last_policy_update: float | None = None
    client_policy_status: int | None = None  # what the device said it applied (1-4)
    temporary_key: int | None = None
    temporary_key_issued: float | None = None
    temporary_policy_stamp: str | None = None
    acknowledged_key: int | None = None  # the temporary key last acknowledged
    # The device said it cannot apply a policy (it asked for the 2.5 XML policy type):
    # it runs without a key when the policy allows non-provisionable devices.
    non_provisionable: bool = False
    # Access and remote wipe (managed by the administrator).
    access: DeviceAccess = DeviceAccess.ALLOWED
    access_reason: str = ""
    access_notified: str = ""  # the access state the user was last told about by mail
    wipe: WipeState = WipeState.NONE
    wipe_requested: float | None = None
    wipe_requested_by: str = ""
    wipe_sent: float | None = None  # when the directive last went out
    wipe_acknowledged: float | None = None

    @property
    def provisioned(self) -> bool:
        return self.policy_key is not None

    @property
    def status(self) -> str:
        """One word for listings, in the order an administrator cares about."""
        if self.wipe is not WipeState.NONE:
            return f"wipe-{self.wipe.value}"
        if self.access is not DeviceAccess.ALLOWED:
            return self.access.value
        return "ok" if self.provisioned else "not-provisioned"


class DeviceRegistryError(Exception):
    """A registry request that cannot be done; the message says why."""


class DeviceNotFound(DeviceRegistryError):
    pass


class TooManyDevices(DeviceRegistryError):
    """The account already has the maximum number of partnerships (status 177)."""


class DeviceRegistry(Protocol):
    """Where partnerships are kept. Blocking and thread-safe; every method is one short
    transaction, and `modify` is atomic even against another process (the CLI)."""

    def get(self, owner: str, device_id: str) -> Device | None: ...

    def add(self, device: Device, *, max_per_owner: int) -> Device:
        """Store a new partnership and return it; if one exists already (a parallel first
        request), return that one. TooManyDevices when the owner has `max_per_owner`."""
        ...

    def modify(self, owner: str, device_id: str, change: Callable[[Device], Device]) -> Device:
        """Apply `change` to the stored record in one transaction and return the result.
        DeviceNotFound when there is no such record."""
        ...

    def devices_of(self, owner: str) -> list[Device]: ...

    def all_devices(self) -> list[Device]: ...

    def remove(self, owner: str, device_id: str) -> bool: ...

    def set_recovery_password(self, owner: str, device_id: str, password: str) -> None:
        """Keep the device's recovery password (Settings DevicePassword), replacing any."""
        ...

    def recovery_password(self, owner: str, device_id: str) -> str | None: ...


class MemoryDeviceRegistry:
    """`DeviceRegistry` over a dict, built from data: `MemoryDeviceRegistry([device, ...])`."""

    def __init__(self, devices: list[Device] | None = None) -> None:
        self._lock = threading.Lock()
        self._devices: dict[tuple[str, str], Device] = {
            (d.owner, d.device_id): d for d in devices or []
        }
        self._passwords: dict[tuple[str, str], str] = {}

    def get(self, owner: str, device_id: str) -> Device | None:
        with self._lock:
            return self._devices.get((owner, device_id))

    def add(self, device: Device, *, max_per_owner: int) -> Device:
        with self._lock:
            key = (device.owner, device.device_id)
            if key in self._devices:
                return self._devices[key]
            count = sum(1 for owner, _ in self._devices if owner == device.owner)
            if count >= max_per_owner:
                raise TooManyDevices(f"{device.user} has {count} devices")
            self._devices[key] = device
            return device

    def modify(self, owner: str, device_id: str, change: Callable[[Device], Device]) -> Device:
        with self._lock:
            current = self._devices.get((owner, device_id))
            if current is None:
                raise DeviceNotFound(f"no device {device_id}")
            updated = change(current)
            self._devices[(owner, device_id)] = updated
            return updated

    def devices_of(self, owner: str) -> list[Device]:
        with self._lock:
            return [d for (o, _), d in sorted(self._devices.items()) if o == owner]

    def all_devices(self) -> list[Device]:
        with self._lock:
            return [d for _, d in sorted(self._devices.items())]

    def remove(self, owner: str, device_id: str) -> bool:
        with self._lock:
            self._passwords.pop((owner, device_id), None)
            return self._devices.pop((owner, device_id), None) is not None

    def set_recovery_password(self, owner: str, device_id: str, password: str) -> None:
        with self._lock:
            if (owner, device_id) not in self._devices:
                raise DeviceNotFound(f"no device {device_id}")
            self._passwords[(owner, device_id)] = password

    def recovery_password(self, owner: str, device_id: str) -> str | None:
        with self._lock:
            return self._passwords.get((owner, device_id))


class AsyncDevices:
    """The registry as the event loop uses it: each call in a worker thread."""

    def __init__(self, registry: DeviceRegistry, *, threads: int = REGISTRY_THREADS) -> None:
        self.registry = registry
        self._limiter = trio.CapacityLimiter(threads)

    async def get(self, owner: str, device_id: str) -> Device | None:
        return await trio.to_thread.run_sync(
            self.registry.get, owner, device_id, limiter=self._limiter
        )

    async def modify(
        self, owner: str, device_id: str, change: Callable[[Device], Device]
    ) -> Device:
        return await trio.to_thread.run_sync(
            self.registry.modify, owner, device_id, change, limiter=self._limiter
        )

    async def set_recovery_password(self, owner: str, device_id: str, password: str) -> None:
        await trio.to_thread.run_sync(
            self.registry.set_recovery_password, owner, device_id, password, limiter=self._limiter
        )

    async def run(self, function: Callable[[], _T]) -> _T:
        """Any blocking work that touches the registry, in the same threads."""
        return await trio.to_thread.run_sync(function, limiter=self._limiter)
