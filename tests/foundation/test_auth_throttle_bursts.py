"""Security regression: the login throttle holds against parallel guesses and against
guesses spread over a network (reliability-security item 34).

Before: the limits were checked before the hash and the failure counted after it, so
45 AUTH PLAIN sent at once from one address all got a hash and a 535; and IPv6 was
counted per /128, so a /64 gave unlimited guesses.
"""

from __future__ import annotations

import smtplib
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import trio
import trio.testing
from harness import Instance

from mailhost.auth import (
    MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT,
    WIDE_NETWORK_FACTOR,
    Authenticator,
    Bucket,
    buckets_of,
)
from mailhost.config import AuthSettings
from mailhost.directory import Directory, User
from mailhost.passwords import VerifiedCredentials
from protocols.auth import LoginOutcome

RIGHT = "right"


class CountingDirectory(Directory):
    """The real directory, counting the password checks that reach it; it can be made
    to hold checks at a gate, or to break."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.checks = 0
        self.gate: threading.Event | None = None
        self.broken = False
        self._lock = threading.Lock()

    def verify_user(
        self, user: User | None, password: str, cache: VerifiedCredentials | None = None
    ) -> User | None:
        with self._lock:
            self.checks += 1
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.broken:
            raise RuntimeError("directory unavailable")
        return super().verify_user(user, password, cache)


@pytest.fixture
def directory(tmp_path: Path) -> CountingDirectory:
    d = CountingDirectory(tmp_path / "directory.sqlite3")
    d.add_domain("example.test")
    d.add_user("alice@example.test", RIGHT, display_name="Alice")
    d.add_user("bob@example.test", RIGHT, display_name="Bob")
    return d


def throttle(
    directory: Directory, *, per_minute: int = 100, per_day: int = 1000
) -> tuple[Authenticator, list[float]]:
    """An authenticator answering at once, on a clock the test moves."""
    now = [1000.0]
    settings = AuthSettings(
        failure_delay=0.0, max_failures_per_minute=per_minute, max_failures_per_day=per_day
    )
    return Authenticator(directory, lambda: settings, clock=lambda: now[0]), now


async def burst(auth: Authenticator, attempts: list[tuple[str, str, str]]) -> Counter[LoginOutcome]:
    """(login, password, peer) attempts all sent at once; their outcomes. Bursts testing
    an address's limits guess a different (unknown) user each time: one account has its
    own cap on checks at once (tested on its own below). An unknown user costs a hash too."""
    outcomes: Counter[LoginOutcome] = Counter()

    async def attempt(login: str, password: str, peer: str) -> None:
        result = await auth.authenticate(login, password, peer=peer, protocol="smtp")
        outcomes[result.outcome] += 1

    async with trio.open_nursery() as nursery:
        for login, password, peer in attempts:
            nursery.start_soon(attempt, login, password, peer)
    return outcomes


async def outcome(auth: Authenticator, peer: str, password: str = "wrong") -> LoginOutcome:
    return (
        await auth.authenticate("alice@example.test", password, peer=peer, protocol="imap")
    ).outcome


# --- parallel guesses ------------------------------------------------------------------


async def test_a_burst_from_one_address_reaches_the_hash_only_up_to_the_limit(
    directory: CountingDirectory,
) -> None:
    auth, _ = throttle(directory, per_minute=10)
    outcomes = await burst(
        auth, [(f"user{n}@example.test", "guess", "192.0.2.9") for n in range(45)]
    )
    assert outcomes == {LoginOutcome.FAILED: 10, LoginOutcome.THROTTLED: 35}
    assert directory.checks == 10
    assert auth.failures_from("192.0.2.9") == 10
    # The owner elsewhere is not locked out.
    assert await outcome(auth, "198.51.100.7", RIGHT) is LoginOutcome.OK


async def test_the_daily_limit_holds_under_a_burst(directory: CountingDirectory) -> None:
    auth, now = throttle(directory, per_minute=100, per_day=4)
    outcomes = await burst(auth, [("nobody@example.test", "x", "192.0.2.1")] * 20)
    assert outcomes == {LoginOutcome.FAILED: 4, LoginOutcome.THROTTLED: 16}
    now[0] += 3600
    outcomes = await burst(auth, [("nobody@example.test", "x", "192.0.2.1")] * 20)
    assert outcomes == {LoginOutcome.THROTTLED: 20}
    assert directory.checks == 4


async def test_a_burst_spread_over_one_ipv6_subnet_shares_its_limit(
    directory: CountingDirectory,
) -> None:
    auth, _ = throttle(directory, per_minute=10)
    attempts = [(f"user{n}@example.test", "guess", f"2001:db8:1:2::{n:x}") for n in range(1, 46)]
    outcomes = await burst(auth, attempts)
    assert outcomes == {LoginOutcome.FAILED: 10, LoginOutcome.THROTTLED: 35}
    assert directory.checks == 10


async def test_a_right_password_in_a_burst_does_not_spend_the_failure_budget(
    directory: CountingDirectory,
) -> None:
    auth, _ = throttle(directory, per_minute=3)
    async with trio.open_nursery() as nursery:
        # The right password holds a place while it is checked, then gives it back.
        nursery.start_soon(outcome, auth, "192.0.2.9", RIGHT)
        await trio.testing.wait_all_tasks_blocked()
        outcomes = await burst(auth, [("alice@example.test", "wrong", "192.0.2.9")] * 10)
    assert outcomes == {LoginOutcome.FAILED: 3, LoginOutcome.THROTTLED: 7}
    assert auth.failures_from("192.0.2.9") == 3


async def test_a_success_between_failures_is_not_counted(directory: CountingDirectory) -> None:
    auth, _ = throttle(directory, per_minute=3)
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9", RIGHT) is LoginOutcome.OK
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.THROTTLED


async def test_right_passwords_at_once_from_one_address_past_the_limit_all_get_in(
    directory: CountingDirectory,
) -> None:
    # An office behind one NAT: places held by right passwords are waited for, not refused.
    auth, _ = throttle(directory, per_minute=3)
    attempts = [(user, RIGHT, "192.0.2.9") for user in ("alice", "bob") for _ in range(6)]
    assert await burst(auth, attempts) == {LoginOutcome.OK: 12}
    assert auth.failures_from("192.0.2.9") == 0


async def test_a_check_that_breaks_gives_its_place_back(directory: CountingDirectory) -> None:
    auth, _ = throttle(directory, per_minute=2)
    directory.broken = True
    for _ in range(3):
        with pytest.raises(RuntimeError):
            await outcome(auth, "192.0.2.9")
    directory.broken = False
    assert auth.failures_from("192.0.2.9") == 0
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.THROTTLED


async def test_a_check_cancelled_before_its_hash_gives_its_place_back(
    directory: CountingDirectory,
) -> None:
    auth, _ = throttle(directory, per_minute=1)
    directory.gate = threading.Event()
    try:
        async with trio.open_nursery() as nursery:
            # Two checks from elsewhere hold both hash threads at the gate...
            nursery.start_soon(outcome, auth, "198.51.100.1")
            nursery.start_soon(outcome, auth, "203.0.113.1")
            await trio.testing.wait_all_tasks_blocked()
            # ...so this one waits for a thread, and its client goes away meanwhile.
            with trio.move_on_after(0.2) as waited:
                await outcome(auth, "192.0.2.9")
            assert waited.cancelled_caught
            directory.gate.set()
    finally:
        directory.gate.set()
    directory.gate = None
    assert directory.checks == 2
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.THROTTLED


async def test_checks_of_one_account_from_many_addresses_are_capped(
    directory: CountingDirectory,
) -> None:
    auth, _ = throttle(directory)
    # Every guess from its own network: no address or network limit is near.
    attempts = [("alice@example.test", f"guess{n}", f"198.18.{n}.1") for n in range(20)]
    outcomes = await burst(auth, attempts)
    assert outcomes == {
        LoginOutcome.FAILED: MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT,
        LoginOutcome.THROTTLED: 20 - MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT,
    }
    assert directory.checks == MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT
    # The cap is on checks running, not a lockout: the owner gets in afterwards.
    assert await outcome(auth, "198.51.100.7", RIGHT) is LoginOutcome.OK


async def test_the_account_cap_leaves_other_accounts_alone(directory: CountingDirectory) -> None:
    auth, _ = throttle(directory)
    attempts = [("alice@example.test", "guess", f"198.18.{n}.1") for n in range(20)]
    attempts += [("bob@example.test", RIGHT, f"198.19.{n}.1") for n in range(4)]
    outcomes = await burst(auth, attempts)
    assert outcomes[LoginOutcome.OK] == 4
    assert outcomes[LoginOutcome.FAILED] == MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT


# --- networks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "buckets"),
    [
        ("192.0.2.9", [("192.0.2.9", 1), ("192.0.2.0/24", WIDE_NETWORK_FACTOR)]),
        ("::ffff:192.0.2.9", [("192.0.2.9", 1), ("192.0.2.0/24", WIDE_NETWORK_FACTOR)]),
        (
            "2001:db8:1:2:3:4:5:6",
            [("2001:db8:1:2::/64", 1), ("2001:db8:1::/48", WIDE_NETWORK_FACTOR)],
        ),
        ("fe80::1%eth0", [("fe80::/64", 1), ("fe80::/48", WIDE_NETWORK_FACTOR)]),
        ("127.0.0.2", [("127.0.0.2", 1)]),
        ("::ffff:127.0.0.1", [("127.0.0.1", 1)]),
        ("::1", [("::1", 1)]),
        ("not-an-address", [("not-an-address", 1)]),
    ],
)
def test_buckets_of(peer: str, buckets: list[tuple[str, int]]) -> None:
    assert buckets_of(peer) == tuple(Bucket(key, factor) for key, factor in buckets)


async def test_ipv6_addresses_in_one_subnet_share_its_limit(directory: CountingDirectory) -> None:
    auth, _ = throttle(directory, per_minute=3)
    for peer in ("2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:aaaa::3"):
        assert await outcome(auth, peer) is LoginOutcome.FAILED
    assert await outcome(auth, "2001:db8:1:2:ffff::9", RIGHT) is LoginOutcome.THROTTLED
    assert auth.failures_from("2001:db8:1:2::77") == 3
    # The next subnet of the same site, and another site, are not refused.
    assert await outcome(auth, "2001:db8:1:3::1", RIGHT) is LoginOutcome.OK
    assert await outcome(auth, "2001:db8:2::1", RIGHT) is LoginOutcome.OK


async def test_an_ipv6_site_is_refused_past_its_wider_limit(directory: CountingDirectory) -> None:
    per_minute = 2
    site_limit = per_minute * WIDE_NETWORK_FACTOR
    auth, now = throttle(directory, per_minute=per_minute)
    # One guess from each of many subnets of 2001:db8:5::/48: no subnet reaches its limit.
    attempts = [(f"user{n}@example.test", "guess", f"2001:db8:5:{n:x}::1") for n in range(15)]
    outcomes = await burst(auth, attempts)
    assert outcomes == {LoginOutcome.FAILED: site_limit, LoginOutcome.THROTTLED: 15 - site_limit}
    assert await outcome(auth, "2001:db8:5:ff::1", RIGHT) is LoginOutcome.THROTTLED
    assert await outcome(auth, "2001:db8:6::1", RIGHT) is LoginOutcome.OK
    now[0] += 61
    assert await outcome(auth, "2001:db8:5:ff::1", RIGHT) is LoginOutcome.OK


async def test_an_ipv4_network_is_refused_past_its_wider_limit(
    directory: CountingDirectory,
) -> None:
    per_minute = 2
    network_limit = per_minute * WIDE_NETWORK_FACTOR
    auth, _ = throttle(directory, per_minute=per_minute)
    attempts = [(f"user{n}@example.test", "guess", f"192.0.2.{n}") for n in range(1, 16)]
    outcomes = await burst(auth, attempts)
    assert outcomes == {
        LoginOutcome.FAILED: network_limit,
        LoginOutcome.THROTTLED: 15 - network_limit,
    }
    assert await outcome(auth, "192.0.2.200", RIGHT) is LoginOutcome.THROTTLED
    assert await outcome(auth, "192.0.3.1", RIGHT) is LoginOutcome.OK


async def test_an_ipv4_mapped_address_counts_as_the_ipv4_address(
    directory: CountingDirectory,
) -> None:
    auth, _ = throttle(directory, per_minute=2)
    assert await outcome(auth, "::ffff:192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9") is LoginOutcome.FAILED
    assert await outcome(auth, "192.0.2.9", RIGHT) is LoginOutcome.THROTTLED
    assert await outcome(auth, "::ffff:192.0.2.9", RIGHT) is LoginOutcome.THROTTLED
    assert await outcome(auth, "::ffff:192.0.2.10", RIGHT) is LoginOutcome.OK


async def test_loopback_addresses_are_still_counted_one_by_one(
    directory: CountingDirectory,
) -> None:
    auth, _ = throttle(directory, per_minute=1)
    for n in range(1, WIDE_NETWORK_FACTOR + 3):
        assert await outcome(auth, f"127.0.0.{n}") is LoginOutcome.FAILED
    assert await outcome(auth, "127.0.0.1", RIGHT) is LoginOutcome.THROTTLED
    assert await outcome(auth, "127.0.0.200", RIGHT) is LoginOutcome.OK
    assert await outcome(auth, "::1") is LoginOutcome.FAILED
    assert await outcome(auth, "::1", RIGHT) is LoginOutcome.THROTTLED


# --- end to end ------------------------------------------------------------------------

E2E_LIMIT = 5
E2E_GUESSES = 30


def test_parallel_auth_plain_on_port_587_gets_the_limit_of_535_and_454_after(
    instance: Instance,
) -> None:
    instance.set_config("auth", "failure_delay", "0.1")
    instance.set_config("auth", "max_failures_per_minute", str(E2E_LIMIT))
    context = instance.client_context(check_hostname=False)
    ready = threading.Barrier(E2E_GUESSES, timeout=20)

    def guess(address: tuple[str, int], n: int) -> int:
        with smtplib.SMTP(*address, timeout=20) as client:
            client.ehlo("guesser")
            client.starttls(context=context)
            client.ehlo("guesser")
            client.user, client.password = instance.user, f"guess{n}"
            ready.wait()  # every AUTH goes out at once
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.auth("PLAIN", client.auth_plain)
            return refused.value.smtp_code

    with instance.start() as server, ThreadPoolExecutor(E2E_GUESSES) as pool:
        address = server.address("submission")
        codes = Counter(pool.map(lambda n: guess(address, n), range(E2E_GUESSES)))
        assert codes == {535: E2E_LIMIT, 454: E2E_GUESSES - E2E_LIMIT}
        assert "auth throttled: smtp" in server.log()
