"""A small EAS client for the tests: speaks ActiveSync over real HTTPS (Python's
http.client, HTTP/1.1 keep-alive) with either query form, builds WBXML with the project's
codec, and checks every WBXML body the server sends with `wbxml2xml` as well as our own
decoder (`check_with_libwbxml`).

Blocking on purpose: the same client drives the in-process test server (which runs in
its own thread) and the real server of the end-to-end tests. Later suites (Sync, Ping,
SendMail, ...) extend it with builders for their documents.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import ssl
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from wbxml_tool import check_with_libwbxml

from protocols.activesync.wbxml import E, Element, encode

WBXML = "application/vnd.ms-sync.wbxml"
EAS_PATH = "/Microsoft-Server-ActiveSync"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
MOBILESYNC_REQUEST = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
)
MOBILESYNC_RESPONSE = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)
OUTLOOK_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"

# MS-ASHTTP 2.2.1.1.1.1.2 command codes, for the base64 query.
COMMAND_CODES = {
    "Sync": 0, "SendMail": 1, "SmartForward": 2, "SmartReply": 3, "GetAttachment": 4,
    "FolderSync": 9, "FolderCreate": 10, "FolderDelete": 11, "FolderUpdate": 12,
    "MoveItems": 13, "GetItemEstimate": 14, "MeetingResponse": 15, "Search": 16,
    "Settings": 17, "Ping": 18, "ItemOperations": 19, "Provision": 20,
    "ResolveRecipients": 21, "ValidateCert": 22, "Find": 23,
}  # fmt: skip
PARAM_TAGS = {
    "AttachmentName": 0, "CollectionId": 1, "CollectionName": 2, "ItemId": 3, "LongId": 4,
    "ParentId": 5, "Occurrence": 6, "Options": 7, "User": 8,
}  # fmt: skip


def base64_query(
    *,
    version: str,
    command: str,
    device_id: bytes,
    device_type: str,
    policy_key: int | None = None,
    locale: int = 0x0409,
    params: Mapping[str, str | bytes] | None = None,
) -> str:
    """MS-ASHTTP 2.2.1.1.1.1: the query as base64 of the packed fields."""
    major, minor = version.split(".")
    out = bytes([int(major) * 10 + int(minor), COMMAND_CODES[command]])
    out += struct.pack("<H", locale)
    out += bytes([len(device_id)]) + device_id
    out += b"\x00" if policy_key is None else b"\x04" + struct.pack("<I", policy_key)
    out += bytes([len(device_type)]) + device_type.encode("ascii")
    for name, value in (params or {}).items():
        raw = value if isinstance(value, bytes) else value.encode("utf-8")
        out += bytes([PARAM_TAGS[name], len(raw)]) + raw
    return base64.b64encode(out).decode("ascii")


def basic(login: str, password: str, encoding: str = "utf-8") -> str:
    return "Basic " + base64.b64encode(f"{login}:{password}".encode(encoding)).decode()


@dataclass
class EasResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    document: Element | None = None

    def text(self, path: str) -> str | None:
        assert self.document is not None, f"no WBXML body (HTTP {self.status})"
        return self.document.text_of(path)

    def status_at(self, path: str = "Status") -> int:
        value = self.text(path)
        assert value is not None, f"no {path} in {self.document}"
        return int(value)


@dataclass
class EasClient:
    port: int
    context: ssl.SSLContext
    user: str
    password: str
    device_id: str = "ApplF17XR4Y2JCLM"
    device_type: str = "iPhone"
    version: str = "16.1"
    base64_form: bool = False
    raw_device_id: bytes | None = None  # base64 form: send these bytes as the DeviceId
    host: str = "localhost"
    user_agent: str = "Apple-iPhone15C2/2101.1"
    login: str | None = None  # the Basic user name, when not `user`
    auth_encoding: str = "utf-8"
    policy_key: str | None = None
    _connection: http.client.HTTPSConnection | None = field(default=None, repr=False)

    # --- plumbing ---------------------------------------------------------------------

    def connection(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(
                self.host, self.port, context=self.context, timeout=30
            )
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def authorization(self) -> str:
        return basic(self.login or self.user, self.password, self.auth_encoding)

    def request(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        *,
        auth: bool = True,
    ) -> EasResponse:
        all_headers = {"User-Agent": self.user_agent}
        if auth:
            all_headers["Authorization"] = self.authorization()
        all_headers.update(headers or {})
        connection = self.connection()
        try:
            connection.request(method, target, body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
        except (http.client.HTTPException, OSError):
            self.close()
            raise
        response_headers = {k.lower(): v for k, v in response.getheaders()}
        if response_headers.get("connection", "").lower() == "close":
            self.close()
        result = EasResponse(response.status, response_headers, data)
        if "content-length" in response_headers:
            assert int(response_headers["content-length"]) == len(data)
        assert "transfer-encoding" not in response_headers
        content_type = response_headers.get("content-type", "")
        if content_type.startswith(WBXML) and data:
            payload = data
            if response_headers.get("content-encoding") == "gzip":
                payload = gzip.decompress(data)
            result.document = check_with_libwbxml(payload)
        return result

    # --- ActiveSync ---------------------------------------------------------------------

    def target(
        self,
        command: str,
        *,
        params: Mapping[str, str] | None = None,
        policy_key: str | None = None,
        version: str | None = None,
    ) -> str:
        if self.base64_form:
            key = int(policy_key) if policy_key and policy_key.isdigit() else None
            query = base64_query(
                version=version or self.version,
                command=command,
                device_id=self.raw_device_id or self.device_id.encode("ascii"),
                device_type=self.device_type,
                policy_key=key,
                params=params,
            )
            return f"{EAS_PATH}?{query}"
        fields = {
            "Cmd": command,
            "User": self.user,
            "DeviceId": self.device_id,
            "DeviceType": self.device_type,
        }
        fields.update(params or {})
        return f"{EAS_PATH}?{urlencode(fields)}"

    def options(self, *, auth: bool = True) -> EasResponse:
        return self.request("OPTIONS", EAS_PATH, auth=auth)

    def command(
        self,
        command: str,
        document: Element | None = None,
        *,
        body: bytes | None = None,
        content_type: str = WBXML,
        policy_key: Any = ...,
        version: str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        gzip_body: bool = False,
    ) -> EasResponse:
        """POST one command. `policy_key` defaults to the client's current key; None sends
        no X-MS-PolicyKey."""
        key = self.policy_key if policy_key is ... else policy_key
        payload = body if body is not None else (encode(document) if document else b"")
        all_headers = {"Content-Type": content_type}
        if not self.base64_form:
            all_headers["MS-ASProtocolVersion"] = version or self.version
            if key is not None:
                all_headers["X-MS-PolicyKey"] = str(key)
        if gzip_body:
            payload = gzip.compress(payload)
            all_headers["Content-Encoding"] = "gzip"
        all_headers.update(headers or {})
        target = self.target(command, params=params, policy_key=key, version=version)
        return self.request("POST", target, payload, all_headers)

    def provision_initial(self, *, device_information: bool = True) -> EasResponse:
        return self.command("Provision", provision_request(device_information), policy_key=None)

    def acknowledge(self, temporary_key: str, status: int = 1) -> EasResponse:
        return self.command("Provision", acknowledgement(temporary_key, status))

    def provision(self) -> str:
        """Both phases (MS-ASPROV 3.1.5.1); keeps and returns the final key."""
        first = self.provision_initial(device_information=self.version in ("14.1", "16.0", "16.1"))
        assert first.status == 200, first
        assert first.status_at("Status") == 1, first.document
        temporary = first.text("Policies/Policy/PolicyKey")
        assert temporary
        self.policy_key = temporary
        second = self.acknowledge(temporary)
        assert second.status_at("Status") == 1, second.document
        assert second.status_at("Policies/Policy/Status") == 1, second.document
        final = second.text("Policies/Policy/PolicyKey")
        assert final and final != temporary
        self.policy_key = final
        return final

    def autodiscover(
        self, email: str, schema: str = MOBILESYNC_RESPONSE, *, path: str | None = None
    ) -> EasResponse:
        body = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<Autodiscover xmlns="{MOBILESYNC_REQUEST}"><Request>'
            f"<EMailAddress>{email}</EMailAddress>"
            f"<AcceptableResponseSchema>{schema}</AcceptableResponseSchema>"
            "</Request></Autodiscover>"
        ).encode()
        return self.request(
            "POST",
            path or "/autodiscover/autodiscover.xml",
            body,
            {"Content-Type": "text/xml"},
        )


# --- documents --------------------------------------------------------------------------


def device_information_set(**overrides: str) -> Element:
    values = {
        "Model": "iPhone15C2",
        "IMEI": "356938035643809",
        "FriendlyName": "Alice's iPhone",
        "OS": "iOS 17.4 21E219",
        "OSLanguage": "en",
        "PhoneNumber": "+15555550100",
        "UserAgent": "Apple-iPhone15C2/2101.1",
        "MobileOperator": "Carrier",
    }
    values.update(overrides)
    return E(
        "Settings:DeviceInformation",
        E("Settings:Set", (E(f"Settings:{name}", value) for name, value in values.items())),
    )


def provision_request(device_information: bool = True) -> Element:
    return E(
        "Provision:Provision",
        device_information_set() if device_information else None,
        E("Provision:Policies", E("Provision:Policy", E("Provision:PolicyType", POLICY_TYPE))),
    )


def acknowledgement(key: str, status: int = 1) -> Element:
    # MS-ASPROV 2.2.2.41: PolicyKey before Status in the acknowledgement.
    return E(
        "Provision:Provision",
        E(
            "Provision:Policies",
            E(
                "Provision:Policy",
                E("Provision:PolicyType", POLICY_TYPE),
                E("Provision:PolicyKey", key),
                E("Provision:Status", status),
            ),
        ),
    )


def wipe_acknowledgement(status: int = 1, *, account_only: bool = False) -> Element:
    tag = "Provision:AccountOnlyRemoteWipe" if account_only else "Provision:RemoteWipe"
    return E("Provision:Provision", E(tag, E("Provision:Status", status)))


def user_information() -> Element:
    return E("Settings:Settings", E("Settings:UserInformation", E("Settings:Get")))


def folder_sync(key: str = "0") -> Element:
    return E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", key))
