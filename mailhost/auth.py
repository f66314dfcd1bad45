"""Password logins for every protocol, with one throttle across them.

Failures are counted per client address and per account, across SMTP, IMAP, POP3 and
ActiveSync (reliability-security item 34):
- every failure is answered only after a delay that grows with the address's recent
  failures (Dovecot's auth_failure_delay is a flat 2 s; mox grows it per failure), and
  with the account's recent failures from anywhere (a guessing campaign spread over many
  addresses is slowed too);
- an address past `max_failures_per_minute` or `max_failures_per_day` is refused
  without a password check until its window clears (mox: 10/min, 50/day per IP);
- an address is counted together with its networks, and refused when any of them is
  past its limits: an IPv6 address by its /64 (one customer, so one address's limits)
  and its /48, an IPv4 address by itself and its /24; the /48 and the /24 get
  WIDE_NETWORK_FACTOR times the limits. Loopback addresses are this host: counted one
  by one, as before;
- a check holds a place in its address's budgets from the moment it starts, so guesses
  sent in parallel see each other and at most the limit of them reach the password hash:
  a failure keeps its place; a right password, or a check that broke or was cancelled,
  gives it back. A check finding the rest of a budget held by checks still running waits
  for them (they may give it back) rather than being refused: a busy NAT logging in
  rightly is not throttled, only failures are;
- at most MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT checks of one account run at once, from
  anywhere: a campaign from many addresses cannot pile up hashes on one account (the
  slowdown above only delays answers).
An account is the user a login names, however it is spelt (any of the user's addresses,
the alias, DOMAIN\\alias, any case); a login naming nobody counts on its own text.
The account alone is never locked and its owner's correct password is never delayed by
failures: a stranger hammering someone's account does not stop its owner logging in. The
one exception is the cap on checks at once: while it is full, the owner too is asked to
come back later (the price of bounding the hashes one account can cost).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from mailhost.config import AuthSettings
from mailhost.directory import Directory, DirectoryError, User
from mailhost.passwords import VerifiedCredentials
from protocols.auth import Account, Login, LoginOutcome

# Argon2id costs ~70 ms of CPU; at most this many hashes run at once (2 cores).
HASH_THREADS = 2
MINUTE = 60.0
DAY = 86400.0
MAX_TRACKED_KEYS = 100_000  # addresses, networks and accounts, per table
FORGET_AT_ONCE = 1000  # keys dropped when a table is full
MAX_FAILURE_DELAY = 15.0
# Failures on one account in a minute, from any address, before its failures slow down
# (a user mistyping from a phone, a laptop and a tablet stays well below this).
ACCOUNT_FAILURES_BEFORE_SLOWING = 10
# Checks of one account running at once, from any address; more are refused as throttled.
# Above an owner's own burst: a desktop client opening its IMAP connections (Thunderbird
# keeps up to 5), a phone and a submission at the same moment.
MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT = 8
MAX_ACCOUNT_KEY = 320  # an address is at most 254 octets; anything longer is cut
MAX_PEER_KEY = 64  # a peer that is not an IP address (never from a socket) is cut
# Networks counted with the address. RFC 4291 2.5.1: an IPv6 subnet is a /64, the
# smallest network a customer gets, so it has one address's limits; RIPE-690 gives a
# business site a /48 (RFC 6177 leaves the size to the provider). An IPv4 /24 is a
# provider's pool or an office's network.
IPV6_SUBNET_PREFIX = 64
IPV6_SITE_PREFIX = 48
IPV4_NETWORK_PREFIX = 24
WIDE_NETWORK_FACTOR = 5  # the /48 and the IPv4 /24 get this many times the limits

log = logging.getLogger("mailhost.auth")


@dataclass(frozen=True, slots=True)
class Bucket:
    """One counter a client's failures go to, with its share of the limits."""

    key: str  # an address ("192.0.2.9") or a network ("2001:db8::/64")
    factor: int  # the limits, in multiples of one address's


def buckets_of(peer: str) -> tuple[Bucket, ...]:
    """The counters of a client at address `peer`, narrowest first."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(peer)
    except ValueError:
        return (Bucket(peer[:MAX_PEER_KEY], 1),)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # an IPv4 client on a dual-stack socket
    if address.is_loopback:
        return (Bucket(str(address), 1),)
    if isinstance(address, ipaddress.IPv4Address):
        network = ipaddress.IPv4Network((int(address), IPV4_NETWORK_PREFIX), strict=False)
        return (Bucket(str(address), 1), Bucket(str(network), WIDE_NETWORK_FACTOR))
    subnet = ipaddress.IPv6Network((int(address), IPV6_SUBNET_PREFIX), strict=False)
    site = ipaddress.IPv6Network((int(address), IPV6_SITE_PREFIX), strict=False)
    return (Bucket(str(subnet), 1), Bucket(str(site), WIDE_NETWORK_FACTOR))


def account_key(login: str) -> str:
    """The account a login names, as counted: "EXAMPLE\\Alice" is "alice"."""
    return login.strip().lower().rsplit("\\", 1)[-1][:MAX_ACCOUNT_KEY]


@dataclass(slots=True)
class _Counter:
    failures: deque[float] = field(default_factory=deque)  # times, oldest first
    in_flight: int = 0  # checks started and not finished
    finished: trio.Event | None = None  # set when one of them finishes


class FailureCounts:
    """Failure times by key, kept for `memory` seconds, and the checks still running."""

    def __init__(self, clock: Callable[[], float], memory: float) -> None:
        self._clock = clock
        self._memory = memory
        self._counters: dict[str, _Counter] = {}

    def recent(self, key: str, window: float) -> int:
        """Failures of `key` in the last `window` seconds (checks in flight not counted)."""
        counter = self._counters.get(key)
        if counter is None:
            return 0
        horizon = self._clock() - window
        count = 0
        for when in reversed(counter.failures):
            if when <= horizon:
                break
            count += 1
        return count

    def in_flight(self, key: str) -> int:
        counter = self._counters.get(key)
        return 0 if counter is None else counter.in_flight

    def start(self, key: str) -> None:
        self._counters.setdefault(key, _Counter()).in_flight += 1

    async def wait_check_finished(self, key: str) -> None:
        """Until a check of `key` in flight finishes (there must be one)."""
        counter = self._counters[key]
        if counter.finished is None:
            counter.finished = trio.Event()
        await counter.finished.wait()

    def finish(self, key: str, *, failed: bool) -> None:
        counter = self._counters[key]  # there since start(): a key in flight is kept
        counter.in_flight -= 1
        if counter.finished is not None:
            counter.finished.set()
            counter.finished = None
        now = self._clock()
        if failed:
            counter.failures.append(now)
        while counter.failures and counter.failures[0] <= now - self._memory:
            counter.failures.popleft()
        if not counter.failures and not counter.in_flight:
            del self._counters[key]
        elif len(self._counters) > MAX_TRACKED_KEYS:
            self._forget_quietest()

    def _forget_quietest(self) -> None:
        # Bounded memory under a spray; keys with checks in flight stay.
        idle = [k for k, c in self._counters.items() if not c.in_flight and c.failures]
        idle.sort(key=lambda k: self._counters[k].failures[-1])
        for stale in idle[:FORGET_AT_ONCE]:
            del self._counters[stale]


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
        self._failures = FailureCounts(clock, DAY)  # by address and network
        self._account_failures = FailureCounts(clock, MINUTE)  # by account_key()

    def failures_from(self, address: str) -> int:
        """Failures in the last day counted for `address` (for IPv6, its /64)."""
        return self._failures.recent(buckets_of(address)[0].key, DAY)

    async def _admit(self, buckets: tuple[Bucket, ...], account: str) -> str | None:
        """Reserve a place for one check in every budget of the client and the account
        (None), or say why the check is refused without hashing."""
        while True:
            settings = self._settings()
            held_by = None
            for bucket in buckets:
                per_minute = settings.max_failures_per_minute * bucket.factor
                per_day = settings.max_failures_per_day * bucket.factor
                minute = self._failures.recent(bucket.key, MINUTE)
                day = self._failures.recent(bucket.key, DAY)
                if minute >= per_minute or day >= per_day:
                    return f"too many failures from {bucket.key}"
                pending = self._failures.in_flight(bucket.key)
                if held_by is None and (minute + pending >= per_minute or day + pending >= per_day):
                    held_by = bucket.key
            if held_by is None:
                break
            # The rest of the budget is held by checks still running: each either fails
            # (then the budget is spent) or gives its place back.
            await self._failures.wait_check_finished(held_by)
        if self._account_failures.in_flight(account) >= MAX_CHECKS_IN_FLIGHT_PER_ACCOUNT:
            return "too many checks of the account at once"
        # No checkpoint since the counts were read: the next guess sees this one.
        for bucket in buckets:
            self._failures.start(bucket.key)
        self._account_failures.start(account)
        return None

    def _user_of(self, login: str) -> User | None:
        """The user a login names, however it is written (address, other address,
        alias, DOMAIN\\alias). One indexed SQLite read (WAL: never waits for a writer),
        cheaper than a thread hand-off."""
        try:
            return self._directory.user_for_login(login)
        except DirectoryError:
            return None

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
        buckets = buckets_of(peer)
        named = self._user_of(login)
        # What the attempt counts against: the user, whatever the spelling (else a
        # guesser would get a budget per spelling), or the login itself for nobody.
        account = f"user:{named.id}" if named is not None else account_key(login)
        refusal = await self._admit(buckets, account)
        if refusal is not None:
            log.warning("auth throttled: %s login=%r from %s (%s)", protocol, login, peer, refusal)
            await trio.sleep(self._settings().failure_delay)
            return Login(LoginOutcome.THROTTLED)
        failed = False
        try:
            user = await trio.to_thread.run_sync(
                self._directory.verify_user, named, password, self._cache, limiter=self._limiter
            )
            failed = user is None
        finally:
            # A failure stays counted; a right password, an error or a cancellation (the
            # hash did not answer) gives the place back.
            for bucket in buckets:
                self._failures.finish(bucket.key, failed=failed)
            self._account_failures.finish(account, failed=failed)
        if user is not None:
            return Login(LoginOutcome.OK, self.account(user))
        narrowest = buckets[0].key
        count = self._failures.recent(narrowest, DAY)
        by_account = self._account_failures.recent(account, MINUTE)
        log.warning(
            "auth failed: %s login=%r from %s (%d today from there, %d this minute on the account)",
            protocol,
            login,
            peer,
            count,
            by_account,
        )
        recent = self._failures.recent(narrowest, MINUTE)
        steps = max(0, recent - 3, by_account - ACCOUNT_FAILURES_BEFORE_SLOWING)
        delay = min(self._settings().failure_delay * 2 ** min(steps, 10), MAX_FAILURE_DELAY)
        await trio.sleep(delay)
        return Login(LoginOutcome.FAILED)
