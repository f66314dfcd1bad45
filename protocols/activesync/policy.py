"""Mobile device mailbox policies: every setting of Exchange 2010's ActiveSync mailbox
policy, the EASProvisionDoc each maps to (MS-ASPROV 2.2.2.28), and the lookup of the
policy that applies to an account.

`Policy()` is the Default policy as this server ships it: no device password, nothing
restricted, devices that cannot provision allowed. Named policies and their assignment
to users live in the directory; the front end only sees `PolicySource`.

Units: the policy keeps Exchange's units (minutes, KB, days, hours) so what an
administrator types is what is stored; `provision_document` converts to the units the
EASProvisionDoc elements use (seconds, bytes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Protocol

from protocols.auth import Account

from .numbers import parse_int
from .wbxml import E, Element

POLICY_TYPE: Final = "MS-EAS-Provisioning-WBXML"  # MS-ASPROV 2.2.2.43 (12.0 and later)
LEGACY_POLICY_TYPE: Final = "MS-WAP-Provisioning-XML"  # 2.5 only: not served
DEFAULT_POLICY_NAME: Final = "Default"


class Bluetooth(IntEnum):
    """MS-ASPROV 2.2.2.2 AllowBluetooth."""

    DISABLE = 0
    HANDSFREE_ONLY = 1
    ALLOW = 2


class CalendarAgeFilter(IntEnum):
    """MS-ASPROV 2.2.2.31 MaxCalendarAgeFilter (the Sync FilterType values)."""

    ALL = 0
    TWO_WEEKS = 4
    ONE_MONTH = 5
    THREE_MONTHS = 6
    SIX_MONTHS = 7


class EmailAgeFilter(IntEnum):
    """MS-ASPROV 2.2.2.33 MaxEmailAgeFilter."""

    ALL = 0
    ONE_DAY = 1
    THREE_DAYS = 2
    ONE_WEEK = 3
    TWO_WEEKS = 4
    ONE_MONTH = 5


class SmimeSigningAlgorithm(IntEnum):
    """MS-ASPROV 2.2.2.48 RequireSignedSMIMEAlgorithm."""

    SHA1 = 0
    MD5 = 1


class SmimeEncryptionAlgorithm(IntEnum):
    """MS-ASPROV 2.2.2.46 RequireEncryptionSMIMEAlgorithm."""

    TRIPLE_DES = 0
    DES = 1
    RC2_128 = 2
    RC2_64 = 3
    RC2_40 = 4


class SmimeAlgorithmNegotiation(IntEnum):
    """MS-ASPROV 2.2.2.13 AllowSMIMEEncryptionAlgorithmNegotiation."""

    NONE = 0
    STRONGEST_ONLY = 1
    ANY = 2


# Ranges Exchange 2010 accepts for the numeric settings (Set-ActiveSyncMailboxPolicy).
MIN_PASSWORD_LENGTH_RANGE: Final = (1, 16)  # MS-ASPROV 2.2.2.37
MAX_FAILED_ATTEMPTS_RANGE: Final = (4, 16)  # MS-ASPROV 2.2.2.32
COMPLEX_CHARACTERS_RANGE: Final = (1, 4)  # MS-ASPROV 2.2.2.36
PASSWORD_HISTORY_RANGE: Final = (0, 50)  # MS-ASPROV 2.2.2.27
INACTIVITY_MINUTES_RANGE: Final = (1, 60)  # Exchange 2010: 1 minute to 1 hour
PASSWORD_EXPIRATION_DAYS_RANGE: Final = (1, 730)  # Exchange 2010: up to 730 days
REFRESH_HOURS_RANGE: Final = (1, 24 * 365)


def meta(element: str | None, doc: str) -> dict[str, Any]:
    """A policy field's EASProvisionDoc element (None: enforced by the server, not sent)
    and its documentation, for the CLI and the tests."""
    return {"element": element, "doc": doc}


@dataclass(frozen=True, slots=True)
class Policy:
    """One ActiveSync mailbox policy. Field order is Exchange 2010's option groups."""

    name: str = field(default=DEFAULT_POLICY_NAME, metadata=meta(None, "policy name"))
    # --- General
    allow_non_provisionable_devices: bool = field(
        default=True,
        metadata=meta(
            None, "allow devices that cannot apply every setting (server-side: 139/141/145)"
        ),
    )
    refresh_interval_hours: int | None = field(
        default=None,
        metadata=meta(None, "hours after which devices must provision again (None: never)"),
    )
    # --- Password
    require_password: bool = field(
        default=False, metadata=meta("DevicePasswordEnabled", "require a device password")
    )
    require_alphanumeric_password: bool = field(
        default=False,
        metadata=meta("AlphanumericDevicePasswordRequired", "require an alphanumeric password"),
    )
    min_complex_characters: int = field(
        default=1,
        metadata=meta(
            "MinDevicePasswordComplexCharacters", "minimum number of character sets (1-4)"
        ),
    )
    password_recovery_enabled: bool = field(
        default=False,
        metadata=meta(
            "PasswordRecoveryEnabled", "store the device recovery password on the server"
        ),
    )
    require_device_encryption: bool = field(
        default=False, metadata=meta("RequireDeviceEncryption", "require encryption on the device")
    )
    require_storage_card_encryption: bool = field(
        default=False,
        metadata=meta("RequireStorageCardEncryption", "require encryption on storage cards"),
    )
    allow_simple_password: bool = field(
        default=True,
        metadata=meta("AllowSimpleDevicePassword", "allow simple passwords (1111, 1234)"),
    )
    max_failed_attempts: int | None = field(
        default=None,
        metadata=meta(
            "MaxDevicePasswordFailedAttempts", "failed attempts before wipe (4-16, None: off)"
        ),
    )
    min_password_length: int | None = field(
        default=None,
        metadata=meta("MinDevicePasswordLength", "minimum password length (1-16, None: any)"),
    )
    max_inactivity_minutes: int | None = field(
        default=None,
        metadata=meta(
            "MaxInactivityTimeDeviceLock", "minutes without input before the device locks"
        ),
    )
    password_expiration_days: int | None = field(
        default=None,
        metadata=meta("DevicePasswordExpiration", "days until the password expires (None: never)"),
    )
    password_history: int = field(
        default=0,
        metadata=meta("DevicePasswordHistory", "previous passwords that cannot be reused (0-50)"),
    )
    # --- Sync settings
    max_calendar_age: CalendarAgeFilter = field(
        default=CalendarAgeFilter.ALL,
        metadata=meta("MaxCalendarAgeFilter", "past calendar items to sync"),
    )
    max_email_age: EmailAgeFilter = field(
        default=EmailAgeFilter.ALL, metadata=meta("MaxEmailAgeFilter", "past e-mail items to sync")
    )
    max_email_body_kb: int | None = field(
        default=None,
        metadata=meta(
            "MaxEmailBodyTruncationSize", "limit plain text e-mail size, KB (None: no limit)"
        ),
    )
    max_email_html_body_kb: int | None = field(
        default=None,
        metadata=meta(
            "MaxEmailHTMLBodyTruncationSize", "limit HTML e-mail size, KB (None: no limit)"
        ),
    )
    allow_direct_push_when_roaming: bool = field(
        default=True,
        metadata=meta(
            "RequireManualSyncWhenRoaming", "allow Direct Push when roaming (sent inverted)"
        ),
    )
    allow_html_email: bool = field(
        default=True, metadata=meta("AllowHTMLEmail", "allow HTML-formatted e-mail")
    )
    attachments_enabled: bool = field(
        default=True, metadata=meta("AttachmentsEnabled", "allow attachments to be downloaded")
    )
    max_attachment_kb: int | None = field(
        default=None,
        metadata=meta("MaxAttachmentSize", "maximum attachment size, KB (None: no limit)"),
    )
    # --- Device
    allow_storage_card: bool = field(
        default=True, metadata=meta("AllowStorageCard", "allow removable storage")
    )
    allow_camera: bool = field(default=True, metadata=meta("AllowCamera", "allow the camera"))
    allow_wifi: bool = field(default=True, metadata=meta("AllowWiFi", "allow Wi-Fi"))
    allow_irda: bool = field(default=True, metadata=meta("AllowIrDA", "allow infrared"))
    allow_internet_sharing: bool = field(
        default=True,
        metadata=meta("AllowInternetSharing", "allow Internet sharing from the device"),
    )
    allow_remote_desktop: bool = field(
        default=True, metadata=meta("AllowRemoteDesktop", "allow Remote Desktop")
    )
    allow_desktop_sync: bool = field(
        default=True,
        metadata=meta("AllowDesktopSync", "allow synchronization with a desktop computer"),
    )
    allow_bluetooth: Bluetooth = field(
        default=Bluetooth.ALLOW, metadata=meta("AllowBluetooth", "Bluetooth")
    )
    allow_text_messaging: bool = field(
        default=True, metadata=meta("AllowTextMessaging", "allow text messaging")
    )
    # --- Device applications
    allow_browser: bool = field(default=True, metadata=meta("AllowBrowser", "allow the browser"))
    allow_consumer_email: bool = field(
        default=True, metadata=meta("AllowConsumerEmail", "allow consumer mail accounts")
    )
    allow_pop_imap_email: bool = field(
        default=True, metadata=meta("AllowPOPIMAPEmail", "allow POP3 and IMAP4 accounts")
    )
    allow_unsigned_applications: bool = field(
        default=True, metadata=meta("AllowUnsignedApplications", "allow unsigned applications")
    )
    allow_unsigned_installation_packages: bool = field(
        default=True,
        metadata=meta("AllowUnsignedInstallationPackages", "allow unsigned installation packages"),
    )
    # --- S/MIME (Exchange 2010 SP1 options)
    require_signed_smime_messages: bool = field(
        default=False, metadata=meta("RequireSignedSMIMEMessages", "require signed S/MIME messages")
    )
    require_encrypted_smime_messages: bool = field(
        default=False,
        metadata=meta("RequireEncryptedSMIMEMessages", "require encrypted S/MIME messages"),
    )
    smime_signing_algorithm: SmimeSigningAlgorithm = field(
        default=SmimeSigningAlgorithm.SHA1,
        metadata=meta("RequireSignedSMIMEAlgorithm", "S/MIME signing algorithm"),
    )
    smime_encryption_algorithm: SmimeEncryptionAlgorithm = field(
        default=SmimeEncryptionAlgorithm.TRIPLE_DES,
        metadata=meta("RequireEncryptionSMIMEAlgorithm", "S/MIME encryption algorithm"),
    )
    smime_algorithm_negotiation: SmimeAlgorithmNegotiation = field(
        default=SmimeAlgorithmNegotiation.ANY,
        metadata=meta(
            "AllowSMIMEEncryptionAlgorithmNegotiation", "S/MIME encryption algorithm negotiation"
        ),
    )
    allow_smime_soft_certs: bool = field(
        default=True, metadata=meta("AllowSMIMESoftCerts", "allow S/MIME soft certificates")
    )
    # --- Other
    blocked_applications: tuple[str, ...] = field(
        default=(),
        metadata=meta(
            "UnapprovedInROMApplicationList", "applications blocked from running (names)"
        ),
    )
    allowed_applications: tuple[str, ...] = field(
        default=(),
        metadata=meta("ApprovedApplicationList", "applications allowed to run (SHA-1 hashes)"),
    )

    @property
    def stamp(self) -> str:
        """Changes whenever any setting changes: a device provisioned under another stamp
        must provision again (status 143, MS-ASPROV 3.2.5.1)."""
        values = {f.name: _canonical(getattr(self, f.name)) for f in dataclasses.fields(self)}
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
        return digest[:16]


DEFAULT_POLICY: Final = Policy()


def _canonical(value: object) -> object:
    if isinstance(value, IntEnum):
        return int(value)
    if isinstance(value, tuple):
        return list(value)
    return value


class PolicySource(Protocol):
    """The policy that applies to an account. Blocking (the directory is SQLite); the
    front end calls it from a worker thread."""

    def policy_for(self, account: Account) -> Policy: ...


@dataclass(frozen=True, slots=True)
class FixedPolicySource:
    """Every account gets one policy (the Default until named policies exist)."""

    policy: Policy = DEFAULT_POLICY

    def policy_for(self, account: Account) -> Policy:
        return self.policy


# --- the EASProvisionDoc -----------------------------------------------------------------


def _flag(value: bool) -> str:
    return "1" if value else "0"  # MS-ASDTYPE 2.1 boolean


def _optional(value: int | None, scale: int = 1) -> str | None:
    return None if value is None else str(value * scale)


def _truncation(kb: int | None) -> str:
    return "-1" if kb is None else str(kb)  # MS-ASPROV 2.2.2.34: -1 = no truncation


# The EASProvisionDoc children in the XSD sequence order of MS-ASPROV 6.1 (Provision.xsd);
# strict clients (iOS) drop documents with misplaced elements. Each maps the policy to the
# element's text, None for an empty element ("not set", MS-ASPROV 2.2.2.28 unsigned*OrEmpty).
# Every element is always sent, so a setting that was set and is now unset reaches the
# device (MS-ASPROV 3.2.5.1.1).
_DOCUMENT: Final[tuple[tuple[str, Callable[[Policy], str | None]], ...]] = (
    ("DevicePasswordEnabled", lambda p: _flag(p.require_password)),
    ("AlphanumericDevicePasswordRequired", lambda p: _flag(p.require_alphanumeric_password)),
    ("PasswordRecoveryEnabled", lambda p: _flag(p.password_recovery_enabled)),
    ("RequireStorageCardEncryption", lambda p: _flag(p.require_storage_card_encryption)),
    ("AttachmentsEnabled", lambda p: _flag(p.attachments_enabled)),
    ("MinDevicePasswordLength", lambda p: _optional(p.min_password_length)),
    # MS-ASPROV 2.2.2.39: seconds; Exchange's option is minutes.
    ("MaxInactivityTimeDeviceLock", lambda p: _optional(p.max_inactivity_minutes, 60)),
    ("MaxDevicePasswordFailedAttempts", lambda p: _optional(p.max_failed_attempts)),
    # MS-ASPROV 2.2.2.30: bytes; Exchange's option is KB.
    ("MaxAttachmentSize", lambda p: _optional(p.max_attachment_kb, 1024)),
    ("AllowSimpleDevicePassword", lambda p: _flag(p.allow_simple_password)),
    ("DevicePasswordExpiration", lambda p: _optional(p.password_expiration_days)),
    ("DevicePasswordHistory", lambda p: str(p.password_history)),
    ("AllowStorageCard", lambda p: _flag(p.allow_storage_card)),
    ("AllowCamera", lambda p: _flag(p.allow_camera)),
    ("RequireDeviceEncryption", lambda p: _flag(p.require_device_encryption)),
    ("AllowUnsignedApplications", lambda p: _flag(p.allow_unsigned_applications)),
    (
        "AllowUnsignedInstallationPackages",
        lambda p: _flag(p.allow_unsigned_installation_packages),
    ),
    ("MinDevicePasswordComplexCharacters", lambda p: str(p.min_complex_characters)),
    ("AllowWiFi", lambda p: _flag(p.allow_wifi)),
    ("AllowTextMessaging", lambda p: _flag(p.allow_text_messaging)),
    ("AllowPOPIMAPEmail", lambda p: _flag(p.allow_pop_imap_email)),
    ("AllowBluetooth", lambda p: str(int(p.allow_bluetooth))),
    ("AllowIrDA", lambda p: _flag(p.allow_irda)),
    ("RequireManualSyncWhenRoaming", lambda p: _flag(not p.allow_direct_push_when_roaming)),
    ("AllowDesktopSync", lambda p: _flag(p.allow_desktop_sync)),
    ("MaxCalendarAgeFilter", lambda p: str(int(p.max_calendar_age))),
    ("AllowHTMLEmail", lambda p: _flag(p.allow_html_email)),
    ("MaxEmailAgeFilter", lambda p: str(int(p.max_email_age))),
    # todo(ms-asprov 2.2.2.34): the unit is not stated; Exchange sends its KB option as is.
    ("MaxEmailBodyTruncationSize", lambda p: _truncation(p.max_email_body_kb)),
    ("MaxEmailHTMLBodyTruncationSize", lambda p: _truncation(p.max_email_html_body_kb)),
    ("RequireSignedSMIMEMessages", lambda p: _flag(p.require_signed_smime_messages)),
    ("RequireEncryptedSMIMEMessages", lambda p: _flag(p.require_encrypted_smime_messages)),
    ("RequireSignedSMIMEAlgorithm", lambda p: str(int(p.smime_signing_algorithm))),
    ("RequireEncryptionSMIMEAlgorithm", lambda p: str(int(p.smime_encryption_algorithm))),
    (
        "AllowSMIMEEncryptionAlgorithmNegotiation",
        lambda p: str(int(p.smime_algorithm_negotiation)),
    ),
    ("AllowSMIMESoftCerts", lambda p: _flag(p.allow_smime_soft_certs)),
    ("AllowBrowser", lambda p: _flag(p.allow_browser)),
    ("AllowConsumerEmail", lambda p: _flag(p.allow_consumer_email)),
    ("AllowRemoteDesktop", lambda p: _flag(p.allow_remote_desktop)),
    ("AllowInternetSharing", lambda p: _flag(p.allow_internet_sharing)),
)
DOCUMENT_ELEMENTS: Final = (
    *(name for name, _ in _DOCUMENT),
    "UnapprovedInROMApplicationList",
    "ApprovedApplicationList",
)


def provision_document(policy: Policy) -> Element:
    """The policy as `Provision:EASProvisionDoc` (MS-ASPROV 2.2.2.28)."""
    children = [E(f"Provision:{name}", render(policy)) for name, render in _DOCUMENT]
    children.append(
        E(
            "Provision:UnapprovedInROMApplicationList",
            (E("Provision:ApplicationName", name) for name in policy.blocked_applications),
        )
    )
    children.append(
        E(
            "Provision:ApprovedApplicationList",
            (E("Provision:Hash", digest) for digest in policy.allowed_applications),
        )
    )
    return E("Provision:EASProvisionDoc", children)


def policy_errors(policy: Policy) -> list[str]:
    """What is out of range in `policy` (the CLI refuses such a policy)."""
    errors: list[str] = []

    def check(name: str, value: int | None, bounds: tuple[int, int]) -> None:
        low, high = bounds
        if value is not None and not low <= value <= high:
            errors.append(f"{name}: {value} is outside {low}-{high}")

    check("min_password_length", policy.min_password_length, MIN_PASSWORD_LENGTH_RANGE)
    check("max_failed_attempts", policy.max_failed_attempts, MAX_FAILED_ATTEMPTS_RANGE)
    check("min_complex_characters", policy.min_complex_characters, COMPLEX_CHARACTERS_RANGE)
    check("password_history", policy.password_history, PASSWORD_HISTORY_RANGE)
    check("max_inactivity_minutes", policy.max_inactivity_minutes, INACTIVITY_MINUTES_RANGE)
    check(
        "password_expiration_days", policy.password_expiration_days, PASSWORD_EXPIRATION_DAYS_RANGE
    )
    check("refresh_interval_hours", policy.refresh_interval_hours, REFRESH_HOURS_RANGE)
    for name in ("max_email_body_kb", "max_email_html_body_kb", "max_attachment_kb"):
        value = getattr(policy, name)
        if value is not None and value < 0:
            errors.append(f"{name}: must not be negative")
    return errors


# --- storage and the administrator's words -------------------------------------------------

POLICY_SCHEMA_VERSION: Final = 1
UNLIMITED_WORDS: Final = frozenset({"unlimited", "none", "never", "off", ""})
# Readable names of the enum values, as an administrator types them (Exchange's own
# words: Set-ActiveSyncMailboxPolicy -MaxEmailAgeFilter OneWeek -> one-week).
ENUM_WORDS: Final[dict[type[IntEnum], dict[str, IntEnum]]] = {
    enum: {member.name.lower().replace("_", "-"): member for member in enum}
    for enum in (
        Bluetooth,
        CalendarAgeFilter,
        EmailAgeFilter,
        SmimeSigningAlgorithm,
        SmimeEncryptionAlgorithm,
        SmimeAlgorithmNegotiation,
    )
}
_FIELD_TYPES: Final[dict[str, Any]] = {}


class PolicyValueError(ValueError):
    """A setting's value cannot be read; the message names the setting."""


def enum_word(value: IntEnum) -> str:
    return value.name.lower().replace("_", "-")


def setting_kind(name: str) -> Any:
    """The type of setting `name`: bool, int, "int|None", an IntEnum class, or tuple."""
    if not _FIELD_TYPES:
        for f in dataclasses.fields(Policy):
            default = f.default
            if isinstance(default, bool):
                kind: Any = bool
            elif isinstance(default, IntEnum):
                kind = type(default)
            elif isinstance(default, tuple):
                kind = tuple
            elif isinstance(default, str):
                kind = str
            elif isinstance(default, int):
                kind = int
            else:
                kind = "int|None"
            _FIELD_TYPES[f.name] = kind
    if name not in _FIELD_TYPES:
        raise PolicyValueError(f"no setting {name!r}")
    return _FIELD_TYPES[name]


def parse_setting(name: str, text: str) -> object:
    """The value of setting `name` from an administrator's text: true/false, a number,
    `unlimited` for an unset limit, an enum word (one-week), or a comma-separated list."""
    kind = setting_kind(name)
    word = text.strip().lower()
    if kind is bool:
        if word in ("true", "yes", "1", "on"):
            return True
        if word in ("false", "no", "0", "off"):
            return False
        raise PolicyValueError(f"{name}: expected true or false, got {text!r}")
    if kind is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if kind is str:
        return text.strip()
    if isinstance(kind, type) and issubclass(kind, IntEnum):
        words = ENUM_WORDS[kind]
        if word not in words:
            raise PolicyValueError(f"{name}: expected one of {', '.join(words)}, got {text!r}")
        return words[word]
    if kind == "int|None" and word in UNLIMITED_WORDS:
        return None
    return parse_int(word, error=lambda _: _not_a_number(name, text), what=name)


def _not_a_number(name: str, text: str) -> PolicyValueError:
    return PolicyValueError(f"{name}: expected a whole number, got {text!r}")


def policy_to_record(policy: Policy) -> dict[str, Any]:
    """The policy as a JSON-able record: enums by name, lists for tuples, a version."""
    record: dict[str, Any] = {"v": POLICY_SCHEMA_VERSION}
    for f in dataclasses.fields(policy):
        value = getattr(policy, f.name)
        if isinstance(value, IntEnum):
            value = enum_word(value)
        elif isinstance(value, tuple):
            value = list(value)
        record[f.name] = value
    return record


def policy_from_record(record: dict[str, Any]) -> Policy:
    """Back from `policy_to_record`. Settings this version does not know are ignored and
    missing ones take their default, so records survive upgrades both ways."""
    version = record.get("v", 0)
    if not isinstance(version, int) or version > POLICY_SCHEMA_VERSION:
        raise PolicyValueError(f"policy record schema {version!r} is newer than this program")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Policy):
        if f.name not in record:
            continue
        value = record[f.name]
        kind = setting_kind(f.name)
        if isinstance(kind, type) and issubclass(kind, IntEnum):
            value = parse_setting(f.name, str(value))
        elif kind is tuple:
            value = tuple(str(v) for v in value or ())
        values[f.name] = value
    return Policy(**values)
