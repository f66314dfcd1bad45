"""IMAP over trio: the entry point the service calls for the ``imap`` (143, STARTTLS) and
``imaps`` (993, implicit TLS) listeners. The session itself is :mod:`.session`."""

from __future__ import annotations

import trio

from protocols.auth import PasswordChecker
from protocols.connection import ConnectionInfo
from store.store import Store

from .session import ImapSession
from .settings import ImapSettings
from .shared import ImapShared, shared_state

__all__ = ["ImapSettings", "serve_imap"]


async def serve_imap(
    stream: trio.abc.Stream,
    info: ConnectionInfo,
    *,
    settings: ImapSettings,
    checker: PasswordChecker,
    store: Store,
    shared: ImapShared | None = None,
) -> None:
    """Serve one connection until LOGOUT, a timeout, the client leaving or a drain.

    ``shared`` is the process-wide state (\\Recent claims, metadata cache); by default the
    one belonging to ``store``.
    """
    state = shared or shared_state(store, metadata_cache_bytes=settings.metadata_cache_bytes)
    session = ImapSession(
        stream, info, settings=settings, checker=checker, store=store, shared=state
    )
    await session.run()
