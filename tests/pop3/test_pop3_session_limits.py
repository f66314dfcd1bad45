"""The POP3 session's time limits and shutdown, over an in-memory stream with a clock the
test controls (trio's autojump clock): every timeout is crossed, nothing is slept."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import trio
import trio.testing

from protocols.auth import Account, Login, LoginOutcome
from protocols.connection import ConnectionInfo, Drain
from protocols.pop3 import session as pop3
from protocols.pop3.session import Listing, MaildropLocks, Pop3Settings
from store.errors import TemporaryFailure

ACCOUNT = Account(1, "demo@example.test", "box1", "Demo", ("demo@example.test",))


class Checker:
    async def authenticate(self, login: str, password: str, *, peer: str, protocol: str) -> Login:
        if (login, password) == ("demo@example.test", "pw"):
            return Login(LoginOutcome.OK, ACCOUNT)
        return Login(LoginOutcome.FAILED)


class Drop:
    def __init__(self) -> None:
        self.deleted: list[int] = []
        self.fail_delete = False

    @property
    def uidvalidity(self) -> int:
        return 7

    def messages(self) -> Listing:
        return Listing((1, 2), (20, 20))

    def read(self, uid: int) -> bytes | None:
        return b"Subject: m\r\n\r\nbody\r\n"

    def read_cached(self, uid: int) -> bytes | None:
        return None

    def delete(self, uids: Sequence[int]) -> None:
        if self.fail_delete:
            raise TemporaryFailure("I/O error: the disk went away")
        self.deleted.extend(uids)


class Opener:
    def __init__(self) -> None:
        self.drop = Drop()

    def open(self, account: Account) -> Drop:
        return self.drop


def _info(drain: Drain) -> ConnectionInfo:
    return ConnectionInfo(
        listener="pop3",
        peer=("127.0.0.1", 4000),
        local=("127.0.0.1", 110),
        tls=False,
        tls_context=lambda: ssl.create_default_context(),
        drain=drain,
        sessions_from_peer=1,
        max_sessions_per_peer=50,
    )


async def _run(
    script: list[bytes], *, drain: Drain | None = None, wait: float = 0.0, fail_delete: bool = False
) -> tuple[bytes, Drop, float]:
    """Run a session; send the script, optionally wait, return what came back."""
    client, server = trio.testing.memory_stream_pair()
    drain = drain or Drain()
    opener = Opener()
    opener.drop.fail_delete = fail_delete
    settings = Pop3Settings(hostname="mail.example.test", plaintext_on_loopback=True)
    received = bytearray()
    started = trio.current_time()

    async def serve() -> None:
        try:
            await pop3.serve_pop3(
                server, _info(drain), settings=settings, checker=Checker(),
                maildrops=opener, locks=MaildropLocks(),
            )  # fmt: skip
        finally:
            await server.aclose()  # as the listener does after every session

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        for line in script:
            await client.send_all(line)
        if wait:
            await trio.sleep(wait)
            drain.start()
        while True:
            data = await client.receive_some(65536)
            if not data:
                break
            received += data
    return bytes(received), opener.drop, trio.current_time() - started


async def test_a_silent_client_before_login_is_dropped_after_the_preauth_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out, _, elapsed = await _run([])
    assert out.startswith(b"+OK")
    assert pop3.PREAUTH_TIMEOUT <= elapsed < pop3.PREAUTH_TIMEOUT + 1


async def test_after_login_the_autologout_timer_is_ten_minutes_and_deletes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out, drop, elapsed = await _run([b"USER demo@example.test\r\n", b"PASS pw\r\n", b"DELE 1\r\n"])
    assert b"+OK message 1 deleted" in out
    assert elapsed >= pop3.IDLE_TIMEOUT >= 600  # RFC 1939 3: at least 10 minutes
    assert drop.deleted == []  # the session ended without QUIT: nothing removed


async def test_a_shutdown_ends_an_idle_session_with_a_reason_and_deletes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out, drop, elapsed = await _run(
        [b"USER demo@example.test\r\n", b"PASS pw\r\n", b"DELE 2\r\n"], wait=5.0
    )
    assert out.rstrip().endswith(b"-ERR [SYS/TEMP] server shutting down; nothing was deleted")
    assert elapsed < 10
    assert drop.deleted == []


async def test_quit_after_dele_removes_the_marked_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out, drop, _ = await _run(
        [b"USER demo@example.test\r\n", b"PASS pw\r\n", b"DELE 2\r\n", b"QUIT\r\n"]
    )
    assert out.rstrip().endswith(b"signing off")
    assert drop.deleted == [2]


async def test_a_store_failure_at_quit_is_an_err_reply_not_a_dropped_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    out, drop, _ = await _run(
        [b"USER demo@example.test\r\n", b"PASS pw\r\n", b"DELE 1\r\n", b"QUIT\r\n"],
        fail_delete=True,
    )
    assert out.rstrip().endswith(b"-ERR [SYS/TEMP] some deleted messages not removed")
    assert drop.deleted == []


async def test_unicode_digits_are_not_numbers(autojump_clock: trio.testing.MockClock) -> None:
    out, _, _ = await _run(
        [b"LIST \xc2\xb9\r\n", b"USER demo@example.test\r\n", b"PASS pw\r\n",
         "RETR \u00b2\r\n".encode(), b"QUIT\r\n"]
    )  # fmt: skip
    assert out.count(b"-ERR") == 2  # LIST before login and RETR with a superscript
    assert b"must be a number" in out
    assert out.rstrip().endswith(b"signing off")
