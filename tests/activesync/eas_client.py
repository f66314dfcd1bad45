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


# --- mail commands (Sync, Ping, SendMail, ...) ------------------------------------------


def body_preference(
    kind: int,
    truncation: int | None = None,
    *,
    all_or_none: bool = False,
    preview: int | None = None,
) -> Element:
    return E(
        "AirSyncBase:BodyPreference",
        E("AirSyncBase:Type", kind),
        E("AirSyncBase:TruncationSize", truncation) if truncation is not None else None,
        E("AirSyncBase:AllOrNone", 1) if all_or_none else None,
        E("AirSyncBase:Preview", preview) if preview is not None else None,
    )


def sync_options(
    *prefs: Element, filter_type: int | None = None, mime_support: int | None = None
) -> Element:
    return E(
        "AirSync:Options",
        E("AirSync:FilterType", filter_type) if filter_type is not None else None,
        E("AirSync:MIMESupport", mime_support) if mime_support is not None else None,
        list(prefs),
    )


def sync_collection(
    collection_id: str,
    key: str,
    *,
    window: int | None = None,
    get_changes: bool | None = None,
    options: Element | None = None,
    commands: list[Element] | None = None,
    deletes_as_moves: bool | None = None,
) -> Element:
    # MS-ASCMD 2.2.3.29.2: SyncKey, CollectionId, DeletesAsMoves, GetChanges, WindowSize,
    # Options, Commands (in this order).
    return E(
        "AirSync:Collection",
        E("AirSync:SyncKey", key),
        E("AirSync:CollectionId", collection_id),
        E("AirSync:DeletesAsMoves", 1 if deletes_as_moves else 0)
        if deletes_as_moves is not None
        else None,
        E("AirSync:GetChanges", 1 if get_changes else 0) if get_changes is not None else None,
        E("AirSync:WindowSize", window) if window is not None else None,
        options,
        E("AirSync:Commands", commands) if commands else None,
    )


def sync_request(
    *collections: Element,
    wait: int | None = None,
    heartbeat: int | None = None,
    partial: bool = False,
) -> Element:
    return E(
        "AirSync:Sync",
        E("AirSync:Collections", list(collections)) if collections else None,
        E("AirSync:Wait", wait) if wait is not None else None,
        E("AirSync:HeartbeatInterval", heartbeat) if heartbeat is not None else None,
        E("AirSync:Partial") if partial else None,
    )


def change_command(server_id: str, *data: Element) -> Element:
    return E("AirSync:Change", E("AirSync:ServerId", server_id), E("AirSync:ApplicationData", data))


def delete_command(server_id: str) -> Element:
    return E("AirSync:Delete", E("AirSync:ServerId", server_id))


def fetch_command(server_id: str) -> Element:
    return E("AirSync:Fetch", E("AirSync:ServerId", server_id))


def ping_request(heartbeat: int | None, *folders: str) -> Element:
    return E(
        "Ping:Ping",
        E("Ping:HeartbeatInterval", heartbeat) if heartbeat is not None else None,
        E(
            "Ping:Folders",
            [E("Ping:Folder", E("Ping:Id", f), E("Ping:Class", "Email")) for f in folders],
        )
        if folders
        else None,
    )


def send_mail(mime: bytes, client_id: str, *, save: bool = True) -> Element:
    return E(
        "ComposeMail:SendMail",
        E("ComposeMail:ClientId", client_id),
        E("ComposeMail:SaveInSentItems") if save else None,
        E("ComposeMail:Mime", mime),
    )


def smart(
    command: str,
    mime: bytes,
    client_id: str,
    folder_id: str,
    item_id: str,
    *,
    replace_mime: bool = False,
    save: bool = True,
) -> Element:
    return E(
        f"ComposeMail:{command}",
        E("ComposeMail:ClientId", client_id),
        E("ComposeMail:SaveInSentItems") if save else None,
        E("ComposeMail:ReplaceMime") if replace_mime else None,
        E(
            "ComposeMail:Source",
            E("ComposeMail:FolderId", folder_id),
            E("ComposeMail:ItemId", item_id),
        ),
        E("ComposeMail:Mime", mime),
    )


def move_items(*moves: tuple[str, str, str]) -> Element:
    return E(
        "Move:MoveItems",
        [
            E("Move:Move", E("Move:SrcMsgId", s), E("Move:SrcFldId", f), E("Move:DstFldId", d))
            for s, f, d in moves
        ],
    )


def fetch_attachment(reference: str, range_: str | None = None) -> Element:
    return E(
        "ItemOperations:ItemOperations",
        E(
            "ItemOperations:Fetch",
            E("ItemOperations:Store", "Mailbox"),
            E("AirSyncBase:FileReference", reference),
            E("ItemOperations:Options", E("ItemOperations:Range", range_)) if range_ else None,
        ),
    )


def search_mailbox(
    text: str, *, collection: str | None = None, range_: str = "0-9", deep: bool = False
) -> Element:
    return E(
        "Search:Search",
        E(
            "Search:Store",
            E("Search:Name", "Mailbox"),
            E(
                "Search:Query",
                E(
                    "Search:And",
                    E("AirSync:Class", "Email"),
                    E("AirSync:CollectionId", collection) if collection else None,
                    E("Search:FreeText", text),
                ),
            ),
            E(
                "Search:Options",
                E("Search:RebuildResults"),
                E("Search:DeepTraversal") if deep else None,
                E("Search:Range", range_),
                body_preference(1, 200),
            ),
        ),
    )


@dataclass
class FolderList:
    """FolderSync's answer as a lookup: type -> folder id, name -> folder id."""

    key: str
    by_type: dict[int, str]
    by_name: dict[str, str]
    count: int


def folder_list(response: EasResponse) -> FolderList:
    assert response.document is not None, response
    assert response.status_at("Status") == 1, response.document
    key = response.text("SyncKey") or ""
    by_type: dict[int, str] = {}
    by_name: dict[str, str] = {}
    adds = response.document.findall("Changes/Add")
    for add in adds:
        folder_id = add.text_of("ServerId") or ""
        by_type.setdefault(int(add.text_of("Type") or 0), folder_id)
        by_name[add.text_of("DisplayName") or ""] = folder_id
    return FolderList(key, by_type, by_name, int(response.text("Changes/Count") or 0))


@dataclass
class SyncResult:
    key: str
    status: int
    adds: dict[str, Element]
    changes: dict[str, Element]
    deletes: list[str]
    soft_deletes: list[str]
    more: bool
    responses: list[Element]
    collection: Element


def sync_result(response: EasResponse, collection_id: str | None = None) -> SyncResult:
    assert response.status == 200 and response.document is not None, response
    for collection in response.document.findall("Collections/Collection"):
        if collection_id is not None and collection.text_of("CollectionId") != collection_id:
            continue
        commands = collection.find("Commands")
        adds: dict[str, Element] = {}
        changes: dict[str, Element] = {}
        deletes: list[str] = []
        soft: list[str] = []
        for command in commands.children if commands is not None else ():
            sid = command.text_of("ServerId") or ""
            if command.tag == "Add":
                adds[sid] = command.find("ApplicationData") or command
            elif command.tag == "Change":
                changes[sid] = command.find("ApplicationData") or command
            elif command.tag == "Delete":
                deletes.append(sid)
            elif command.tag == "SoftDelete":
                soft.append(sid)
        responses = collection.find("Responses")
        return SyncResult(
            key=collection.text_of("SyncKey") or "",
            status=int(collection.text_of("Status") or 0),
            adds=adds,
            changes=changes,
            deletes=deletes,
            soft_deletes=soft,
            more=collection.find("MoreAvailable") is not None,
            responses=list(responses.children) if responses is not None else [],
            collection=collection,
        )
    raise AssertionError(f"no collection {collection_id} in {response.document}")


# --- an in-process server with a real store (Sync, Ping, SendMail, ... tests) ------------


class FakeHubDirectory:
    """`HubDirectory` over data: example.org is ours, the accounts' addresses are local."""

    def __init__(self, accounts: Any, domains: Mapping[str, Any]) -> None:
        self.accounts = list(accounts)
        self.domains = dict(domains)

    def domain_kind(self, domain: str) -> Any:
        return self.domains.get(domain.lower())

    def local_recipient(self, address: str) -> Any:
        from transport.hub import LocalRecipient

        for account in self.accounts:
            if address.lower() in {a.lower() for a in account.addresses}:
                return LocalRecipient(account.mailbox_id, account.address)
        return None

    def addresses_of(self, owner: str) -> tuple[str, ...]:
        for account in self.accounts:
            if account.address == owner:
                return tuple(a.lower() for a in account.addresses)
        return ()


@dataclass
class MailEnv:
    """The ActiveSync app with the mail commands over a real store in a temporary folder."""

    env: Any  # eas_env.EasEnv
    store: Any  # store.Store
    services: Any  # MailServices
    root: Any  # Path

    def client(self, *args: Any, **kwargs: Any) -> EasClient:
        client: EasClient = self.env.client(*args, **kwargs)
        return client

    def deliver(self, mailbox_id: str, message: bytes, folder: str = "Inbox", **kw: Any) -> int:
        results = self.store.deliver(message, [mailbox_id], folder, **kw)
        assert results[0].ok, results[0].error
        uid: int = results[0].uid
        return uid

    def folder(self, mailbox_id: str, name: str = "Inbox") -> Any:
        return self.store.open_mailbox(mailbox_id).folder(name)


def start_mail_env(make_env: Any, root: Any, *, accounts: Any, settings: Any = None,
                   recipients: Any = None, fsync: bool = False,
                   drain: Any = None) -> MailEnv:  # fmt: skip
    from pathlib import Path

    from protocols.activesync.commands import MailServices, default_commands
    from protocols.activesync.syncstate import SyncStateStore
    from store import Store
    from transport.hub import DomainKind, Hub
    from transport.submission import Submitter

    root = Path(root)
    store = Store(root / "mailboxes", hostname="mail.example.org", fsync=fsync)
    directory = FakeHubDirectory(accounts, {"example.org": DomainKind.AUTHORITATIVE})
    hub = Hub(directory, store, spool_dir=root / "spool")
    services = MailServices(
        store=store,
        states=SyncStateStore(root / "activesync", fsync=fsync),
        submitter=Submitter(hub, hostname="mail.example.org"),
        recipients=recipients,
    )
    commands = default_commands(recipients=recipients, mail=services)
    env = make_env(settings=settings, commands=commands, drain=drain)
    return MailEnv(env, store, services, root)


def simple_message(subject: str, *, sender: str = "carol@example.org",
                   to: str = "alice@example.org", body: str = "Hello there.\r\n",
                   extra: str = "") -> bytes:  # fmt: skip
    return (
        f"From: Carol <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash(subject))}.{len(body)}@example.org>\r\n"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n{extra}\r\n{body}"
    ).encode()
