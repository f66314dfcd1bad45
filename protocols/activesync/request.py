"""What an EAS request says before its body is read (MS-ASHTTP 2.2.1.1): the query in its
plain or base64 form, the protocol version, the policy key and the Basic credentials.

Sans-IO: strings and bytes in, frozen values out. Every malformed input raises
`RequestError`, which the front end answers with 400 (MS-ASHTTP 3.1.5.2).
"""

from __future__ import annotations

import base64
import binascii
import re
import string
import struct
from dataclasses import dataclass
from enum import Enum
from typing import Final
from urllib.parse import parse_qsl, unquote_to_bytes


class RequestError(ValueError):
    """The request line or headers cannot be used; answered with 400 and logged."""


class ProtocolVersion(Enum):
    """The versions this server speaks (MS-ASHTTP 2.2.1.1.2.6). 2.5 and 12.0 use a
    different policy format and no base64 query; they are refused with 400."""

    V12_1 = "12.1"
    V14_0 = "14.0"
    V14_1 = "14.1"
    V16_0 = "16.0"
    V16_1 = "16.1"

    @property
    def number(self) -> int:
        """The version times ten, as the base64 query's first byte has it (121, 141, ...)."""
        major, minor = self.value.split(".")
        return int(major) * 10 + int(minor)

    def __ge__(self, other: ProtocolVersion) -> bool:
        return self.number >= other.number

    def __gt__(self, other: ProtocolVersion) -> bool:
        return self.number > other.number

    def __le__(self, other: ProtocolVersion) -> bool:
        return self.number <= other.number

    def __lt__(self, other: ProtocolVersion) -> bool:
        return self.number < other.number

    @property
    def uses_http_449(self) -> bool:
        """≤12.1 is told to provision with HTTP 449; 14.0+ with status 142-144 in the
        command's body (MS-ASCMD 3.1.5.1, MS-ASPROV 3.2.5.1)."""
        return self.number <= 121


SUPPORTED_VERSIONS: Final = tuple(ProtocolVersion)
LOWEST_VERSION: Final = ProtocolVersion.V12_1
_BY_NUMBER: Final = {v.number: v for v in ProtocolVersion}
_BY_TEXT: Final = {v.value: v for v in ProtocolVersion}

# MS-ASHTTP 2.2.1.1.1.1.2: command codes of the base64 query.
COMMAND_CODES: Final[dict[int, str]] = {
    0: "Sync",
    1: "SendMail",
    2: "SmartForward",
    3: "SmartReply",
    4: "GetAttachment",
    5: "GetHierarchy",  # 5-8: 2.5 commands, never served
    6: "CreateCollection",
    7: "DeleteCollection",
    8: "MoveCollection",
    9: "FolderSync",
    10: "FolderCreate",
    11: "FolderDelete",
    12: "FolderUpdate",
    13: "MoveItems",
    14: "GetItemEstimate",
    15: "MeetingResponse",
    16: "Search",
    17: "Settings",
    18: "Ping",
    19: "ItemOperations",
    20: "Provision",
    21: "ResolveRecipients",
    22: "ValidateCert",
    23: "Find",
}
COMMAND_NAMES: Final = frozenset(COMMAND_CODES.values())

# MS-ASHTTP 2.2.1.1.1.1.3: tags of the base64 query's command parameters.
_PARAM_ATTACHMENT_NAME: Final = 0
_PARAM_COLLECTION_ID: Final = 1
_PARAM_COLLECTION_NAME: Final = 2
_PARAM_ITEM_ID: Final = 3
_PARAM_LONG_ID: Final = 4
_PARAM_PARENT_ID: Final = 5
_PARAM_OCCURRENCE: Final = 6
_PARAM_OPTIONS: Final = 7
_PARAM_USER: Final = 8
OPTION_SAVE_IN_SENT: Final = 0x01  # MS-ASHTTP 2.2.1.1.1.1.3 Options bit
OPTION_ACCEPT_MULTIPART: Final = 0x02

# Limits. MS-ASHTTP 2.2.1.1.1.2 caps DeviceId at 32 alphanumerics, but real devices send
# longer ids and other characters (checklist 1.2): accept up to 128 of a safe set.
MAX_DEVICE_ID_LENGTH: Final = 128
MAX_DEVICE_ID_BYTES: Final = 64  # raw bytes in the base64 form (hex-encoded: 128 chars)
MAX_DEVICE_TYPE_LENGTH: Final = 64  # MS-ASHTTP says 16; phones send model names
MAX_QUERY_LENGTH: Final = 4096  # the whole query string; real ones are < 300
MAX_PARAMETER_LENGTH: Final = 1024  # one parameter value (LongId, AttachmentName, ...)
MAX_POLICY_KEY_LENGTH: Final = 64  # MS-ASPROV 2.2.2.42: a string of at most 64 characters
MAX_POLICY_KEY: Final = 0xFFFF_FFFF  # MS-ASPROV 2.2.2.42: SHOULD be a uint32
MAX_AUTHORIZATION_LENGTH: Final = 4096  # base64 of user name and password

_DEVICE_ID_CHARS: Final = frozenset(string.ascii_lowercase + string.digits + "-_.")
_DEVICE_TYPE_CHARS: Final = frozenset(string.ascii_letters + string.digits + "-_. ()+,:")
_POLICY_KEY: Final = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True, slots=True)
class EasQuery:
    """The request URI's parameters (MS-ASHTTP 2.2.1.1.1), from either form."""

    command: str
    device_id: str  # normalised: see normalize_device_id
    device_type: str
    user: str = ""  # as the client typed it; the login decides who it is
    version: ProtocolVersion | None = None  # base64 form only: byte 0
    policy_key: int | None = None  # base64 form only; None = field absent
    policy_key_sent: bool = False
    locale: int | None = None  # base64 form only, e.g. 0x0409
    item_id: str | None = None
    collection_id: str | None = None
    collection_name: str | None = None
    parent_id: str | None = None
    attachment_name: str | None = None
    long_id: str | None = None
    occurrence: str | None = None
    save_in_sent: bool = False
    accept_multipart: bool = False
    base64_form: bool = False


def parse_query(query: bytes | str) -> EasQuery:
    """The query string of a POST (without the `?`), in the plain (MS-ASHTTP 2.2.1.1.1.2)
    or base64 form (2.2.1.1.1.1): the plain form is recognised by its `Cmd=` parameter."""
    raw = query.encode("latin-1") if isinstance(query, str) else bytes(query)
    if not raw:
        raise RequestError("no query: Cmd, User, DeviceId and DeviceType are required")
    if len(raw) > MAX_QUERY_LENGTH:
        raise RequestError(f"query longer than {MAX_QUERY_LENGTH} bytes")
    text = raw.decode("latin-1")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise RequestError("query parameter is not UTF-8") from None
    if any(name.lower() == "cmd" for name, _ in pairs):
        return _parse_plain(pairs)
    return _parse_base64(text)


def _parse_plain(pairs: list[tuple[str, str]]) -> EasQuery:
    values: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key in values:
            raise RequestError(f"query parameter {name[:40]!r} given twice")
        if len(value) > MAX_PARAMETER_LENGTH:
            raise RequestError(f"query parameter {name[:40]!r} is too long")
        values[key] = value
    command = values.get("cmd", "")
    if not command:
        raise RequestError("Cmd is empty")  # MS-ASHTTP 2.2.1.1.1.2: required
    if "user" not in values:
        raise RequestError("User is missing")  # MS-ASHTTP 2.2.1.1.1.2: required
    device_id = normalize_device_id(values.get("deviceid", ""))
    device_type = normalize_device_type(values.get("devicetype", ""))
    return EasQuery(
        command=command,
        device_id=device_id,
        device_type=device_type,
        user=values["user"],
        item_id=values.get("itemid"),
        collection_id=values.get("collectionid"),
        attachment_name=values.get("attachmentname"),
        long_id=values.get("longid"),
        occurrence=values.get("occurrence"),
        save_in_sent=values.get("saveinsent", "").upper() == "T",  # MS-ASHTTP 2.2.1.1.1.2.5
    )


class _Reader:
    """Bounds-checked reads over the decoded base64 bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise RequestError(f"base64 query ends inside {what}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def sized(self, what: str) -> bytes:
        return self.take(self.byte(f"{what} length"), what)

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _parse_base64(text: str) -> EasQuery:
    encoded = unquote_to_bytes(text).strip()
    encoded += b"=" * (-len(encoded) % 4)  # some clients drop the padding
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("query is neither plain (Cmd=...) nor valid base64") from None
    reader = _Reader(data)
    version_byte = reader.byte("protocol version")  # MS-ASHTTP 2.2.1.1.1.1
    version = _BY_NUMBER.get(version_byte)
    if version is None:
        raise RequestError(f"base64 query: protocol version {version_byte / 10:.1f} unsupported")
    code = reader.byte("command code")
    command = COMMAND_CODES.get(code)
    if command is None:
        raise RequestError(f"base64 query: unknown command code {code}")
    (locale,) = struct.unpack("<H", reader.take(2, "locale"))
    raw_device_id = reader.sized("device id")
    if not raw_device_id or len(raw_device_id) > MAX_DEVICE_ID_BYTES:
        raise RequestError("base64 query: device id missing or too long")
    policy_key_bytes = reader.sized("policy key")
    if len(policy_key_bytes) not in (0, 4):  # MS-ASHTTP: length 0 or 4
        raise RequestError("base64 query: policy key length must be 0 or 4")
    policy_key = struct.unpack("<I", policy_key_bytes)[0] if policy_key_bytes else None
    try:
        device_type_text = reader.sized("device type").decode("ascii")
    except UnicodeDecodeError:
        raise RequestError("base64 query: device type is not ASCII") from None
    params: dict[int, bytes] = {}
    while not reader.done:
        tag = reader.byte("parameter tag")
        value = reader.sized("parameter value")
        if tag in params:
            raise RequestError(f"base64 query: parameter {tag} given twice")
        params[tag] = value
    options = params.get(_PARAM_OPTIONS, b"\x00")
    flags = options[0] if options else 0
    return EasQuery(
        command=command,
        device_id=_device_id_from_bytes(raw_device_id),
        device_type=normalize_device_type(device_type_text),
        user=_text_param(params, _PARAM_USER) or "",
        version=version,
        policy_key=policy_key,
        policy_key_sent=bool(policy_key_bytes),
        locale=locale,
        item_id=_text_param(params, _PARAM_ITEM_ID),
        collection_id=_text_param(params, _PARAM_COLLECTION_ID),
        collection_name=_text_param(params, _PARAM_COLLECTION_NAME),
        parent_id=_text_param(params, _PARAM_PARENT_ID),
        attachment_name=_text_param(params, _PARAM_ATTACHMENT_NAME),
        long_id=_text_param(params, _PARAM_LONG_ID),
        occurrence=_text_param(params, _PARAM_OCCURRENCE),
        save_in_sent=bool(flags & OPTION_SAVE_IN_SENT),
        accept_multipart=bool(flags & OPTION_ACCEPT_MULTIPART),
        base64_form=True,
    )


def _text_param(params: dict[int, bytes], tag: int) -> str | None:
    value = params.get(tag)
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(f"base64 query: parameter {tag} is not UTF-8") from None


def _device_id_from_bytes(raw: bytes) -> str:
    """Windows Phone and Outlook send 16 raw bytes; others ASCII. Text that is a valid id
    stays text (so the same phone is the same device in both forms); anything else is
    hex-encoded, as grommunio-sync does."""
    try:
        text = raw.decode("ascii").lower()
    except UnicodeDecodeError:
        return raw.hex()
    if text and all(c in _DEVICE_ID_CHARS for c in text):
        return text
    return raw.hex()


def normalize_device_id(value: str) -> str:
    """MS-ASHTTP 2.2.1.1.1.2.3 asks for 1-32 alphanumerics; accept what phones really send
    (longer ids, '-', '_', '.', a GUID in braces), case-folded as grommunio-sync does, so
    one phone is one partnership whatever case it uses. The result is safe in file names."""
    text = value.strip().strip("{}").lower()
    if not text:
        raise RequestError("DeviceId is missing")
    if len(text) > MAX_DEVICE_ID_LENGTH:
        raise RequestError(f"DeviceId is longer than {MAX_DEVICE_ID_LENGTH} characters")
    if not all(c in _DEVICE_ID_CHARS for c in text) or text.strip(".") == "":
        raise RequestError("DeviceId holds characters other than letters, digits, - _ .")
    return text


def normalize_device_type(value: str) -> str:
    text = value.strip()
    if not text:
        raise RequestError("DeviceType is missing")  # MS-ASHTTP 2.2.1.1.1.2.4: required
    if len(text) > MAX_DEVICE_TYPE_LENGTH:
        raise RequestError(f"DeviceType is longer than {MAX_DEVICE_TYPE_LENGTH} characters")
    if not all(c in _DEVICE_TYPE_CHARS for c in text):
        raise RequestError("DeviceType holds unexpected characters")
    return text


def parse_version(header: str | None) -> ProtocolVersion | None:
    """The MS-ASProtocolVersion header (MS-ASHTTP 2.2.1.1.2.6); None when absent."""
    if header is None:
        return None
    version = _BY_TEXT.get(header.strip())
    if version is None:
        raise RequestError(f"protocol version {header.strip()[:16]!r} is not supported")
    return version


@dataclass(frozen=True, slots=True)
class PolicyKeyField:
    """What the client sent as its policy key. `value` is None when the device claims
    no key (absent, empty or "0", MS-ASPROV 3.1.5.1.1); `malformed` when it sent
    something that cannot be one of our keys (not a uint32, or over 64 characters)."""

    value: int | None
    malformed: bool = False

    @property
    def absent(self) -> bool:
        return self.value is None and not self.malformed


NO_POLICY_KEY: Final = PolicyKeyField(None)


def parse_policy_key(text: str | None) -> PolicyKeyField:
    """The X-MS-PolicyKey header (MS-ASHTTP 2.2.1.1.2.9) or a Provision PolicyKey."""
    if text is None:
        return NO_POLICY_KEY
    text = text.strip()
    if text in ("", "0"):
        return NO_POLICY_KEY
    if len(text) > MAX_POLICY_KEY_LENGTH or not _POLICY_KEY.fullmatch(text):
        return PolicyKeyField(None, malformed=True)
    value = int(text)
    if not 0 < value <= MAX_POLICY_KEY:
        return PolicyKeyField(None, malformed=True)
    return PolicyKeyField(value)


def policy_key_from_query(query: EasQuery) -> PolicyKeyField:
    if not query.policy_key_sent or not query.policy_key:
        return NO_POLICY_KEY
    return PolicyKeyField(query.policy_key)


@dataclass(frozen=True, slots=True)
class BasicCredentials:
    login: str
    password: str
    domain: str | None  # the `DOMAIN` of `DOMAIN\user`, if given


def parse_basic_authorization(header: str | None) -> BasicCredentials | None:
    """RFC 7617 Basic credentials; None when absent, not Basic or malformed (all of which
    are answered with the 401 challenge). The pair is UTF-8 (RFC 7617 2.1 charset); Outlook
    sends ISO-8859-1 (noted by Z-Push), so bytes that are not UTF-8 are read as Latin-1."""
    if header is None or len(header) > MAX_AUTHORIZATION_LENGTH:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    if not sep or not user or not password or "\x00" in text:
        return None
    domain = None
    if "\\" in user:
        domain, _, _ = user.partition("\\")
    return BasicCredentials(user, password, domain or None)
