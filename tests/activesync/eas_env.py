"""Accounts, settings and the EasEnv handle shared by the ActiveSync front-end tests."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from eas_client import EasClient
from eas_server import (
    Clock,
    FakeChecker,
    FakeRecipients,
    MutablePolicySource,
    ServerThread,
    make_account,
)

from protocols.activesync.app import ActiveSyncApp
from protocols.activesync.commands import Recipient
from protocols.activesync.context import ActiveSyncSettings
from protocols.activesync.devices import DeviceRegistry
from protocols.auth import Account

ALICE = make_account(
    "alice@example.org",
    user_id=1,
    display_name="Alice Liddell",
    extra=("a.liddell@example.org",),
)
BOB = make_account("bob@example.org", user_id=2, display_name="Bob Builder")
CAROL = make_account("carol@example.org", user_id=3, display_name="Carol Ä")
ALICE_PASSWORD = "correct horse"
BOB_PASSWORD = "battery staple"
CAROL_PASSWORD = "pässwörd"  # not ASCII: sent as UTF-8 or, like Outlook, as Latin-1
DIRECTORY = (
    Recipient("Alice Liddell", "alice@example.org"),
    Recipient("Bob Builder", "bob@example.org"),
    Recipient("Bobby Tables", "bobby@example.org"),
    Recipient("Carol Ä", "carol@example.org"),
)


def default_settings(**overrides: Any) -> ActiveSyncSettings:
    values: dict[str, Any] = {
        "external_url": "https://mail.example.org/Microsoft-Server-ActiveSync",
        "internal_url": "https://mail.internal.example.org/Microsoft-Server-ActiveSync",
        "netbios_domain": "EXAMPLE",
        "organization": "Example Org",
    }
    values.update(overrides)
    return ActiveSyncSettings(**values)


@dataclass
class EasEnv:
    app: ActiveSyncApp
    server: ServerThread
    checker: FakeChecker
    registry: DeviceRegistry
    policies: MutablePolicySource
    recipients: FakeRecipients
    clock: Clock
    context: ssl.SSLContext
    clients: list[EasClient] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.port

    def client(
        self, user: Account = ALICE, password: str = ALICE_PASSWORD, **options: Any
    ) -> EasClient:
        client = EasClient(self.port, self.context, user.address, password, **options)
        self.clients.append(client)
        return client

    def device(self, account: Account = ALICE, device_id: str = "applf17xr4y2jclm") -> Any:
        return self.registry.get(account.mailbox_id, device_id)
