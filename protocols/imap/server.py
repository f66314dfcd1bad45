"""IMAP over trio: the I/O layer around the sans-IO reader, bound to the store."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from protocols import unavailable
from protocols.auth import PasswordChecker
from protocols.connection import ConnectionInfo
from store.store import Store


@dataclass(frozen=True, slots=True)
class ImapSettings:
    hostname: str
    plaintext_on_loopback: bool = False


async def serve_imap(
    stream: trio.abc.Stream,
    info: ConnectionInfo,
    *,
    settings: ImapSettings,
    checker: PasswordChecker,
    store: Store,
) -> None:
    await unavailable.refuse(stream, "imap")
