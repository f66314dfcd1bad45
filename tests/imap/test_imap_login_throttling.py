"""Security: login throttling (checklist item 34) through the shared password checker.

The checker counts failures per client address across protocols and applies the delay;
IMAP answers a throttled login with ``NO [UNAVAILABLE]`` (try later) and a wrong password
with ``NO [AUTHENTICATIONFAILED]`` (RFC 5530), and ends a guessing connection after
MAX_LOGIN_FAILURES attempts.
"""

from __future__ import annotations

import imaplib
import time

import pytest
from harness import Instance
from imap_e2e_support import imaps
from imap_session_kit import PASSWORD, SessionWorld

from protocols.imap.settings import MAX_LOGIN_FAILURES


async def test_wrong_password_then_bye_after_the_limit(world: SessionWorld) -> None:
    client = await world.connect(login=False)
    for attempt in range(1, MAX_LOGIN_FAILURES + 1):
        _untagged, tagged = await client.command("LOGIN alice@example.test wrong")
        assert tagged.startswith(b"T%d NO [AUTHENTICATIONFAILED]" % attempt), tagged
    assert await client.read_line() == b"* BYE too many failed logins\r\n"


async def test_throttled_peer_gets_unavailable_even_with_the_right_password(
    world: SessionWorld,
) -> None:
    world.checker.throttled.add("192.0.2.9")
    client = await world.connect(peer="192.0.2.9", login=False)
    _, tagged = await client.command(f"LOGIN alice@example.test {PASSWORD}")
    assert tagged.startswith(b"T1 NO [UNAVAILABLE]"), tagged
    # Another address is not locked out (key on the address, not the account).
    other = await world.connect(peer="198.51.100.7", login=False)
    _untagged, tagged = await other.command(f"LOGIN alice@example.test {PASSWORD}")
    assert tagged.startswith(b"T1 OK"), tagged


async def test_authenticate_plain_counts_as_a_login(world: SessionWorld) -> None:
    client = await world.connect(login=False)
    _untagged, tagged = await client.command(
        "AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdAB3cm9uZw=="  # \0alice@...\0wrong
    )
    assert tagged.startswith(b"T1 NO [AUTHENTICATIONFAILED]")
    assert world.checker.calls == [("alice@example.test", "imap")]


def test_end_to_end_failures_are_delayed_then_throttled(instance: Instance) -> None:
    instance.set_config("auth", "failure_delay", "0.2")
    instance.set_config("auth", "max_failures_per_minute", "3")
    with instance.start() as server:
        durations = []
        client = imaps(server, instance)
        for _ in range(2):
            start = time.monotonic()
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                client.login(instance.user, "wrong")
            durations.append(time.monotonic() - start)
        assert min(durations) >= 0.2  # the checker's delay was applied before the answer
        client.shutdown()
        client = imaps(server, instance)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(instance.user, "wrong")
        # The address is now throttled: even the right password is refused, for now.
        with pytest.raises(imaplib.IMAP4.error, match="UNAVAILABLE"):
            client.login(instance.user, instance.password)
        client.shutdown()
