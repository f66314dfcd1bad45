"""The ActiveSync ASGI app served over real TLS on 127.0.0.1 (port 0) for tests, the way
the service serves it: our TLS stream handed to hypercorn's protocol layer
(`protocols.web.HttpServer`), ALPN h2 and http/1.1.

It runs in a thread with its own trio loop, so tests can be plain functions driving it
with blocking clients (http.client, curl). Its dependencies are built from data:
`FakeChecker` (accounts and passwords), `MemoryDeviceRegistry` or the SQLite one,
`MutablePolicySource`, `FakeRecipients`, and a settable clock.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from protocols.activesync.commands import Recipient
from protocols.activesync.policy import DEFAULT_POLICY, Policy
from protocols.auth import Account, Login, LoginOutcome
from protocols.connection import ConnectionInfo, Drain
from protocols.web import AsgiApp, HttpServer

log = logging.getLogger("tests.eas_server")
START_TIMEOUT = 10.0


class FakeChecker:
    """`PasswordChecker` over accounts given as data. Resolves logins as the directory
    does: an address (any of the account's), `DOMAIN\\user`, or the alias alone."""

    def __init__(
        self,
        accounts: Iterable[tuple[Account, str, str]],  # (account, alias, password)
        *,
        throttled: Iterable[str] = (),
    ) -> None:
        self.accounts = list(accounts)
        self.throttled = set(throttled)
        self.broken = False
        self.calls: list[tuple[str, str, str]] = []  # (login, peer, protocol)

    def resolve(self, login: str) -> tuple[Account, str] | None:
        name = login.strip()
        if "\\" in name:
            name = name.split("\\", 1)[1]
        for account, alias, password in self.accounts:
            if "@" in name:
                if name.lower() in {a.lower() for a in account.addresses}:
                    return account, password
            elif name.lower() == alias:
                return account, password
        return None

    async def authenticate(self, login: str, password: str, *, peer: str, protocol: str) -> Login:
        self.calls.append((login, peer, protocol))
        if self.broken:
            raise RuntimeError("directory unavailable")
        if peer in self.throttled:
            return Login(LoginOutcome.THROTTLED)
        found = self.resolve(login)
        if found is None or found[1] != password:
            return Login(LoginOutcome.FAILED)
        return Login(LoginOutcome.OK, found[0])


@dataclass
class MutablePolicySource:
    policy: Policy = DEFAULT_POLICY
    per_user: dict[str, Policy] = field(default_factory=dict)

    def policy_for(self, account: Account) -> Policy:
        return self.per_user.get(account.address, self.policy)


@dataclass
class FakeRecipients:
    """`RecipientLookup` over (display name, address) pairs: matches a full address, or a
    prefix of the address or of any word of the display name."""

    entries: Sequence[Recipient]
    queries: list[str] = field(default_factory=list)

    def resolve(self, query: str, *, limit: int) -> list[Recipient]:
        self.queries.append(query)
        q = query.strip().lower()
        found = [
            r
            for r in self.entries
            if r.address == q
            or r.address.startswith(q)
            or any(word.lower().startswith(q) for word in r.display_name.split())
        ]
        return found[:limit]


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ServerThread:
    """Serve `app` over TLS in a background thread: `with ServerThread(app, ctx) as s:`."""

    def __init__(self, app: AsgiApp, context: ssl.SSLContext) -> None:
        self.app = app
        self.context = context
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="eas-test-server", daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: trio.CancelScope | None = None
        self.error: BaseException | None = None

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError(f"test server did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None and self._cancel is not None:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        self._thread.join(START_TIMEOUT)

    def run_sync(self, fn: Callable[[], Any]) -> Any:
        """Call `fn` in the server's trio thread (e.g. `drain.start`) and return its result."""
        assert self._token is not None
        return trio.from_thread.run_sync(fn, trio_token=self._token)

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported by __enter__ / the test
            self.error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        server = HttpServer(self.app, secure=True)
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        drain = Drain()
        context = self.context

        async def handle(stream: trio.SocketStream) -> None:
            tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
            peer = stream.socket.getpeername()
            local = stream.socket.getsockname()
            info = ConnectionInfo(
                listener="https",
                peer=(peer[0], peer[1]),
                local=(local[0], local[1]),
                tls=True,
                tls_context=lambda: context,
                drain=drain,
                sessions_from_peer=1,
                max_sessions_per_peer=1000,
            )
            try:
                await server.serve(tls, info)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            except Exception:
                log.exception("test server: connection failed")
            finally:
                await trio.aclose_forcefully(tls)

        with trio.CancelScope() as scope:
            self._cancel = scope
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, handle, listeners)
                self._ready.set()


def make_account(
    address: str, *, user_id: int = 1, display_name: str = "", extra: Sequence[str] = ()
) -> Account:
    return Account(
        user_id=user_id,
        address=address,
        mailbox_id=f"mbx{user_id:04d}",
        display_name=display_name,
        addresses=(address, *extra),
    )


def make_checker(*entries: tuple[Account, str, str]) -> FakeChecker:
    return FakeChecker(entries)


Factory = Callable[..., Any]
