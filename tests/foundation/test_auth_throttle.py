"""Failed-login throttling shared by every protocol (reliability-security item 34)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailhost.auth import Authenticator
from mailhost.config import AuthSettings
from mailhost.directory import Directory
from protocols.auth import LoginOutcome


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    d = Directory(tmp_path / "directory.sqlite3")
    d.add_domain("example.test")
    d.add_user("alice@example.test", "right", display_name="Alice")
    return d


async def test_an_address_past_the_limit_is_refused_but_the_owner_elsewhere_is_not(
    directory: Directory,
) -> None:
    now = [1000.0]
    settings = AuthSettings(failure_delay=0.0, max_failures_per_minute=3, max_failures_per_day=50)
    auth = Authenticator(directory, lambda: settings, clock=lambda: now[0])
    for _ in range(3):
        result = await auth.authenticate(
            "alice@example.test", "wrong", peer="192.0.2.9", protocol="imap"
        )
        assert result.outcome is LoginOutcome.FAILED
    # The attacker's address is now refused, even with the right password...
    blocked = await auth.authenticate(
        "alice@example.test", "right", peer="192.0.2.9", protocol="smtp"
    )
    assert blocked.outcome is LoginOutcome.THROTTLED
    # ...while the owner, from another address, logs in (no account lockout).
    owner = await auth.authenticate("alice", "right", peer="198.51.100.7", protocol="pop3")
    assert owner.ok and owner.account is not None
    assert owner.account.address == "alice@example.test" and owner.account.addresses == (
        "alice@example.test",
    )
    now[0] += 61
    again = await auth.authenticate(
        "alice@example.test", "right", peer="192.0.2.9", protocol="imap"
    )
    assert again.ok


async def test_the_daily_limit_holds_across_minutes(directory: Directory) -> None:
    now = [0.0]
    settings = AuthSettings(failure_delay=0.0, max_failures_per_minute=100, max_failures_per_day=4)
    auth = Authenticator(directory, lambda: settings, clock=lambda: now[0])
    for _ in range(4):
        await auth.authenticate("nobody@example.test", "x", peer="192.0.2.1", protocol="imap")
        now[0] += 120
    assert (
        await auth.authenticate("alice", "right", peer="192.0.2.1", protocol="imap")
    ).outcome is LoginOutcome.THROTTLED
    now[0] += 86400
    assert (await auth.authenticate("alice", "right", peer="192.0.2.1", protocol="imap")).ok


async def test_failures_are_answered_after_a_growing_delay(
    directory: Directory, autojump_clock: object
) -> None:
    import trio

    settings = AuthSettings(
        failure_delay=2.0, max_failures_per_minute=100, max_failures_per_day=100
    )
    auth = Authenticator(directory, lambda: settings, clock=trio.current_time)
    delays = []
    for _ in range(6):
        start = trio.current_time()
        await auth.authenticate("alice", "wrong", peer="192.0.2.2", protocol="imap")
        delays.append(round(trio.current_time() - start, 1))
    assert delays[:3] == [2.0, 2.0, 2.0]
    assert delays[3] == 4.0 and delays[4] == 8.0 and delays[5] == 15.0


async def test_the_cache_spares_the_hash_but_not_a_wrong_password(directory: Directory) -> None:
    auth = Authenticator(directory, lambda: AuthSettings(failure_delay=0.0))
    assert (await auth.authenticate("alice", "right", peer="192.0.2.3", protocol="eas")).ok
    assert (await auth.authenticate("alice", "right", peer="192.0.2.3", protocol="eas")).ok
    assert not (await auth.authenticate("alice", "wrongish", peer="192.0.2.3", protocol="eas")).ok
    directory.set_password("alice@example.test", "changed")
    assert not (await auth.authenticate("alice", "right", peer="192.0.2.3", protocol="eas")).ok
    assert (await auth.authenticate("alice", "changed", peer="192.0.2.3", protocol="eas")).ok


async def test_guessing_one_account_from_many_addresses_is_slowed_but_the_owner_is_not(
    directory: Directory, autojump_clock: object
) -> None:
    import trio

    from mailhost.auth import ACCOUNT_FAILURES_BEFORE_SLOWING

    settings = AuthSettings(
        failure_delay=1.0, max_failures_per_minute=100, max_failures_per_day=1000
    )
    # Windows on the real clock (the test takes milliseconds); delays on trio's virtual one.
    auth = Authenticator(directory, lambda: settings)
    delays = []
    for n in range(ACCOUNT_FAILURES_BEFORE_SLOWING + 3):
        start = trio.current_time()
        # Each guess from a different address: no single address crosses its limits.
        await auth.authenticate(
            "EXAMPLE\\Alice", f"guess{n}", peer=f"192.0.2.{n + 1}", protocol="eas"
        )
        delays.append(trio.current_time() - start)
    assert delays[:ACCOUNT_FAILURES_BEFORE_SLOWING] == [1.0] * ACCOUNT_FAILURES_BEFORE_SLOWING
    assert delays[-3:] == [2.0, 4.0, 8.0]  # the account's failures now slow every guess
    start = trio.current_time()
    assert (await auth.authenticate("alice", "right", peer="198.51.100.1", protocol="imap")).ok
    assert trio.current_time() - start < 1.0  # the owner's right password is not delayed


async def test_every_spelling_of_a_login_counts_against_one_account(
    directory: Directory, autojump_clock: object
) -> None:
    """Address, other address, alias, DOMAIN\\alias and any case name the same user: a
    guesser cycling through them gets one account budget, not one per spelling."""
    import trio

    from mailhost.auth import ACCOUNT_FAILURES_BEFORE_SLOWING

    directory.add_address("alice@example.test", "a.liddell@example.test")
    settings = AuthSettings(
        failure_delay=1.0, max_failures_per_minute=100, max_failures_per_day=1000
    )
    auth = Authenticator(directory, lambda: settings)
    spellings = [
        "alice@example.test",
        "A.Liddell@Example.Test",
        "alice",
        "EXAMPLE\\ALICE",
        " Alice@example.test ",
    ]
    delays = []
    for n in range(ACCOUNT_FAILURES_BEFORE_SLOWING + 2):
        start = trio.current_time()
        login = spellings[n % len(spellings)]
        await auth.authenticate(login, f"guess{n}", peer=f"192.0.2.{n + 1}", protocol="imap")
        delays.append(trio.current_time() - start)
    assert delays[-2:] == [2.0, 4.0]  # slowed as one account
    # A login naming nobody still counts on its own key (and costs the same hash).
    start = trio.current_time()
    await auth.authenticate("nobody@example.test", "x", peer="198.51.100.9", protocol="imap")
    assert trio.current_time() - start == 1.0
