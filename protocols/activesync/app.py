"""The HTTPS front end: the ActiveSync virtual directory and Autodiscover as one ASGI app.

    app = make_app(settings=lambda: eas_settings, checker=authenticator,
                   devices=registry, policies=FixedPolicySource(),
                   commands=default_commands(recipients=lookup))

Routes (paths matched case-insensitively, a trailing slash ignored):

| path                                           | methods            | auth  |
|------------------------------------------------|--------------------|-------|
| /Microsoft-Server-ActiveSync                   | POST, OPTIONS      | Basic or certificate |
|                                                | GET, HEAD: 501 page| -     |
| /autodiscover/autodiscover.xml                 | POST (GET: 600)    | Basic |
| /autodiscover/autodiscover.json[/v1.0/<email>] | GET                | -     |
| /.well-known/autoconfig/mail/config-v1.1.xml,  | GET                | -     |
| /mail/config-v1.1.xml                          |                    |       |
| /mobileconfig?email=..&type=eas|imap           | GET                | Basic |

Login on the virtual directory is a verified client certificate (`clientcert`: with
`client_certificates` "accept" it replaces Basic, with "require" nothing else is taken,
403 without one) or Basic.

A POST to the virtual directory goes through, in order: login (401 challenge;
throttled or a failing backend: 503 with Retry-After, never 401), the query (400), the
command table (501), the overload limit (503), the body (413, 415, 400), the device's
partnership (created on first sight; 177 past the per-user limit), its access level from
the device access rules (`access`; the user is mailed when a device is first blocked or
quarantined, and a refused Provision or Settings still records what the device says it
is), provisioning and wipe (`provision.admission`: 403, 449 or 140-144 in the body),
WBXML (400), the handler.
A handler that raises is logged with its traceback and answered 500 (≤12.1) or with
common status 110 in the command's body (14.0+): never a traceback to the client.

Request bodies are read before the overload slot is taken (a slow upload holds no slot);
what they hold in memory together is bounded by `BodyMemory` (503 past it). A large
response is encoded (and gzipped) in a worker thread, so one 50 MB ItemOperations answer
does not stall every other connection on the event loop. With `drain` (the server's
shutdown), held long polls are answered at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qsl, unquote

import trio

from protocols.auth import Account, LoginOutcome, PasswordChecker
from protocols.connection import Drain
from protocols.web import Receive, Scope, Send

from . import autodiscover
from .access import AccessSource, evaluate_access
from .clientcert import (
    CertificateAccounts,
    ClientCertificateMode,
    certificate_identities,
    peer_certificate,
)
from .context import (
    WBXML_CONTENT_TYPE,
    ActiveSyncSettings,
    CommandContext,
    CommandReply,
    CommandSpec,
    CommandTable,
    Slots,
)
from .devices import (
    AsyncDevices,
    Device,
    DeviceAccess,
    DeviceInformation,
    DeviceRegistry,
    TooManyDevices,
    parse_device_information,
)
from .http import (
    BadBody,
    BodiesBusy,
    BodyMemory,
    BodyTimeout,
    BodyTooLarge,
    ClientGone,
    HttpResponse,
    RequestBody,
    decode_content,
    maybe_gzip,
    request_headers,
    send_response,
)
from .notices import Notices, access_notice
from .policy import Policy, PolicySource
from .provision import Refusal, admission
from .replies import status_document
from .request import (
    COMMAND_CODES,
    LOWEST_VERSION,
    SUPPORTED_VERSIONS,
    EasQuery,
    ProtocolVersion,
    RequestError,
    parse_basic_authorization,
    parse_policy_key,
    parse_query,
    parse_version,
    policy_key_from_query,
)
from .status import AutodiscoverError, CommonStatus
from .wbxml import HEADER as WBXML_HEADER
from .wbxml import Element, WbxmlError, decode, encode

log = logging.getLogger("mailhost.activesync")

EAS_PATH: Final = "/microsoft-server-activesync"
AUTODISCOVER_XML_PATH: Final = "/autodiscover/autodiscover.xml"
AUTODISCOVER_JSON_PATH: Final = "/autodiscover/autodiscover.json"
AUTOCONFIG_PATHS: Final = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
MOBILECONFIG_PATH: Final = "/mobileconfig"
ALLOWED_METHODS: Final = "OPTIONS,POST"  # MS-ASHTTP 2.2.4
# A partnership's last-seen time is written at most this often (a write per request
# would put a disk write under every Ping).
LAST_SEEN_WRITE_INTERVAL: Final = 60.0
# WBXML bodies above this size are decoded in a worker thread.
THREADED_DECODE_SIZE: Final = 256 * 1024
# Responses of about this size or more are encoded and gzipped in a worker thread. Measured
# on a fast machine: a thread hop costs ~100 µs and encoding a Ping answer ~2 µs, so small
# answers stay on the loop; 64 KB encodes in ~160 µs (gzip of 4 MB: ~25 ms), a 50 MB
# ItemOperations answer in ~80 ms, several times that on a small server.
THREADED_ENCODE_SIZE: Final = 64 * 1024
# Worker threads encoding responses at once (CPU work under the GIL: more would only
# take turns with the event loop).
ENCODE_THREADS: Final = 4
# Commands whose body may carry DeviceInformation (MS-ASCMD 2.2.3.44: Provision at
# 14.1+, Settings); read even from refused devices, up to this size.
INFORMATION_COMMANDS: Final = frozenset({"Provision", "Settings"})
MAX_LEARNING_BODY: Final = 64 * 1024
_GET_PAGE: Final = (
    b"<!DOCTYPE html><html><head><title>ActiveSync</title></head><body>"
    b"<p>This is an Exchange ActiveSync endpoint. Add the account in a mail app.</p>"
    b"</body></html>\n"
)


@dataclass(frozen=True, slots=True)
class ActiveSyncStatistics:
    busy: int  # requests being worked on (long polls that wait do not count)
    requests: int  # ActiveSync POSTs answered since start
    body_bytes: int = 0  # request body bytes held in memory now (`BodyMemory`)


class ActiveSyncApp:
    """The ASGI app (see the module docstring); build it with `make_app`."""

    def __init__(
        self,
        *,
        settings: Callable[[], ActiveSyncSettings],
        checker: PasswordChecker,
        devices: DeviceRegistry,
        policies: PolicySource,
        commands: CommandTable,
        clock: Callable[[], float] = time.time,
        accepted_domain: Callable[[str], bool] | None = None,
        access: AccessSource | None = None,
        notices: Notices | None = None,
        certificate_accounts: CertificateAccounts | None = None,
        drain: Drain | None = None,
    ) -> None:
        self._settings = settings
        self._drain = drain
        self._access = access
        self._notices = notices
        self._certificate_accounts = certificate_accounts
        self._checker = checker
        self._devices = AsyncDevices(devices)
        self._registry = devices
        self._policies = policies
        self._commands = dict(commands)
        self._clock = clock
        self._accepted_domain = accepted_domain
        self._slots = Slots(lambda: self._settings().max_concurrent_requests)
        self._body_memory = BodyMemory(lambda: self._settings().body_memory)
        self._encoders = trio.CapacityLimiter(ENCODE_THREADS)
        self._requests = 0
        self.advertised_commands = [n for _, n in sorted(COMMAND_CODES.items()) if n in commands]
        self.advertised_commands += sorted(set(commands) - set(COMMAND_CODES.values()))

    def statistics(self) -> ActiveSyncStatistics:
        return ActiveSyncStatistics(self._slots.busy, self._requests, self._body_memory.held)

    # --- ASGI ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = str(scope.get("path", "/"))
        method = str(scope.get("method", "GET")).upper()
        https = scope.get("scheme") == "https"
        body = RequestBody(
            receive, idle_timeout=self._settings().body_idle_timeout, memory=self._body_memory
        )
        try:
            response = await self._route(path, method, scope, body, https=https)
        except Exception:
            log.exception("http: %s %s failed", method, path[:200])
            response = HttpResponse(500)
        finally:
            body.release()
        http1 = str(scope.get("http_version", "1.1")).startswith("1")
        if not body.done and not await body.drain(request_headers(scope)) and http1:
            response = response.with_headers(("connection", "close"))
        if method == "HEAD":
            response = dataclasses.replace(response, body=b"")
        await send_response(send, response, https=https)

    async def _route(
        self, path: str, method: str, scope: Scope, body: RequestBody, *, https: bool
    ) -> HttpResponse:
        key = path.lower().rstrip("/") or "/"
        headers = request_headers(scope)
        client = scope.get("client") or ("", 0)
        peer = str(client[0])
        if key == EAS_PATH:
            return await self._activesync(method, scope, body, headers, peer, https=https)
        if key == AUTODISCOVER_XML_PATH:
            return await self._autodiscover_xml(method, body, headers, peer, https=https)
        if key == AUTODISCOVER_JSON_PATH or key.startswith(AUTODISCOVER_JSON_PATH + "/"):
            return self._autodiscover_json(method, path, scope)
        if key in AUTOCONFIG_PATHS:
            return await self._autoconfig(method, scope)
        if key == MOBILECONFIG_PATH:
            return await self._mobileconfig(method, scope, headers, peer, https=https)
        return HttpResponse(404, b"Not found.\n", "text/plain; charset=utf-8")

    # --- authentication -------------------------------------------------------------------

    def _challenge(self) -> HttpResponse:
        realm = self._settings().challenge_realm.replace('"', "")
        return HttpResponse(
            401,
            b"Authentication required.\n",
            "text/plain; charset=utf-8",
            (("www-authenticate", f'Basic realm="{realm}", charset="UTF-8"'),),  # RFC 7617
        )

    def _unavailable(self) -> HttpResponse:
        retry = str(self._settings().retry_after)
        return HttpResponse(
            503, b"Try again later.\n", "text/plain; charset=utf-8", (("retry-after", retry),)
        )

    async def _login(
        self, headers: Mapping[str, str], peer: str, protocol: str
    ) -> Account | HttpResponse:
        """The account, or the response to send instead: 401 with the challenge for
        missing or wrong credentials; 503 for a throttled address or a failing backend
        (MS-ASHTTP: a 401 makes devices prompt for the password or lock the account)."""
        credentials = parse_basic_authorization(headers.get("authorization"))
        if credentials is None:
            return self._challenge()
        netbios = self._settings().netbios_domain
        if netbios and credentials.domain and credentials.domain.lower() != netbios.lower():
            log.warning(
                "auth failed: %s login=%r from %s (domain is not %s)",
                protocol,
                credentials.login,
                peer,
                netbios,
            )
            return self._challenge()
        try:
            login = await self._checker.authenticate(
                credentials.login, credentials.password, peer=peer, protocol=protocol
            )
        except Exception:
            log.exception(
                "auth: %s login=%r from %s: backend failed", protocol, credentials.login, peer
            )
            return self._unavailable()
        if login.outcome is LoginOutcome.THROTTLED:
            return self._unavailable()
        if not login.ok or login.account is None:
            return self._challenge()
        return login.account

    async def _certificate_login(self, scope: Scope, peer: str) -> Account | None:
        """The account the verified client certificate names (its SAN e-mail address or
        UPN), or None without a certificate or when it names nobody here."""
        pem = peer_certificate(scope)
        lookup = self._certificate_accounts
        if pem is None or lookup is None:
            return None
        identities = certificate_identities(pem)
        for identity in identities:
            try:
                account = await trio.to_thread.run_sync(lookup.account_for_identity, identity)
            except Exception:
                log.exception("auth: activesync certificate lookup of %r failed", identity)
                return None
            if account is not None:
                log.info(
                    "auth: activesync certificate login user=%s (%s) from %s",
                    account.address,
                    identity,
                    peer,
                )
                return account
        log.warning(
            "auth failed: activesync certificate from %s names no user (%s)",
            peer,
            ", ".join(identities) or "no e-mail address or UPN",
        )
        return None

    # --- the ActiveSync virtual directory ------------------------------------------------

    async def _activesync(
        self,
        method: str,
        scope: Scope,
        body: RequestBody,
        headers: Mapping[str, str],
        peer: str,
        *,
        https: bool,
    ) -> HttpResponse:
        if method in ("GET", "HEAD"):
            # MS-ASHTTP: only OPTIONS and POST; a browser gets a page, never WBXML.
            return HttpResponse(501, _GET_PAGE, "text/html; charset=utf-8")
        if method not in ("OPTIONS", "POST"):
            return HttpResponse(405, b"", None, (("allow", ALLOWED_METHODS),))
        if not https:
            # Never ask for or read credentials over plain HTTP (item 46).
            return HttpResponse(403, b"Use HTTPS.\n", "text/plain; charset=utf-8")
        account: Account | HttpResponse | None = None
        mode = ClientCertificateMode(self._settings().client_certificates)
        if mode is not ClientCertificateMode.IGNORE:
            account = await self._certificate_login(scope, peer)
            if account is None and mode is ClientCertificateMode.REQUIRE:
                # IIS 403.7: client certificate required; never a Basic challenge.
                return HttpResponse(
                    403, b"A client certificate is required.\n", "text/plain; charset=utf-8"
                )
        if account is None:
            account = await self._login(headers, peer, "activesync")
        if isinstance(account, HttpResponse):
            return account
        if method == "OPTIONS":
            return self._options()
        return await self._post(scope, body, headers, peer, account)

    def _eas_headers(self) -> tuple[tuple[str, str], ...]:
        # MS-ASHTTP 2.2.2.1.2: MS-Server-ActiveSync on responses.
        return (("ms-server-activesync", self._settings().server_version),)

    def _options(self) -> HttpResponse:
        """MS-ASHTTP 2.2.4 / 3.2.5.2: the versions and the commands that work."""
        return HttpResponse(
            200,
            b"",
            None,
            (
                ("allow", ALLOWED_METHODS),
                ("public", ALLOWED_METHODS),
                ("ms-asprotocolversions", ",".join(v.value for v in SUPPORTED_VERSIONS)),
                ("ms-asprotocolcommands", ",".join(self.advertised_commands)),
                *self._eas_headers(),
                ("cache-control", "private"),
            ),
        )

    async def _post(
        self,
        scope: Scope,
        body: RequestBody,
        headers: Mapping[str, str],
        peer: str,
        account: Account,
    ) -> HttpResponse:
        try:
            query = parse_query(scope.get("query_string", b""))
            # MS-ASHTTP 2.2.1.1.1.1: the base64 form carries the version in its first
            # byte; otherwise the header, and failing that the lowest version we speak.
            version = (
                query.version
                or parse_version(headers.get("ms-asprotocolversion"))
                or LOWEST_VERSION
            )
        except RequestError as exc:
            log.info("eas: bad request from %s (%s): %s", account.address, peer, exc)
            return HttpResponse(400, b"", None, self._eas_headers())
        spec = self._commands.get(query.command)
        if spec is None or not spec.supports(version):
            log.info(
                "eas: %r %s not served (user=%s device=%s)",
                query.command[:40],
                version.value,
                account.address,
                query.device_id,
            )
            return HttpResponse(501, b"", None, self._eas_headers())  # MS-ASHTTP 3.1.5.2
        self._requests += 1
        return await self._run(spec, query, version, body, headers, peer, account)

    async def _run(
        self,
        spec: CommandSpec,
        query: EasQuery,
        version: ProtocolVersion,
        body: RequestBody,
        headers: Mapping[str, str],
        peer: str,
        account: Account,
    ) -> HttpResponse:
        settings = self._settings()
        started = time.monotonic()
        try:
            raw = await body.read(headers, settings.max_request_body)
            inflate = functools.partial(decode_content, raw, headers, settings.max_request_body)
            if "content-encoding" in headers and len(raw) > THREADED_DECODE_SIZE // 4:
                content = await trio.to_thread.run_sync(inflate)
            else:
                content = inflate()
            if content is not raw:
                body.hold(len(content))  # the inflated copy is held as long as the request
        except BodiesBusy as exc:
            log.warning("eas: %s from %s device %s: 503, %s", query.command, account.address,
                        query.device_id, exc)  # fmt: skip
            return self._unavailable()
        except BodyTooLarge as exc:
            log.warning("eas: %s from %s device %s: %s", query.command, account.address,
                        query.device_id, exc)  # fmt: skip
            return HttpResponse(413, b"", None, self._eas_headers())
        except BadBody as exc:
            log.info("eas: %s from %s: %s", query.command, account.address, exc)
            return HttpResponse(exc.status, b"", None, self._eas_headers())
        except BodyTimeout as exc:
            log.info("eas: %s from %s: %s", query.command, account.address, exc)
            return HttpResponse(408, b"", None, (("connection", "close"),))
        except ClientGone:
            return HttpResponse(400)
        # The overload limit counts requests being worked on, not uploads in progress (what
        # uploads hold in memory is bounded by BodyMemory instead).
        if not self._slots.try_acquire():
            log.warning(
                "eas: overloaded (%d requests busy): 503 to %s device %s",
                self._slots.busy,
                account.address,
                query.device_id,
            )
            return self._unavailable()
        try:
            return await self._process(
                spec, query, version, body, content, headers, peer, account, settings, started
            )
        finally:
            self._slots.release()

    async def _process(
        self,
        spec: CommandSpec,
        query: EasQuery,
        version: ProtocolVersion,
        body: RequestBody,
        content: bytes,
        headers: Mapping[str, str],
        peer: str,
        account: Account,
        settings: ActiveSyncSettings,
        started: float,
    ) -> HttpResponse:
        if query.base64_form:
            key = policy_key_from_query(query)  # MS-ASHTTP 2.2.1.1.1.1: not the header
        else:
            key = parse_policy_key(headers.get("x-ms-policykey"))
        now = self._clock()
        load = functools.partial(
            self._load, account, query, version, headers.get("user-agent", ""), now, settings
        )
        try:
            device, policy, notify = await self._devices.run(load)
        except TooManyDevices:
            log.warning(
                "eas: %s has %d devices: refusing new device %s",
                account.address,
                settings.max_devices_per_user,
                query.device_id,
            )
            too_many = Refusal(CommonStatus.MAXIMUM_DEVICES_REACHED, reason="too many devices")
            return self._refused(query.command, version, too_many, forbidden_before_14=True)
        except Exception:
            log.exception("eas: device registry failed for %s", account.address)
            return self._unavailable()
        refusal = admission(
            device,
            policy,
            key,
            version=version,
            is_provision=query.command == "Provision",
            needs_provisioning=spec.needs_provisioning,
            now=now,
        )
        if (
            refusal is not None
            and device.access is not DeviceAccess.ALLOWED
            and query.command in INFORMATION_COMMANDS
            and self._access is not None
        ):
            # A device refused by an access rule may still say what it is (Provision and
            # Settings carry DeviceInformation): model rules need the model, and the
            # administrator sees it in `device show`.
            learned = await self._learn_information(account, device, content)
            if learned is not None:
                device, notified = learned
                notify = notify or notified
                refusal = admission(
                    device,
                    policy,
                    key,
                    version=version,
                    is_provision=query.command == "Provision",
                    needs_provisioning=spec.needs_provisioning,
                    now=now,
                )
        if notify:
            await self._notify_access(account, device)
        if refusal is not None:
            log.info(
                "eas: %s refused for %s device %s (%s %s): %s",
                query.command,
                account.address,
                query.device_id,
                query.device_type,
                version.value,
                refusal.reason,
            )
            return self._refused(query.command, version, refusal)
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        document: Element | None = None
        if content and (content_type == WBXML_CONTENT_TYPE or content.startswith(WBXML_HEADER)):
            try:
                if len(content) > THREADED_DECODE_SIZE:
                    document = await trio.to_thread.run_sync(decode, content)
                else:
                    document = decode(content)
            except WbxmlError as exc:
                log.info("eas: %s from %s device %s: malformed WBXML: %s", query.command,
                         account.address, query.device_id, exc)  # fmt: skip
                return HttpResponse(400, b"", None, self._eas_headers())
        ctx = CommandContext(
            command=query.command,
            version=version,
            query=query,
            account=account,
            device=device,
            policy=policy,
            document=document,
            body=content,
            content_type=content_type,
            headers=headers,
            peer=peer,
            devices=self._devices,
            settings=settings,
            clock=self._clock,
            disconnected=trio.Event(),
            slots=self._slots,
            notices=self._notices,
            draining=self._drain.event if self._drain is not None else None,
        )
        reply = await self._call(spec, ctx, body)
        finish = functools.partial(
            self._finish, reply, query.command, version, headers, gzip=settings.gzip_responses
        )
        if _is_large(reply):
            response = await trio.to_thread.run_sync(finish, limiter=self._encoders)
        else:
            response = finish()
        log.debug(
            "eas: %s %s user=%s device=%s -> %d (%d bytes, %.0f ms)",
            query.command,
            version.value,
            account.address,
            query.device_id,
            response.status,
            len(response.body),
            (time.monotonic() - started) * 1000,
        )
        return response

    def _load(
        self,
        account: Account,
        query: EasQuery,
        version: ProtocolVersion,
        user_agent: str,
        now: float,
        settings: ActiveSyncSettings,
    ) -> tuple[Device, Policy, bool]:
        """In a worker thread: the account's policy and the device's partnership, created
        on first sight and its last-seen fields refreshed now and then, with its access
        level from the rules; and whether the user is to be told of a new access state."""
        policy = self._policies.policy_for(account)
        registry = self._registry
        device = registry.get(account.mailbox_id, query.device_id)
        if device is None:
            device = registry.add(
                Device(
                    owner=account.mailbox_id,
                    device_id=query.device_id,
                    user=account.address,
                    device_type=query.device_type,
                    first_sync=now,
                    last_sync=now,
                    user_agent=user_agent,
                    protocol_version=version.value,
                ),
                max_per_owner=settings.max_devices_per_user,
            )
            log.info(
                "eas: new device user=%s device=%s type=%s agent=%r",
                account.address,
                query.device_id,
                query.device_type,
                user_agent,
            )
            return self._with_access(device, policy)
        stale = (
            now - device.last_sync >= LAST_SEEN_WRITE_INTERVAL
            or device.user_agent != user_agent
            or device.protocol_version != version.value
            or device.device_type != query.device_type
            or device.user != account.address
        )
        if stale:

            def seen(current: Device) -> Device:
                return dataclasses.replace(
                    current,
                    last_sync=now,
                    user_agent=user_agent,
                    protocol_version=version.value,
                    device_type=query.device_type,
                    user=account.address,
                )

            device = registry.modify(account.mailbox_id, query.device_id, seen)
        return self._with_access(device, policy)

    def _with_access(self, device: Device, policy: Policy) -> tuple[Device, Policy, bool]:
        device, notify = self._assess(device, None)
        return device, policy, notify

    def _assess(self, device: Device, information: DeviceInformation | None) -> tuple[Device, bool]:
        """Blocking: the device with its access level from the rules (stored when it
        changed, with `information` merged in), and whether to notify the user."""
        if self._access is None:
            return device, False
        configuration = self._access.access_configuration()
        if information is None:
            level, reason = evaluate_access(device, configuration)
            owed = level is not DeviceAccess.ALLOWED and device.access_notified != level.value
            if level is device.access and reason == device.access_reason and not owed:
                return device, False
        notify: list[bool] = []

        def change(current: Device) -> Device:
            if information is not None:
                current = dataclasses.replace(current, info=information.merged_into(current.info))
            level, reason = evaluate_access(current, configuration)
            notified = current.access_notified
            if level is DeviceAccess.ALLOWED:
                notified = ""
            elif notified != level.value:
                notify.append(True)
                notified = level.value
            if level is not current.access:
                log.info(
                    "eas: device %s of %s is now %s (%s)",
                    current.device_id,
                    current.user,
                    level.value,
                    reason,
                )
            return dataclasses.replace(
                current, access=level, access_reason=reason, access_notified=notified
            )

        updated = self._registry.modify(device.owner, device.device_id, change)
        return updated, bool(notify)

    async def _learn_information(
        self, account: Account, device: Device, content: bytes
    ) -> tuple[Device, bool] | None:
        """The DeviceInformation in a refused Provision or Settings body, merged into the
        record and the access level assessed again; None if the body carries none."""
        if not content.startswith(WBXML_HEADER) or len(content) > MAX_LEARNING_BODY:
            return None
        try:
            document = decode(content)
        except WbxmlError:
            return None
        found = document.find("Settings:DeviceInformation/Set")
        if found is None:
            return None
        information = parse_device_information(found)
        try:
            return await self._devices.run(functools.partial(self._assess, device, information))
        except Exception:
            log.exception("eas: device registry failed for %s", account.address)
            return None

    async def _notify_access(self, account: Account, device: Device) -> None:
        notice = access_notice(device)
        if notice is None or self._notices is None:
            return
        try:
            await self._notices.notify(account, notice.subject, notice.text)
        except Exception:
            log.exception("eas: notice to %s about device %s failed", account.address,
                          device.device_id)  # fmt: skip
        else:
            log.info("eas: told %s that device %s is %s", account.address, device.device_id,
                     device.access.value)  # fmt: skip

    def _refused(
        self,
        command: str,
        version: ProtocolVersion,
        refusal: Refusal,
        *,
        forbidden_before_14: bool = False,
    ) -> HttpResponse:
        """403 for blocked devices; ≤12.1: 449 (MS-ASHTTP 3.1.5.2); 14.0+: the status in
        the command's body (MS-ASCMD 3.1.5.1), or 449 for a command without a Status."""
        forbidden_before_14 = forbidden_before_14 or refusal.forbidden_before_14
        if refusal.forbidden or (forbidden_before_14 and version.uses_http_449):
            return HttpResponse(403, b"", None, self._eas_headers())
        document = None if version.uses_http_449 else status_document(command, refusal.status)
        if document is None:
            status = 403 if forbidden_before_14 else 449
            return HttpResponse(status, b"", None, self._eas_headers())
        return HttpResponse(200, encode(document), WBXML_CONTENT_TYPE, self._eas_headers())

    async def _call(
        self, spec: CommandSpec, ctx: CommandContext, body: RequestBody
    ) -> CommandReply:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, body, ctx.disconnected)
            try:
                return await spec.handler(ctx)
            except Exception:
                log.exception(
                    "eas: %s failed for %s device %s",
                    ctx.command,
                    ctx.account.address,
                    ctx.device.device_id,
                )
                return self._server_error(ctx.command, ctx.version)
            finally:
                nursery.cancel_scope.cancel()

    def _server_error(self, command: str, version: ProtocolVersion) -> CommandReply:
        document = (
            None if version.uses_http_449 else status_document(command, CommonStatus.SERVER_ERROR)
        )
        if document is None:
            return CommandReply(status=500)
        return CommandReply.wbxml(document)

    def _finish(
        self,
        reply: CommandReply,
        command: str,
        version: ProtocolVersion,
        headers: Mapping[str, str],
        *,
        gzip: bool,
    ) -> HttpResponse:
        """The HTTP response to a handler's reply: encoded, and gzipped when the client
        takes it. CPU work: a large reply runs this in a worker thread."""
        response = self._encode(reply, command, version)
        return maybe_gzip(response, headers) if gzip else response

    def _encode(self, reply: CommandReply, command: str, version: ProtocolVersion) -> HttpResponse:
        headers = reply.headers + self._eas_headers()
        if reply.document is not None:
            try:
                encoded = encode(reply.document)
            except WbxmlError:
                log.exception("eas: %s built a document that cannot be encoded", command)
                return self._encode(self._server_error(command, version), command, version)
            return HttpResponse(
                reply.status, encoded, reply.content_type or WBXML_CONTENT_TYPE, headers
            )
        if reply.body:
            content_type = reply.content_type or WBXML_CONTENT_TYPE
            return HttpResponse(reply.status, reply.body, content_type, headers)
        return HttpResponse(reply.status, b"", reply.content_type, headers)

    # --- Autodiscover ----------------------------------------------------------------------

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self._clock(), dt.UTC)

    async def _autodiscover_xml(
        self,
        method: str,
        body: RequestBody,
        headers: Mapping[str, str],
        peer: str,
        *,
        https: bool,
    ) -> HttpResponse:
        if method not in ("POST", "GET"):
            return HttpResponse(405, b"", None, (("allow", "POST"),))
        if not https:
            return HttpResponse(403, b"Use HTTPS.\n", "text/plain; charset=utf-8")
        account = await self._login(headers, peer, "autodiscover")
        if isinstance(account, HttpResponse):
            return account
        if method == "GET":
            return autodiscover.error_response(
                AutodiscoverError.INVALID_REQUEST, "Invalid Request", now=self._now()
            )
        try:
            raw = await body.read(headers, autodiscover.MAX_AUTODISCOVER_REQUEST)
            request = autodiscover.parse_request(raw)
        except BodyTooLarge:
            return HttpResponse(413)
        except BodiesBusy:
            return self._unavailable()
        except ClientGone:
            return HttpResponse(400)
        except autodiscover.AutodiscoverRequestError as exc:
            log.info("autodiscover: bad request from %s: %s", account.address, exc)
            return autodiscover.error_response(
                AutodiscoverError.INVALID_REQUEST, "Invalid Request", now=self._now()
            )
        log.info("autodiscover: %s asked for %s (%s)", account.address, request.email, peer)
        return autodiscover.mobilesync_response(request, account, self._settings(), now=self._now())

    def _autodiscover_json(self, method: str, path: str, scope: Scope) -> HttpResponse:
        if method != "GET":
            return HttpResponse(405, b"", None, (("allow", "GET"),))
        params = _query_params(scope)
        email = params.get("email")
        prefix_length = len(AUTODISCOVER_JSON_PATH)
        rest = path[prefix_length:].strip("/")
        if rest:
            version, _, tail = rest.partition("/")
            if version.lower() != "v1.0" or not tail:
                return HttpResponse(404, b"Not found.\n", "text/plain; charset=utf-8")
            email = unquote(tail)
        return autodiscover.json_response(email, params.get("protocol"), self._settings())

    async def _autoconfig(self, method: str, scope: Scope) -> HttpResponse:
        if method != "GET":
            return HttpResponse(405, b"", None, (("allow", "GET"),))
        address = autodiscover.valid_address(_query_params(scope).get("emailaddress", ""))
        if address is None:
            return HttpResponse(400, b"emailaddress is required.\n", "text/plain; charset=utf-8")
        domain = address.rpartition("@")[2]
        accepted = self._accepted_domain
        if accepted is not None and not await trio.to_thread.run_sync(accepted, domain):
            return HttpResponse(404, b"Not a domain of this server.\n", "text/plain; charset=utf-8")
        return autodiscover.autoconfig_response(address, self._settings())

    async def _mobileconfig(
        self, method: str, scope: Scope, headers: Mapping[str, str], peer: str, *, https: bool
    ) -> HttpResponse:
        if method != "GET":
            return HttpResponse(405, b"", None, (("allow", "GET"),))
        if not https:
            return HttpResponse(403, b"Use HTTPS.\n", "text/plain; charset=utf-8")
        account = await self._login(headers, peer, "autodiscover")
        if isinstance(account, HttpResponse):
            return account
        params = _query_params(scope)
        kind = params.get("type", "eas").lower()
        if kind not in autodiscover.PROFILE_KINDS:
            return HttpResponse(400, b"type must be eas or imap.\n", "text/plain; charset=utf-8")
        address = autodiscover.valid_address(params.get("email", account.address))
        owned = {a.lower() for a in (account.address, *account.addresses)}
        if address is None or address not in owned:
            return HttpResponse(403, b"Not your address.\n", "text/plain; charset=utf-8")
        log.info("mobileconfig: %s profile for %s (%s)", kind, address, peer)
        return autodiscover.mobileconfig_response(kind, address, account, self._settings())


def _query_params(scope: Scope) -> dict[str, str]:
    """Query parameters by lower-cased name (first one wins)."""
    raw = bytes(scope.get("query_string", b"")).decode("latin-1")
    out: dict[str, str] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True):
        out.setdefault(name.lower(), value)
    return out


def _is_large(reply: CommandReply) -> bool:
    """Whether the reply's response is about THREADED_ENCODE_SIZE bytes or more (counting
    stops there, so a small reply costs a few node visits)."""
    if reply.document is None:
        return len(reply.body) >= THREADED_ENCODE_SIZE
    size = 0
    for node in reply.document.iter():
        size += 2 if node.value is None else 3 + len(node.value)  # token, STR_I/OPAQUE, END
        if size >= THREADED_ENCODE_SIZE:
            return True
    return False


async def _watch_disconnect(body: RequestBody, disconnected: trio.Event) -> None:
    await body.wait_disconnect()
    disconnected.set()


def make_app(
    *,
    settings: Callable[[], ActiveSyncSettings],
    checker: PasswordChecker,
    devices: DeviceRegistry,
    policies: PolicySource,
    commands: CommandTable,
    clock: Callable[[], float] = time.time,
    accepted_domain: Callable[[str], bool] | None = None,
    access: AccessSource | None = None,
    notices: Notices | None = None,
    certificate_accounts: CertificateAccounts | None = None,
    drain: Drain | None = None,
) -> ActiveSyncApp:
    """The ASGI app for the HTTPS listener. `accepted_domain` (blocking, e.g. a directory
    lookup) limits autoconfig answers to this server's domains; None answers any. `drain`
    is the server's shutdown: once it starts, held Pings and Syncs with Wait answer at
    once instead of holding the shutdown for their heartbeat."""
    return ActiveSyncApp(
        settings=settings,
        checker=checker,
        devices=devices,
        policies=policies,
        commands=commands,
        clock=clock,
        accepted_domain=accepted_domain,
        access=access,
        notices=notices,
        certificate_accounts=certificate_accounts,
        drain=drain,
    )
