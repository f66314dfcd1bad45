"""The contract between the HTTP front end and the command handlers.

A handler is `async def handler(ctx: CommandContext) -> CommandReply`. By the time it
runs, the front end has authenticated the user, parsed the query, found (or created)
the device's partnership, enforced provisioning and remote wipe, and decoded the WBXML
body. The handler answers with a document (or an empty body); the front end encodes it,
sets Content-Length and the EAS headers, and turns an exception into a logged server
error. Commands are registered in a `CommandTable` (name -> CommandSpec), so a new
command is a new entry, never a change to the front end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

import trio

from protocols.auth import Account

from .devices import AsyncDevices, Device
from .http import BODY_IDLE_TIMEOUT
from .notices import Notices
from .policy import Policy
from .request import EasQuery, ProtocolVersion
from .wbxml import Element

WBXML_CONTENT_TYPE: Final = "application/vnd.ms-sync.wbxml"  # MS-ASHTTP 2.2.2.2.1
MULTIPART_CONTENT_TYPE: Final = "application/vnd.ms-sync.multipart"  # MS-ASCMD 2.2.1.10.1

# MS-ASCMD 2.2.3.79.1 (Ping HeartbeatInterval) and Exchange's defaults: 60 s to 59 min.
DEFAULT_HEARTBEAT_MIN: Final = 60
DEFAULT_HEARTBEAT_MAX: Final = 3540
MAX_HEARTBEAT: Final = 3540  # MS-ASCMD 2.2.3.79.1: at most 59 minutes
# Request bodies: a 35 MB message as ComposeMail:Mime (the WBXML decoder's document limit).
DEFAULT_MAX_REQUEST_BODY: Final = 36 * 1024 * 1024
# Requests being worked on at once (a long poll that waits gives its slot back).
DEFAULT_MAX_CONCURRENT_REQUESTS: Final = 256
# Request bodies are read before a request takes a slot; all of them together may hold
# this many maximum-size bodies in memory (8 x 36 MB), past which a body gets 503.
DEFAULT_BODIES_IN_MEMORY: Final = 8
DEFAULT_RETRY_AFTER: Final = 30  # seconds, for 503 (MS-ASHTTP 3.1.5.2)
# Exchange 2010 SP1's default MaxDevicePartnerships-like cap; status 177 past it.
DEFAULT_MAX_DEVICES_PER_USER: Final = 100


@dataclass(frozen=True, slots=True)
class MailPorts:
    """Public ports of the mail listeners for autoconfig and configuration profiles;
    None leaves that server out. The standard ports unless a firewall maps others."""

    imaps: int | None = 993
    pop3s: int | None = 995
    submissions: int | None = 465
    submission: int | None = 587


@dataclass(frozen=True, slots=True)
class ActiveSyncSettings:
    """Static settings of the ActiveSync virtual directory and Autodiscover (the service
    builds it from the config file; a reload hands in a new one)."""

    # Exchange's virtual directory has an external and an internal URL; Autodiscover
    # hands out the external one.
    external_url: str
    internal_url: str | None = None
    # `DOMAIN\user` logins are checked against this NetBIOS-style name when set (the
    # domain part is ignored otherwise).
    netbios_domain: str | None = None
    realm: str | None = None  # WWW-Authenticate realm; default: the external URL's host
    server_version: str = "16.1"  # MS-Server-ActiveSync (MS-ASHTTP 2.2.2.1.2); clients ignore
    heartbeat_min: int = DEFAULT_HEARTBEAT_MIN
    heartbeat_max: int = DEFAULT_HEARTBEAT_MAX
    max_request_body: int = DEFAULT_MAX_REQUEST_BODY
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    # Request body bytes held at once over all requests (`http.BodyMemory`); None is
    # DEFAULT_BODIES_IN_MEMORY bodies of max_request_body.
    max_body_memory: int | None = None
    retry_after: int = DEFAULT_RETRY_AFTER
    max_devices_per_user: int = DEFAULT_MAX_DEVICES_PER_USER
    gzip_responses: bool = True
    body_idle_timeout: float = BODY_IDLE_TIMEOUT
    # Autoconfig and configuration profiles (mail clients that are not EAS).
    mail_host: str | None = None  # default: the external URL's host
    mail_ports: MailPorts = field(default_factory=MailPorts)
    organization: str = ""  # shown in configuration profiles
    # Client certificates on the virtual directory: "ignore", "accept" or "require"
    # (clientcert.ClientCertificateMode); the TLS layer verifies them.
    client_certificates: str = "ignore"

    def errors(self) -> list[str]:
        """What is wrong with these settings (the config loader refuses them)."""
        errors: list[str] = []
        for name in ("external_url", "internal_url"):
            url = getattr(self, name)
            if url is not None:
                parts = urlsplit(url)
                if parts.scheme != "https" or not parts.hostname:
                    errors.append(f"{name}: want an https:// URL, got {url!r}")
        if not 1 <= self.heartbeat_min <= self.heartbeat_max <= MAX_HEARTBEAT:
            errors.append(
                f"heartbeat_min/heartbeat_max: want 1 <= min <= max <= {MAX_HEARTBEAT} seconds"
            )
        for name in ("max_request_body", "max_concurrent_requests", "max_devices_per_user"):
            if getattr(self, name) < 1:
                errors.append(f"{name}: must be at least 1")
        if self.max_body_memory is not None and self.max_body_memory < self.max_request_body:
            errors.append("max_body_memory: must hold at least one body of max_request_body")
        if self.retry_after < 1 or self.body_idle_timeout <= 0:
            errors.append("retry_after and body_idle_timeout must be positive")
        if self.netbios_domain is not None and not self.netbios_domain.strip():
            errors.append("netbios_domain: empty")
        if self.client_certificates not in ("ignore", "accept", "require"):
            errors.append("client_certificates: want ignore, accept or require")
        return errors

    @property
    def body_memory(self) -> int:
        """Request body bytes all requests may hold at once."""
        if self.max_body_memory is not None:
            return self.max_body_memory
        return DEFAULT_BODIES_IN_MEMORY * self.max_request_body

    @property
    def public_host(self) -> str:
        return urlsplit(self.external_url).hostname or "localhost"

    @property
    def mail_server(self) -> str:
        return self.mail_host or self.public_host

    @property
    def challenge_realm(self) -> str:
        return self.realm or self.public_host


class Slots:
    """Counts requests being worked on; past the limit the front end answers 503 at once
    instead of queueing (MS-ASHTTP 3.1.5.2: 503 with Retry-After makes devices back off)."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self.busy = 0

    def try_acquire(self) -> bool:
        if self.busy >= self._limit():
            return False
        self.busy += 1
        return True

    def release(self) -> None:
        self.busy -= 1


@dataclass(slots=True)
class CommandContext:
    """Everything a handler may need about the request it answers."""

    command: str
    version: ProtocolVersion
    query: EasQuery
    account: Account
    device: Device  # the partnership as it was when the request arrived
    policy: Policy
    document: Element | None  # the decoded WBXML body; None when empty or not WBXML
    body: bytes  # the raw body (after Content-Encoding), e.g. 12.1 SendMail MIME
    content_type: str
    headers: Mapping[str, str]  # lower-case names; repeated headers joined with ", "
    peer: str
    devices: AsyncDevices
    settings: ActiveSyncSettings
    clock: Callable[[], float]
    disconnected: trio.Event  # set when the client goes away (long polls stop waiting)
    slots: Slots
    notices: Notices | None = None  # mail to the user about their devices
    # Set when the server starts shutting down: long polls answer at once (Ping with
    # "no changes", Sync with Wait with an empty 200), so the client asks again and
    # reaches the restarted server instead of holding the shutdown up.
    draining: trio.Event | None = None

    @property
    def user_agent(self) -> str:
        return self.headers.get("user-agent", "")

    @property
    def accept_multipart(self) -> bool:
        """MS-ASHTTP 2.2.1.1.2.5 MS-ASAcceptMultiPart: T, or the base64 query's option bit."""
        return self.query.accept_multipart or (
            self.headers.get("ms-asacceptmultipart", "").strip().upper() == "T"
        )

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Wrap a long wait (Ping, Sync with Wait): the request gives back its overload slot
        while it holds no resources, so 10,000 held Pings do not lock others out."""
        self.slots.release()
        try:
            yield
        finally:
            self.slots.busy += 1  # re-taken unconditionally: the request is finishing


@dataclass(frozen=True, slots=True)
class CommandReply:
    """What a handler answers: a WBXML document, raw bytes, or nothing (an empty 200 where
    the spec allows one, MS-ASHTTP 3.2.5.1)."""

    document: Element | None = None
    body: bytes = b""
    content_type: str | None = None  # default: WBXML when there is a document or body
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def wbxml(cls, document: Element) -> CommandReply:
        return cls(document=document)

    @classmethod
    def empty(cls) -> CommandReply:
        return cls()


Handler = Callable[[CommandContext], Awaitable[CommandReply]]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A registered command. `needs_provisioning` False lets a device without a current
    policy key through (Provision itself; a Ping handler may choose it, as grommunio-sync
    does). Remote wipe and blocked devices are enforced for every command regardless."""

    handler: Handler
    needs_provisioning: bool = True
    min_version: ProtocolVersion = ProtocolVersion.V12_1
    max_version: ProtocolVersion = ProtocolVersion.V16_1

    def supports(self, version: ProtocolVersion) -> bool:
        return self.min_version <= version <= self.max_version


CommandTable = Mapping[str, CommandSpec]
