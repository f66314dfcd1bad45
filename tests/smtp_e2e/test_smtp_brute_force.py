"""Password guessing over SMTP is slowed, then refused, without locking out the owner
(reliability-security item 34)."""

from __future__ import annotations

import smtplib
import time

import pytest
from harness import Instance


@pytest.fixture
def throttled(instance: Instance) -> Instance:
    instance.set_config("auth", "failure_delay", "0.2")
    instance.set_config("auth", "max_failures_per_minute", "5")
    return instance


def test_guessing_is_delayed_then_refused_and_the_owner_elsewhere_is_not(
    throttled: Instance,
) -> None:
    instance = throttled
    context = instance.client_context(check_hostname=False)
    with instance.start() as server:
        timings = []
        with smtplib.SMTP_SSL(
            *server.address("submissions"), context=context, timeout=30
        ) as client:
            client.ehlo("guesser")
            client.user, client.password = "demo@example.test", "guess"
            for _ in range(5):
                started = time.monotonic()
                # One AUTH PLAIN per guess (login() would also try LOGIN: two failures).
                with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                    client.auth("PLAIN", client.auth_plain)
                timings.append(time.monotonic() - started)
                assert failed.value.smtp_code == 535
        assert all(t >= 0.2 for t in timings)
        assert timings[-1] > timings[0]  # the delay grows with the failures
        # From the same address, even the right password is refused for now.
        with (
            smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=30) as client,
            pytest.raises(smtplib.SMTPAuthenticationError) as refused,
        ):
            client.login("demo@example.test", instance.password)
        assert refused.value.smtp_code == 454
        # The owner, connecting from another loopback address, is let in.
        with smtplib.SMTP_SSL(
            *server.address("submissions"),
            context=context,
            timeout=30,
            source_address=("127.0.0.2", 0),
        ) as client:
            assert client.login("demo@example.test", instance.password)[0] == 235
        log = server.log()
        assert "auth failed: smtp login='demo@example.test' from 127.0.0.1" in log
        assert "auth throttled" in log
