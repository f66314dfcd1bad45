"""The queue runner: picks due messages, groups recipients by destination, delivers over
reused connections within concurrency limits, retries on a schedule, sends DSNs.

Life of one attempt at one message:

1. `Queue.begin_attempt` records attempts+1 and the next attempt time *before* anything
   is tried (the mox pattern): if the process dies mid-delivery, the message waits for
   its backoff instead of being retried in a storm.
2. Pending recipients are grouped by destination (connector + domain for MX routing,
   connector for smart hosts). Each group is a job handed to that destination's workers;
   a worker owns one connection and takes job after job from its destination (RSET
   between messages), up to `max_per_destination` workers per destination and
   `max_connections` in all. An idle connection lingers `connection_idle` seconds for
   more work (Postfix's connection cache), then QUITs.
3. Each job tries the destination's hosts in order (MX preference, then the next MX when
   a connection is refused, the greeting or EHLO fails, or the session breaks before the
   end of DATA). Per-recipient verdicts: 2xx delivered, 4xx deferred, 5xx failed.
4. The results are merged into the stored envelope under its lock (an administrator may
   have held or deleted it meanwhile). Deferred recipients past the queue lifetime fail
   with 4.4.7 (as Exchange reports expiry). DSNs owed (NOTIFY, RFC 3461) are handed off
   first, and only then is the entry marked notified or removed, so a crash can repeat a
   DSN but never lose one.

One log line per recipient per attempt, Postfix style, for administrators to grep:
`<queue id>: to=<addr>, relay=host[ip]:port, delay=12.3, attempts=2, dsn=4.4.1,
status=deferred (...)`, where status is sent, deferred, bounced or expired.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import functools
import logging
import os
import ssl
import stat
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import trio

from store.clock import SYSTEM_CLOCK, Clock

from .client import (
    ClientTimeouts,
    OutboundRecipient,
    RecipientVerdict,
    SessionError,
    SmtpClient,
    TlsFailure,
    Transaction,
    UnsafeAddress,
    check_address,
    client_tls_context,
    passes_data_unchanged,
    verdicts_for,
)
from .dsn import BOUNCE_SIZE_LIMIT, DsnAction, DsnError, DsnRecipient, build_dsn
from .envelope import (
    BodyType,
    Diagnostic,
    EntryKind,
    Notify,
    QueueEntry,
    Recipient,
    RecipientSpec,
    RecipientState,
    domain_of,
)
from .queue import EntryNotFound, Queue, QueueError, QueueStatistics
from .routing import Hop, Route, Router, RoutingError, TlsMode

__all__ = [
    "MAX_ACTIVE_BYTES",
    "DeliverySettings",
    "LocalDelivery",
    "LocalDeliveryError",
    "LocalOutcome",
    "QueueRunner",
    "RetrySchedule",
    "RunnerStatistics",
    "Signer",
]

log = logging.getLogger("mailhost.delivery")

# After an unexpected error with one entry, leave it alone this long (no hot loop).
ERROR_PENALTY = 60.0
# Message content the attempts in flight may hold together. An attempt reads its whole
# message into memory (Queue.read_message) and keeps it until its results are merged; a
# DKIM-signed copy and each destination's dot-stuffed DATA payload (client.encode_data)
# add to that while they are used, so the peak is a small multiple of this. Counted by
# the size the queue index records; a message larger than this on its own still goes,
# alone. (Postfix's qmgr_message_active_limit counts messages only: its delivery agents
# read the queue file as they send it.)
MAX_ACTIVE_BYTES = 256 * 1024 * 1024
# What a recipient's diagnostic says after an unexpected error (the traceback goes to the
# log, not into a DSN to a stranger). RFC 3463 4.3.0: other or undefined mail system status.
INTERNAL_ERROR_STATUS = "4.3.0"
INTERNAL_ERROR_TEXT = "internal error during delivery; will retry"


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Backoff doubling from `minimal_backoff` up to `maximal_backoff` (Postfix 3.7:
    300 s and 4000 s), give up after `lifetime` (maximal_queue_lifetime = 5 d; RFC 5321
    4.5.4.1 asks for 4-5 days), a delay DSN after `delay_warning` (0 turns it off)."""

    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    lifetime: float = 5 * 86400.0
    delay_warning: float = 4 * 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.minimal_backoff <= self.maximal_backoff:
            raise ValueError("backoff times must satisfy 0 < minimal <= maximal")
        if self.lifetime <= 0 or self.delay_warning < 0:
            raise ValueError("lifetime must be positive and delay_warning not negative")

    def backoff(self, attempts: int) -> float:
        """The wait after attempt number `attempts` (1-based)."""
        exponent = min(max(attempts - 1, 0), 30)
        return float(min(self.maximal_backoff, self.minimal_backoff * (1 << exponent)))

    def next_attempt(self, entry: QueueEntry, now: float) -> float:
        """When to try again after an attempt starting now; never past the expiry time,
        so the last attempt happens when the lifetime ends."""
        expiry = entry.arrival + self.lifetime
        wait = now + self.backoff(entry.attempts + 1)
        return wait if now >= expiry else min(wait, expiry)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    hostname: str  # HELO default, Reporting-MTA, MAILER-DAEMON@hostname
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    timeouts: ClientTimeouts = field(default_factory=ClientTimeouts)
    # Postfix default_process_limit = 100 and default_destination_concurrency_limit = 20.
    max_connections: int = 100
    max_per_destination: int = 20
    # Postfix qmgr_message_active_limit is 20000; we keep message bodies in memory, so
    # fewer, and their bytes together are bounded by max_active_bytes as well.
    max_active_messages: int = 1000
    max_active_bytes: int = MAX_ACTIVE_BYTES
    bounce_size_limit: int = BOUNCE_SIZE_LIMIT
    postmaster: str | None = None  # double bounces go here; None discards them (logged)
    ca_file: str | None = None  # trust for verified TLS; None: the system's
    scan_interval: float = 300.0  # Postfix queue_run_delay: re-read the spool this often
    connection_reuse_time: float = 300.0  # Postfix smtp_connection_reuse_time_limit
    connection_idle: float = 2.0  # Postfix smtp_connection_cache_time_limit


class LocalOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    NOT_LOCAL = "not-local"


class LocalDeliveryError(Exception):
    """Local delivery failed; `temporary` says whether to try again later."""

    def __init__(self, text: str, *, temporary: bool = True) -> None:
        super().__init__(text)
        self.temporary = temporary


class LocalDelivery(Protocol):
    """Puts a message (a DSN) into a local mailbox, durably, or says the address is not
    local. Bound to the store by the service."""

    async def __call__(self, recipient: str, message: bytes) -> LocalOutcome: ...


class Signer(Protocol):
    """DKIM: returns the message with signature headers in front (or as it was)."""

    def sign(self, message: bytes, *, domain: str | None = None) -> bytes: ...


@dataclass(frozen=True, slots=True)
class RunnerStatistics:
    active_messages: int
    active_bytes: int  # content size of the messages in flight (max_active_bytes bounds it)
    connections: int
    destinations: int
    delivered: int
    deferred: int
    bounced: int
    queue: QueueStatistics


@dataclass(slots=True)
class _Outcome:
    verdict: RecipientVerdict
    relay: str | None


@dataclass(eq=False, slots=True)
class _Job:
    route: Route
    entry: QueueEntry
    message: bytes
    indices: list[int]
    outcomes: dict[int, _Outcome]
    done: trio.Event = field(default_factory=trio.Event)

    def finish(self, verdicts: Sequence[RecipientVerdict], relay: str | None) -> None:
        for index, verdict in zip(self.indices, verdicts, strict=True):
            self.outcomes[index] = _Outcome(verdict, relay)
        self.done.set()


@dataclass(eq=False, slots=True)
class _Destination:
    key: str
    jobs: deque[_Job] = field(default_factory=deque)
    workers: int = 0
    idle: int = 0
    new_job: trio.Event = field(default_factory=trio.Event)


@dataclass(eq=False, slots=True)
class _Session:
    client: SmtpClient
    relay: str  # host[address]:port, for logs and Remote-MTA
    host: str
    opened: float  # trio time
    target: tuple[str, str, int]


def _signed(signer: Signer, entry: QueueEntry, message: bytes) -> bytes:
    """Blocking: the message as it goes out, DKIM-signed when a key applies. Not a
    BINARYMIME message with line ends other than CRLF: signing puts them in CRLF form
    (RFC 6376 works on the message as DATA carries it), altering its binary content."""
    if entry.body is BodyType.BINARY_MIME and not passes_data_unchanged(message):
        return message
    return signer.sign(message)


def _eight_bit(message: bytes) -> bool:
    return not message.isascii()


class QueueRunner:
    """The delivery service. `run()` is the trio service; `wake()` may be called from
    any thread; `wait_idle()` waits until nothing is due or in flight."""

    def __init__(
        self,
        queue: Queue,
        router: Router,
        *,
        settings: DeliverySettings,
        local: LocalDelivery,
        clock: Clock = SYSTEM_CLOCK,
        signer: Signer | None = None,
    ) -> None:
        self.queue = queue
        self.router = router
        self.settings = settings
        self.local = local
        self.clock = clock
        self.signer = signer
        self._inflight: dict[str, int] = {}  # id -> message size, for max_active_bytes
        self._inflight_bytes = 0
        self._penalty: dict[str, float] = {}
        self._destinations: dict[str, _Destination] = {}
        self._connections = trio.CapacityLimiter(settings.max_connections)
        self._wake_event = trio.Event()
        self._reload_requested = False
        self._changes = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._tls_contexts: dict[bool, ssl.SSLContext] = {}
        self._delivered = 0
        self._deferred = 0
        self._bounced = 0

    # -- the service ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the queue and deliver until cancelled."""
        report = await trio.to_thread.run_sync(self.queue.open)
        log.info(
            "queue runner started: %d queued, %d quarantined, %d leftovers removed",
            report.loaded,
            len(report.quarantined),
            report.removed,
        )
        self._token = trio.lowlevel.current_trio_token()
        self.queue.add_listener(self.wake)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._watch_wakeup_fifo)
                task_status.started()
                await self._schedule_loop()
        finally:
            self.queue.remove_listener(self.wake)
            self._nursery = None

    def wake(self) -> None:
        """Look at the queue now (after an enqueue, a retry, a clock change in tests).
        Safe from any thread, and from the trio thread itself."""
        token = self._token
        if token is None:
            return
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._wake_now)

    def _wake_now(self) -> None:
        # Looked up when it runs, not when wake() was called: the loop may have replaced
        # the event in between.
        self._wake_event.set()

    async def wait_idle(self) -> None:
        """Return once no message is in flight and none is due (tests, draining)."""
        while True:
            due = self.queue.due(self.clock.now(), exclude=self._inflight, limit=1)
            if not self._inflight and not due:
                return
            await self._changes.park()

    def statistics(self) -> RunnerStatistics:
        return RunnerStatistics(
            active_messages=len(self._inflight),
            active_bytes=self._inflight_bytes,
            connections=int(self._connections.borrowed_tokens),
            destinations=len(self._destinations),
            delivered=self._delivered,
            deferred=self._deferred,
            bounced=self._bounced,
            queue=self.queue.statistics(),
        )

    async def _schedule_loop(self) -> None:
        last_scan = trio.current_time()
        while True:
            await trio.lowlevel.checkpoint()
            # Replace the event first, then look at the flags: a wake-up that comes after
            # this line sets the new event, so none is lost between looking and waiting.
            self._wake_event = trio.Event()
            if self._reload_requested or (
                trio.current_time() - last_scan >= self.settings.scan_interval
            ):
                force, self._reload_requested = self._reload_requested, False
                last_scan = trio.current_time()
                try:
                    await trio.to_thread.run_sync(functools.partial(self.queue.reload, force=force))
                except (OSError, QueueError):
                    log.exception("queue rescan failed")
            blocked = not self._dispatch_due()
            self._changes.unpark_all()
            now = self.clock.now()
            wait = self.settings.scan_interval
            if not blocked:  # when blocked, a finishing attempt wakes us
                next_due = self.queue.next_due(exclude=self._inflight.keys() | self._penalty.keys())
                if next_due is not None:
                    wait = min(wait, max(next_due - now, 0.0))
            if self._penalty:
                wait = min(wait, max(min(self._penalty.values()) - now, 1.0))
            since_scan = trio.current_time() - last_scan
            wait = max(0.0, min(wait, self.settings.scan_interval - since_scan))
            if wait > 0:
                with trio.move_on_after(wait):
                    await self._wake_event.wait()

    async def _watch_wakeup_fifo(self) -> None:
        """Wake-ups from other processes (`mailhost queue retry` ...) through the FIFO."""
        try:
            # O_RDWR: the FIFO never reads as end-of-file when the last writer leaves.
            fd = os.open(self.queue.wakeup_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("queue wakeup FIFO unavailable (%s); relying on rescans", exc)
            return
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                # A regular file there (restored from a backup, say) cannot be polled:
                # epoll refuses it with EPERM, which would stop the runner.
                log.warning("%s is not a FIFO; relying on rescans", self.queue.wakeup_path)
                return
            while True:
                await trio.lowlevel.wait_readable(fd)
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 512):
                        pass
                self._reload_requested = True
                self._wake_event.set()
        except OSError as exc:
            log.warning("queue wakeup FIFO failed (%s); relying on rescans", exc)
        finally:
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    def _dispatch_due(self) -> bool:
        """Start attempts for due messages; False when the active-message or active-byte
        limit holds them back (then each finishing attempt wakes the loop)."""
        assert self._nursery is not None
        now = self.clock.now()
        for id, until in list(self._penalty.items()):
            if until <= now:
                del self._penalty[id]
        limit = self.settings.max_active_messages
        free = limit - len(self._inflight)
        # With a backlog, refill in batches: each look at the index is a pass over it.
        if free <= 0 or (self._inflight and free < max(1, limit // 10)):
            return False
        exclude = self._inflight.keys() | self._penalty.keys()
        for id in self.queue.due(now, exclude=exclude, limit=free):
            size = self.queue.size_of(id) or 0  # None: gone meanwhile, the attempt sees it
            if self._inflight and self._inflight_bytes + size > self.settings.max_active_bytes:
                # Oldest first: a large message waits for room rather than being overtaken
                # by smaller ones for ever; with nothing in flight it goes on its own.
                return False
            self._inflight[id] = size
            self._inflight_bytes += size
            self._nursery.start_soon(self._attempt, id)
        return True

    async def _attempt(self, id: str) -> None:
        try:
            await self._attempt_message(id)
        except Exception:
            log.exception("%s: delivery attempt failed unexpectedly", id)
            self._penalty[id] = self.clock.now() + ERROR_PENALTY
        finally:
            self._inflight_bytes -= self._inflight.pop(id, 0)
            self._wake_event.set()
            self._changes.unpark_all()

    # -- one attempt at one message -------------------------------------------------------

    async def _attempt_message(self, id: str) -> None:
        now = self.clock.now()
        schedule = self.settings.schedule

        def begin() -> tuple[QueueEntry, bytes] | None:
            entry = self.queue.begin_attempt(id, now, lambda e: schedule.next_attempt(e, now))
            if entry is None:
                return None
            try:
                return entry, self.queue.read_message(id)
            except EntryNotFound:
                return None

        begun = await trio.to_thread.run_sync(begin)
        if begun is None:
            return
        entry, original = begun
        outcomes: dict[int, _Outcome] = {}
        groups: dict[str, tuple[Route, list[int]]] = {}
        local: list[int] = []
        for index, recipient in enumerate(entry.recipients):
            if recipient.state.final:
                continue
            if recipient.local:
                local.append(index)
                continue
            route = self.router.route_for(domain_of(recipient.address))
            if route is None:
                verdict = RecipientVerdict(
                    recipient.address,
                    RecipientState.DEFERRED,
                    "4.4.4",
                    f"no send connector for the domain of {recipient.address}",
                )
                outcomes[index] = _Outcome(verdict, None)
                continue
            limit = route.connector.max_message_size
            if limit is not None and entry.size > limit:
                verdict = RecipientVerdict(
                    recipient.address,
                    RecipientState.FAILED,
                    "5.3.4",
                    f"message size {entry.size} exceeds the limit {limit} of connector "
                    f"{route.connector.name}",
                )
                outcomes[index] = _Outcome(verdict, None)
                continue
            groups.setdefault(route.destination, (route, []))[1].append(index)
        message = original
        if groups and self.signer is not None and self._may_sign(entry):
            message = await trio.to_thread.run_sync(_signed, self.signer, entry, original)
        async with trio.open_nursery() as nursery:
            for index in local:
                nursery.start_soon(self._deliver_local, entry, original, index, outcomes)
            for key, (route, indices) in groups.items():
                job = _Job(route, entry, message, indices, outcomes)
                nursery.start_soon(self._submit, key, job)
        await self._finish(entry, original, outcomes)

    @staticmethod
    def _may_sign(entry: QueueEntry) -> bool:
        """Only what our users submitted (authenticated) and what we generate is signed:
        relayed mail from strangers never gets our signature."""
        return entry.auth_identity is not None or entry.kind is not EntryKind.MESSAGE

    async def _deliver_local(
        self, entry: QueueEntry, message: bytes, index: int, outcomes: dict[int, _Outcome]
    ) -> None:
        address = entry.recipients[index].address
        try:
            result = await self.local(address, message)
        except LocalDeliveryError as exc:
            state = RecipientState.DEFERRED if exc.temporary else RecipientState.FAILED
            status = "4.2.0" if exc.temporary else "5.2.0"
            verdict = RecipientVerdict(address, state, status, str(exc))
        except Exception:
            # A bug or an error nobody mapped (an OSError out of the store, a locked
            # directory database): a temporary failure of this recipient only. Raising
            # would cancel the attempt's other deliveries and lose their outcomes, so
            # copies already made would be made again on the retry.
            log.exception("%s: local delivery to <%s> failed unexpectedly", entry.id, address)
            verdict = RecipientVerdict(
                address, RecipientState.DEFERRED, INTERNAL_ERROR_STATUS, INTERNAL_ERROR_TEXT
            )
        else:
            if result is LocalOutcome.DELIVERED:
                verdict = RecipientVerdict(address, RecipientState.DELIVERED, "2.0.0", "delivered")
            else:
                verdict = RecipientVerdict(
                    address, RecipientState.FAILED, "5.1.1", "no longer a local mailbox"
                )
        outcomes[index] = _Outcome(verdict, "local")

    async def _submit(self, key: str, job: _Job) -> None:
        destination = self._destinations.get(key)
        if destination is None:
            destination = self._destinations[key] = _Destination(key)
        destination.jobs.append(job)
        if destination.idle:
            destination.new_job.set()
            destination.new_job = trio.Event()
        elif destination.workers < self.settings.max_per_destination:
            assert self._nursery is not None
            destination.workers += 1
            self._nursery.start_soon(self._worker, destination)
        await job.done.wait()

    # -- destination workers --------------------------------------------------------------

    async def _worker(self, destination: _Destination) -> None:
        session: _Session | None = None
        try:
            async with self._connections:
                while True:
                    if not destination.jobs:
                        if session is None:
                            break
                        destination.idle += 1
                        try:
                            with trio.move_on_after(self.settings.connection_idle):
                                await destination.new_job.wait()
                        finally:
                            destination.idle -= 1
                        if not destination.jobs:
                            break
                        continue
                    job = destination.jobs.popleft()
                    try:
                        session = await self._run_job(job, session)
                    except Exception:
                        # This task lives in the runner's nursery: raising would stop every
                        # delivery and the server. A bug or an unmapped error in routing or
                        # in the session defers this job; the next job gets a fresh
                        # connection (_run_job closed its own).
                        log.exception(
                            "%s: delivery to %s failed unexpectedly", job.entry.id, destination.key
                        )
                        if session is not None:  # what it passed in (closing twice is fine)
                            await session.client.aclose()
                        session = None
                        if not job.done.is_set():
                            error = SessionError(INTERNAL_ERROR_TEXT, status=INTERNAL_ERROR_STATUS)
                            job.finish(verdicts_for(self._recipients(job), error), None)
                    finally:
                        if not job.done.is_set():  # cancelled or crashed mid-job
                            error = SessionError("delivery interrupted")
                            job.finish(verdicts_for(self._recipients(job), error), None)
        finally:
            destination.workers -= 1
            if session is not None:
                await session.client.quit()
            if destination.workers == 0:
                for job in destination.jobs:
                    job.finish(verdicts_for(self._recipients(job), SessionError("no worker")), None)
                destination.jobs.clear()
                if self._destinations.get(destination.key) is destination:
                    del self._destinations[destination.key]

    @staticmethod
    def _recipients(job: _Job) -> list[OutboundRecipient]:
        return [
            OutboundRecipient(
                job.entry.recipients[i].address,
                job.entry.recipients[i].notify,
                job.entry.recipients[i].orcpt,
            )
            for i in job.indices
        ]

    async def _run_job(self, job: _Job, session: _Session | None) -> _Session | None:
        """Deliver one job; returns the session to reuse for the next job, if any."""
        entry = job.entry
        recipients = self._recipients(job)
        unsafe: dict[int, RecipientVerdict] = {}
        for position, rcpt in enumerate(recipients):
            try:
                check_address(rcpt.address)
            except UnsafeAddress as exc:
                unsafe[position] = RecipientVerdict(
                    rcpt.address, RecipientState.FAILED, "5.1.3", f"bad address: {exc}"
                )
        if entry.sender is not None:
            try:
                check_address(entry.sender)
            except UnsafeAddress as exc:
                bad = RecipientVerdict("", RecipientState.FAILED, "5.1.7", f"bad sender: {exc}")
                job.finish([replace(bad, address=r.address) for r in recipients], None)
                return session
        sendable = [r for i, r in enumerate(recipients) if i not in unsafe]
        if not sendable:
            job.finish([unsafe[i] for i in range(len(recipients))], None)
            return session
        tx = Transaction(
            sender=entry.sender,
            recipients=tuple(sendable),
            eight_bit=entry.body is not BodyType.SEVEN_BIT or _eight_bit(job.message),
            binary=entry.body is BodyType.BINARY_MIME,
            smtputf8=entry.smtputf8,
            ret=entry.ret,
            envid=entry.envid,
        )
        tried: set[tuple[str, str, int]] = set()
        reused = session is not None
        try:
            while True:
                if session is not None and (
                    trio.current_time() - session.opened > self.settings.connection_reuse_time
                ):
                    await session.client.quit()
                    session = None
                if session is not None:
                    if session.client.needs_reset:
                        try:
                            await session.client.reset()
                        except SessionError:
                            await session.client.aclose()
                            session = None
                            continue
                else:
                    try:
                        session = await self._open_session(job.route, tried)
                    except RoutingError as exc:
                        state = RecipientState.FAILED if exc.permanent else RecipientState.DEFERRED
                        verdict = RecipientVerdict("", state, exc.status, exc.text)
                        self._finish_job(job, recipients, unsafe, [verdict] * len(sendable), None)
                        return None
                    except SessionError as exc:
                        self._finish_job(job, recipients, unsafe, verdicts_for(sendable, exc), None)
                        return None
                try:
                    verdicts = await session.client.send_message(tx, job.message)
                except SessionError as exc:
                    await session.client.aclose()
                    failed, session = session, None
                    if exc.committed:  # the server may have the message: never send it twice now
                        verdicts = verdicts_for(sendable, exc)
                        self._finish_job(job, recipients, unsafe, verdicts, failed.relay)
                        return None
                    if reused:
                        reused = False  # a cached connection went stale: one fresh try
                        continue
                    tried.add(failed.target)
                    log.info("%s: %s: %s; trying the next host", entry.id, failed.relay, exc.text)
                    continue
                self._finish_job(job, recipients, unsafe, verdicts, session.relay)
                return session
        except BaseException:
            # Whatever broke (or cancelled) the job, a connection opened here is closed here:
            # the worker only knows the session it passed in.
            if session is not None:
                await session.client.aclose()
            raise

    @staticmethod
    def _finish_job(
        job: _Job,
        recipients: list[OutboundRecipient],
        unsafe: dict[int, RecipientVerdict],
        verdicts: Sequence[RecipientVerdict],
        relay: str | None,
    ) -> None:
        it = iter(verdicts)
        merged = []
        for position, rcpt in enumerate(recipients):
            if position in unsafe:
                merged.append(unsafe[position])
            else:
                merged.append(replace(next(it), address=rcpt.address))
        job.finish(merged, relay)

    async def _open_session(self, route: Route, tried: set[tuple[str, str, int]]) -> _Session:
        """Connect to the first host that works, in order. Raises RoutingError when there
        is nothing to try, SessionError with the last failure when nothing worked."""
        hops = await self.router.resolve(route)
        last: SessionError | None = None
        for hop in hops:
            for address in hop.addresses:
                target = (hop.host, str(address), hop.port)
                if target in tried:
                    continue
                tried.add(target)
                try:
                    return await self._connect(route, hop, str(address), tls=True)
                except TlsFailure as exc:
                    if route.connector.tls is not TlsMode.OPPORTUNISTIC:
                        last = exc
                        continue
                    # RFC 7435 opportunistic: a failed handshake falls back to plaintext.
                    log.info("%s[%s]: %s; retrying without TLS", hop.host, address, exc.text)
                    try:
                        return await self._connect(route, hop, str(address), tls=False)
                    except SessionError as again:
                        last = again
                except SessionError as exc:
                    log.info("%s[%s]:%d: %s", hop.host, address, hop.port, exc.text)
                    last = exc
        if last is None:
            raise SessionError("no host left to try", status="4.4.1")
        raise last

    def _tls_context(self, verify: bool) -> ssl.SSLContext:
        context = self._tls_contexts.get(verify)
        if context is None:
            context = client_tls_context(verify=verify, cafile=self.settings.ca_file)
            self._tls_contexts[verify] = context
        return context

    async def _connect(self, route: Route, hop: Hop, address: str, *, tls: bool) -> _Session:
        connector = route.connector
        relay = f"{hop.host}[{address}]:{hop.port}"
        timeouts = self.settings.timeouts
        stream: trio.SocketStream | None = None
        with trio.move_on_after(timeouts.connect):
            try:
                stream = await trio.open_tcp_stream(address, hop.port)
            except OSError as exc:
                reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
                raise SessionError(f"connect to {relay}: {reason}", status="4.4.1") from None
        if stream is None:
            raise SessionError(f"connect to {relay}: timed out", status="4.4.1")
        client = SmtpClient(stream, timeouts=timeouts, peer=relay)
        try:
            await client.read_greeting()
            name = connector.fqdn or self.settings.hostname
            capabilities = await client.hello(name)
            if tls and connector.tls is not TlsMode.DISABLED and capabilities.offers("STARTTLS"):
                context = self._tls_context(connector.verify_certificate)
                await client.starttls(context, hop.host)
                capabilities = await client.hello(name)
            elif connector.tls is TlsMode.REQUIRED:
                raise TlsFailure(
                    f"{relay} does not offer STARTTLS, which is required", status="4.7.5"
                )
            if connector.auth is not None and capabilities.auth:
                if client.tls_version is None and not connector.allow_plaintext_auth:
                    # RFC 4954 14: never send credentials in clear unless told to.
                    raise SessionError(
                        f"{relay}: refusing to authenticate without TLS", status="4.7.0"
                    )
                await client.authenticate(connector.auth.username, connector.auth.password)
        except BaseException:
            await client.aclose()
            raise
        return _Session(client, relay, hop.host, trio.current_time(), (hop.host, address, hop.port))

    # -- results and notifications ---------------------------------------------------------

    def _owes(self, entry: QueueEntry, recipient: Recipient) -> bool:
        """Whether this final recipient still needs a DSN (RFC 3461 4.1 NOTIFY)."""
        if recipient.state is RecipientState.FAILED:
            if entry.sender is None:  # never a DSN to <>; a double bounce at most
                return self.settings.postmaster is not None and entry.kind is not (
                    EntryKind.DOUBLE_BOUNCE
                )
            return recipient.wants(Notify.FAILURE)
        if recipient.state is RecipientState.DELIVERED:
            return (
                entry.sender is not None and recipient.relayed and recipient.wants(Notify.SUCCESS)
            )
        return False

    async def _finish(
        self, attempted: QueueEntry, original: bytes, outcomes: dict[int, _Outcome]
    ) -> None:
        now = self.clock.now()
        expiry = attempted.arrival + self.settings.schedule.lifetime

        def merge(current: QueueEntry) -> QueueEntry | None:
            recipients = list(current.recipients)
            for index, outcome in outcomes.items():
                if index >= len(recipients):
                    continue
                recipient = recipients[index]
                if recipient.state.final or recipient.address != outcome.verdict.address:
                    continue  # decided meanwhile (deleted with a DSN by the administrator)
                v = outcome.verdict
                remote = outcome.relay if outcome.relay not in (None, "local") else None
                diagnostic = Diagnostic(v.status, v.text, v.reply_code, remote)
                state = v.state
                if state is RecipientState.DEFERRED and now >= expiry:
                    state = RecipientState.FAILED
                    diagnostic = replace(diagnostic, status="4.4.7")  # delivery time expired
                recipients[index] = replace(
                    recipient,
                    state=state,
                    diagnostic=diagnostic,
                    last_attempt=now,
                    relayed=state is RecipientState.DELIVERED and not v.dsn_passed_on,
                )
            for index, recipient in enumerate(recipients):
                owed = self._owes(current, recipient)
                if recipient.state.final and not recipient.notified and not owed:
                    recipients[index] = replace(recipient, notified=True)
            updated = replace(current, recipients=tuple(recipients))
            if all(r.state.final and r.notified for r in recipients):
                return None
            return updated

        try:
            stored = await trio.to_thread.run_sync(self.queue.modify, attempted.id, merge)
        except EntryNotFound:
            return
        finally:
            self._log_outcomes(attempted, outcomes, now, expiry)
        if stored is None:
            return
        await self._send_notices(stored, original, now)

    async def _send_notices(self, entry: QueueEntry, original: bytes, now: float) -> None:
        schedule = self.settings.schedule
        failed = [
            r for r in entry.recipients if r.state is RecipientState.FAILED and not r.notified
        ]
        relayed = [
            r for r in entry.recipients if r.state is RecipientState.DELIVERED and not r.notified
        ]
        notified: set[str] = set()
        for group, action in ((failed, DsnAction.FAILED), (relayed, DsnAction.RELAYED)):
            if group and await self._notify(entry, group, action, original, now):
                notified.update(r.address for r in group)
        delay_done = False
        if (
            schedule.delay_warning > 0
            and not entry.delay_notified
            and now - entry.arrival >= schedule.delay_warning
        ):
            delayed = [
                r
                for r in entry.recipients
                if r.state is RecipientState.DEFERRED and r.wants(Notify.DELAY)
            ]
            delay_done = (
                not delayed
                or entry.sender is None
                or await self._notify(entry, delayed, DsnAction.DELAYED, original, now)
            )
        if not notified and not delay_done:
            return

        def mark(current: QueueEntry) -> QueueEntry | None:
            recipients = tuple(
                replace(r, notified=True) if r.state.final and r.address in notified else r
                for r in current.recipients
            )
            updated = replace(
                current,
                recipients=recipients,
                delay_notified=current.delay_notified or delay_done,
            )
            if all(r.state.final and r.notified for r in recipients):
                return None
            return updated

        with contextlib.suppress(EntryNotFound):
            await trio.to_thread.run_sync(self.queue.modify, entry.id, mark)

    async def _notify(
        self,
        entry: QueueEntry,
        recipients: list[Recipient],
        action: DsnAction,
        original: bytes,
        now: float,
    ) -> bool:
        """Make and hand off one DSN; False if it could not be handed off (retry later)."""
        kind = EntryKind.DSN
        to = entry.sender
        if to is None:
            if action is not DsnAction.FAILED or entry.kind is EntryKind.DOUBLE_BOUNCE:
                return True
            if self.settings.postmaster is None:
                log.warning("%s: undeliverable message from <> discarded", entry.id)
                return True
            to, kind = self.settings.postmaster, EntryKind.DOUBLE_BOUNCE
        try:
            dsn = build_dsn(
                entry,
                [DsnRecipient(r, action) for r in recipients],
                original,
                to=to,
                reporting_mta=self.settings.hostname,
                now=now,
                will_retry_until=entry.arrival + self.settings.schedule.lifetime,
                size_limit=self.settings.bounce_size_limit,
            )
        except DsnError as exc:
            log.error("%s: no %s DSN to <%s> can be made: %s", entry.id, action, to, exc)
            return True
        return await self._hand_off(entry.id, to, dsn, kind, action)

    async def _hand_off(
        self, about: str, to: str, dsn: bytes, kind: EntryKind, action: DsnAction
    ) -> bool:
        spec: RecipientSpec | None = None
        try:
            outcome = await self.local(to, dsn)
        except LocalDeliveryError as exc:
            if not exc.temporary:
                log.warning("%s: %s DSN to <%s> not deliverable: %s", about, action, to, exc)
                return True
            spec = RecipientSpec(to, local=True)  # the queue retries the local delivery
        else:
            if outcome is LocalOutcome.DELIVERED:
                log.info("%s: sender notification (%s) delivered to <%s>", about, action, to)
                return True
            if self.router.route_for(domain_of(to)) is None:
                log.warning("%s: %s DSN to <%s> dropped: no route", about, action, to)
                return True
            spec = RecipientSpec(to)
        try:
            queued = await trio.to_thread.run_sync(
                lambda: self.queue.enqueue(dsn, sender=None, recipients=[spec], kind=kind)
            )
        except (QueueError, OSError) as exc:
            log.error("%s: cannot queue the %s DSN to <%s>: %s", about, action, to, exc)
            return False
        log.info("%s: sender notification (%s) queued as %s", about, action, queued.id)
        return True

    def _log_outcomes(
        self, entry: QueueEntry, outcomes: dict[int, _Outcome], now: float, expiry: float
    ) -> None:
        attempts = entry.attempts
        delay = max(0.0, now - entry.arrival)
        for index in sorted(outcomes):
            outcome = outcomes[index]
            v = outcome.verdict
            if v.state is RecipientState.DELIVERED:
                word = "sent"
                self._delivered += 1
            elif v.state is RecipientState.FAILED:
                word = "bounced"
                self._bounced += 1
            elif now >= expiry:
                word = "expired"
                self._bounced += 1
            else:
                word = "deferred"
                self._deferred += 1
            log.info(
                "%s: to=<%s>, relay=%s, delay=%.1f, attempts=%d, dsn=%s, status=%s (%s)",
                entry.id,
                v.address,
                outcome.relay or "none",
                delay,
                attempts,
                v.status,
                word,
                v.text,
            )
