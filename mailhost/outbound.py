"""The outbound transport bound to this application: connectors from the directory,
local delivery into the store, and the hub's hand-off to the queue."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from mailhost.directory import Directory
from store.store import Store
from transport.delivery import LocalDeliveryError, LocalOutcome
from transport.envelope import (
    BodyType,
    DsnReturn,
    InvalidEnvelope,
    Notify,
    OriginalRecipient,
    ReceivedHop,
    RecipientSpec,
)
from transport.hub import MessageInfo, RoutedRecipient
from transport.queue import Queue, QueueError
from transport.routing import (
    ConnectorError,
    Router,
    SendConnector,
    SmartHostAuth,
    TlsMode,
    parse_smart_host,
)

# JSON keys of a stored connector (the CLI writes them, `connector_from` reads them).
CONNECTOR_KEYS = (
    "address_spaces",
    "smart_hosts",
    "auth_user",
    "auth_password",
    "tls",
    "verify_certificate",
    "allow_plaintext_auth",
    "fqdn",
    "max_message_size",
    "source_server",
    "enabled",
)


def connector_from(name: str, settings: Mapping[str, Any]) -> SendConnector:
    """A validated SendConnector from stored settings (ConnectorError when unusable)."""
    unknown = set(settings) - set(CONNECTOR_KEYS)
    if unknown:
        raise ConnectorError(f"connector {name}: unknown settings {sorted(unknown)}")
    auth = None
    if settings.get("auth_user"):
        auth = SmartHostAuth(str(settings["auth_user"]), str(settings.get("auth_password", "")))
    return SendConnector(
        name=name,
        address_spaces=tuple(settings.get("address_spaces") or ("*",)),
        smart_hosts=tuple(parse_smart_host(h) for h in settings.get("smart_hosts") or ()),
        auth=auth,
        tls=TlsMode(settings.get("tls", TlsMode.OPPORTUNISTIC.value)),
        verify_certificate=bool(settings.get("verify_certificate", False)),
        allow_plaintext_auth=bool(settings.get("allow_plaintext_auth", False)),
        fqdn=settings.get("fqdn") or None,
        max_message_size=settings.get("max_message_size"),
        source_server=str(settings.get("source_server", "")),
        enabled=bool(settings.get("enabled", True)),
    )


class DirectoryConnectors:
    """`ConnectorSource` over the directory, re-read only when the directory changed."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._version: tuple[int, int, int] | None = None
        self._connectors: tuple[SendConnector, ...] = ()

    def send_connectors(self) -> Sequence[SendConnector]:
        version = self._directory.data_version()
        with self._lock:
            if version != self._version:
                loaded = []
                for name, settings in self._directory.send_connectors():
                    try:
                        loaded.append(connector_from(name, settings))
                    except (ConnectorError, ValueError, TypeError):
                        continue  # refused by the CLI already; never half-applied
                self._connectors, self._version = tuple(loaded), version
            return self._connectors


class StoreLocalDelivery:
    """`LocalDelivery` for the queue runner: DSNs to local senders, and local copies
    the first attempt could not make (retried from the queue)."""

    def __init__(self, directory: Directory, store: Store) -> None:
        self._directory = directory
        self._store = store

    async def __call__(self, recipient: str, message: bytes) -> LocalOutcome:
        return await trio.to_thread.run_sync(self._deliver, recipient, message)

    def _deliver(self, recipient: str, message: bytes) -> LocalOutcome:
        user = self._directory.user_by_address(recipient)
        if user is None:
            return LocalOutcome.NOT_LOCAL
        if not message.startswith(b"Return-Path:"):
            message = b"Return-Path: <>\r\n" + message  # RFC 3464 2: DSNs come from <>
        (result,) = self._store.deliver(message, [user.guid])
        if result.error is not None:
            from store.errors import PermanentFailure

            raise LocalDeliveryError(
                str(result.error), temporary=not isinstance(result.error, PermanentFailure)
            )
        return LocalOutcome.DELIVERED


class HubQueue:
    """`transport.hub.RemoteQueue`: the hub's hand-off to the outbound queue."""

    def __init__(
        self, queue: Queue, router: Router, *, on_enqueued: Callable[[str], None] | None = None
    ) -> None:
        self._queue = queue
        self._router = router
        # Called with each new entry's id (the delivery agent tells the server's runner).
        self._on_enqueued = on_enqueued

    def can_route(self, domain: str) -> bool:
        return self._router.route_for(domain) is not None

    def enqueue(
        self,
        message: bytes | Path,
        *,
        sender: str | None,
        recipients: Sequence[RoutedRecipient],
        info: MessageInfo,
        local: bool = False,
    ) -> str:
        specs = []
        for r in recipients:
            orcpt = None
            if r.orcpt:
                kind, _, address = r.orcpt.partition(";")
                orcpt = OriginalRecipient(kind, address)
            notify = frozenset(Notify(n) for n in r.notify) if r.notify else None
            specs.append(RecipientSpec(r.address, notify=notify, orcpt=orcpt, local=local))
        try:
            entry = self._queue.enqueue(
                message,
                sender=sender,
                recipients=specs,
                ret=DsnReturn(info.ret) if info.ret else None,
                envid=info.envid,
                auth_identity=info.auth_identity,
                hop=ReceivedHop(info.client_helo, info.client_address, info.received_by),
                body=BodyType(info.body) if info.body else BodyType.SEVEN_BIT,
                smtputf8=info.smtputf8,
            )
        except QueueError as exc:
            raise OSError(str(exc)) from exc
        except InvalidEnvelope as exc:
            raise ValueError(str(exc)) from exc
        if self._on_enqueued is not None:
            self._on_enqueued(entry.id)
        return entry.id
