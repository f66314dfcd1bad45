"""Session-tier fixtures for the IMAP tests (the helpers live in imap_session_kit)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
from imap_session_kit import (
    PASSWORD,
    FakeChecker,
    ImapClient,
    SessionWorld,
    account,
)

from protocols.connection import Drain
from protocols.imap.server import ImapSettings
from protocols.imap.shared import ImapShared
from store import Store


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SessionWorld]:
    store = Store(tmp_path / "store", fsync=False)
    store.open_mailbox("alice")
    checker = FakeChecker(
        users={"alice@example.test": (PASSWORD, account("alice@example.test", "alice"))}
    )
    settings = ImapSettings(hostname="mail.example.test", plaintext_on_loopback=True)
    shared = ImapShared(started=0.0, metadata_cache_bytes=16 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        yield SessionWorld(store, checker, shared, settings, nursery, Drain())
        nursery.cancel_scope.cancel()
    store.close()


Factory = Callable[..., ImapClient]
