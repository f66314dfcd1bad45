"""Device access rules, as Exchange 2010 SP1 has them: allow, block or quarantine a
device by its id, type, model, OS or user agent, with an organisation-wide default
access level for devices no rule names.

Which rule wins (the order Exchange documents for device access):
1. a rule for this DeviceId (an administrator's decision about one phone);
2. a rule for the device's model, then its type, then its OS, then its user agent
   (the most specific characteristic first);
3. the default access level.
Within one characteristic, the most restrictive matching rule wins (block over
quarantine over allow), so adding a block rule never lets a device in.

Values match case-insensitively; a value ending in `*` matches by prefix (Exchange
2013's QueryString wildcard), so `iPhone*` covers every iPhone model string.

Sans-IO: the rules come in as data (`AccessConfiguration`); where they are stored is
the application's business (`AccessSource`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from .devices import Device, DeviceAccess

MAX_RULE_VALUE: Final = 256  # as MAX_DEVICE_FIELD: longer values could never match


class Characteristic(StrEnum):
    """What a rule looks at (New-ActiveSyncDeviceAccessRule -Characteristic)."""

    DEVICE_ID = "device-id"
    MODEL = "model"
    DEVICE_TYPE = "device-type"
    OS = "os"
    USER_AGENT = "user-agent"


# Precedence: earlier characteristics decide first.
PRECEDENCE: Final = tuple(Characteristic)
_RESTRICTIVENESS: Final = {
    DeviceAccess.BLOCKED: 2,
    DeviceAccess.QUARANTINED: 1,
    DeviceAccess.ALLOWED: 0,
}


@dataclass(frozen=True, slots=True)
class AccessRule:
    id: int
    characteristic: Characteristic
    value: str
    access: DeviceAccess

    def matches(self, observed: str | None) -> bool:
        if not observed:
            return False
        wanted = self.value.strip().lower()
        seen = observed.strip().lower()
        if wanted.endswith("*"):
            return seen.startswith(wanted[:-1])
        return seen == wanted

    def describe(self) -> str:
        return f"rule {self.id} ({self.characteristic.value} {self.value})"


@dataclass(frozen=True, slots=True)
class AccessConfiguration:
    rules: tuple[AccessRule, ...] = ()
    default: DeviceAccess = DeviceAccess.ALLOWED


class AccessSource(Protocol):
    """The current rules and default level. Blocking (the directory is SQLite); the
    front end calls it from a worker thread, once per request, so it should be cheap."""

    def access_configuration(self) -> AccessConfiguration: ...


def observed(device: Device, characteristic: Characteristic) -> str | None:
    """What the device shows for `characteristic` (None until it has said)."""
    if characteristic is Characteristic.DEVICE_ID:
        return device.device_id
    if characteristic is Characteristic.MODEL:
        return device.info.model
    if characteristic is Characteristic.DEVICE_TYPE:
        return device.device_type
    if characteristic is Characteristic.OS:
        return device.info.os
    return device.info.user_agent or device.user_agent


def evaluate_access(device: Device, configuration: AccessConfiguration) -> tuple[DeviceAccess, str]:
    """The access level for `device` and why (for the record and the log)."""
    for characteristic in PRECEDENCE:
        value = observed(device, characteristic)
        matching = [
            rule
            for rule in configuration.rules
            if rule.characteristic is characteristic and rule.matches(value)
        ]
        if matching:
            winner = max(matching, key=lambda rule: (_RESTRICTIVENESS[rule.access], -rule.id))
            return winner.access, winner.describe()
    return configuration.default, "default access level"
