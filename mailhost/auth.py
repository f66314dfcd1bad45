"""Password logins for every protocol, with one throttle across them.

Failures are counted per client address and per account, across SMTP, IMAP, POP3 and
ActiveSync (reliability-security item 34):
- every failure is answered only after a delay that grows with the address's recent
  failures (Dovecot's auth_failure_delay is a flat 2 s; mox grows it per failure), and
  with the account's recent failures from anywhere (a guessing campaign spread over many
  addresses is slowed too);
- an address past `max_failures_per_minute` or `max_failures_per_day` is refused
  without a password check until its window clears (mox: 10/min, 50/day per IP).
The account alone is never locked and its owner's correct password is never delayed: a
stranger hammering someone's account does not stop its owner logging in.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import trio

from mailhost.config import AuthSettings
from mailhost.directory import Directory, User
from mailhost.passwords import VerifiedCredentials
from protocols.auth import Account, Login, LoginOutcome

# Argon2id costs ~70 ms of CPU; at most this many hashes run at once (2 cores).
HASH_THREADS = 2
MINUTE = 60.0
DAY = 86400.0
MAX_TRACKED_ADDRESSES = 100_000
MAX_FAILURE_DELAY = 15.0
# Failures on one account in a minute, from any address, before its failures slow down
# (a user mistyping from a phone, a laptop and a tablet stays well below this).
ACCOUNT_FAILURES_BEFORE_SLOWING = 10
MAX_ACCOUNT_KEY = 320  # an address is at most 254 octets; anything longer is cut

log = logging.getLogger("mailhost.auth")


class Authenticator:
    """Shared by every listener of one server process."""

    def __init__(
        self,
        directory: Directory,
        settings: Callable[[], AuthSettings] = AuthSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._directory = directory
        self._settings = settings
        self._clock = clock
        self._cache = VerifiedCredentials(clock=clock)
        self._limiter = trio.CapacityLimiter(HASH_THREADS)
        self._failures: dict[str, deque[float]] = {}  # by client address
        self._account_failures: dict[str, deque[float]] = {}  # by login, lower-cased

    def failures_from(self, address: str) -> int:
        return len(self._recent(address, DAY))

    def _recent(
        self, key: str, window: float, table: dict[str, deque[float]] | None = None
    ) -> deque[float]:
        times = (self._failures if table is None else table).get(key, deque())
        horizon = self._clock() - window
        return deque(t for t in times if t > horizon)

    def _throttled(self, address: str) -> bool:
        settings = self._settings()
        return (
            len(self._recent(address, MINUTE)) >= settings.max_failures_per_minute
            or len(self._recent(address, DAY)) >= settings.max_failures_per_day
        )

    def _record_failure(self, key: str, table: dict[str, deque[float]] | None = None) -> int:
        table = self._failures if table is None else table
        now = self._clock()
        times = table.setdefault(key, deque())
        while times and times[0] <= now - DAY:
            times.popleft()
        times.append(now)
        if len(table) > MAX_TRACKED_ADDRESSES:
            # Forget the quietest keys first; bounded memory under a spray.
            for stale in sorted(table, key=lambda a: table[a][-1])[:1000]:
                del table[stale]
        return len(times)

    def account(self, user: User) -> Account:
        return Account(
            user_id=user.id,
            address=user.primary_address,
            mailbox_id=user.guid,
            display_name=user.display_name,
            addresses=tuple(self._directory.addresses_of(user.id)),
        )

    async def authenticate(self, login: str, password: str, *, peer: str, protocol: str) -> Login:
        """Check `login`/`password` for a client at address `peer`."""
        if self._throttled(peer):
            log.warning(
                "auth throttled: %s login=%r from %s (too many failures)", protocol, login, peer
            )
            await trio.sleep(self._settings().failure_delay)
            return Login(LoginOutcome.THROTTLED)
        user = await trio.to_thread.run_sync(
            self._directory.verify_login, login, password, self._cache, limiter=self._limiter
        )
        if user is not None:
            return Login(LoginOutcome.OK, self.account(user))
        count = self._record_failure(peer)
        account = login.strip().lower().rsplit("\\", 1)[-1][:MAX_ACCOUNT_KEY]
        self._record_failure(account, self._account_failures)
        by_account = len(self._recent(account, MINUTE, self._account_failures))
        log.warning(
            "auth failed: %s login=%r from %s (%d today from there, %d this minute on the account)",
            protocol,
            login,
            peer,
            count,
            by_account,
        )
        recent = len(self._recent(peer, MINUTE))
        steps = max(0, recent - 3, by_account - ACCOUNT_FAILURES_BEFORE_SLOWING)
        delay = min(self._settings().failure_delay * 2 ** min(steps, 10), MAX_FAILURE_DELAY)
        await trio.sleep(delay)
        return Login(LoginOutcome.FAILED)
