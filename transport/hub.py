"""The hub transport: where every recipient is decided and every local copy is made.

At RCPT time `route` classifies a recipient by accepted domain (Exchange's three
kinds) and resolves it through the directory (addresses, aliases, policies):
- authoritative domain: a mailbox here, or refused at once (no backscatter);
- internal relay: a mailbox here if there is one, otherwise relayed (another server
  hosts the rest of the domain);
- external relay: always relayed;
- any other domain: relayed for authenticated senders only; for anyone else it is the
  open-relay question, and the answer is no.
`deliver` writes each message once and links it into every local recipient's Inbox
before it returns (the durability rule: the caller acknowledges only afterwards), and
hands remote recipients to the outbound queue.
The hub decides in protocol-neutral terms; SMTP, ActiveSync SendMail and the queue
map its verdicts to their own replies.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from store.errors import QuotaExceeded, TemporaryFailure
from store.model import DeliveryResult
from store.store import Store
from transport.envelope import InvalidEnvelope, RecipientSpec

log = logging.getLogger("mailhost.hub")

# Postfix hopcount_limit; RFC 5321 6.3 asks for at least 100... as a minimum to
# *tolerate*; 50 is the Postfix default and catches loops sooner.
MAX_RECEIVED_FIELDS = 50


class DomainKind(StrEnum):
    AUTHORITATIVE = "authoritative"
    INTERNAL_RELAY = "internal-relay"
    EXTERNAL_RELAY = "external-relay"


@dataclass(frozen=True, slots=True)
class LocalRecipient:
    mailbox_id: str
    owner: str  # the owner's primary address


class HubDirectory(Protocol):
    """What the hub reads from the directory (the application adapts its own)."""

    def domain_kind(self, domain: str) -> DomainKind | None: ...

    def local_recipient(self, address: str) -> LocalRecipient | None: ...

    def addresses_of(self, owner: str) -> tuple[str, ...]:
        """Every address of the user whose primary address is `owner`."""
        ...


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What the queue keeps with a message besides its recipients (DSN parameters, RFC
    3461; who submitted it; where it came from)."""

    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None
    auth_identity: str | None = None
    client_helo: str | None = None
    client_address: str | None = None
    received_by: str | None = None
    body: str | None = None  # "7BIT", "8BITMIME", "BINARYMIME"
    smtputf8: bool = False


class RemoteQueue(Protocol):
    def can_route(self, domain: str) -> bool:
        """Whether a send connector covers `domain`."""
        ...

    def enqueue(
        self,
        message: bytes | Path,
        *,
        sender: str | None,
        recipients: Sequence[RoutedRecipient],
        info: MessageInfo,
        local: bool = False,
    ) -> str:
        """Durably queue the message for `recipients` (to deliver into local mailboxes
        when `local`); returns the queue id. OSError: try later; ValueError: refused."""
        ...


class LocalDeliveryHook(Protocol):
    """Called by `deliver` once a message is in local mailboxes (out-of-office replies).
    Blocking, in the delivering thread; it must not raise and should be quick."""

    def after_local_delivery(
        self, message: bytes | Path, *, sender: str | None, recipients: Sequence[RoutedRecipient]
    ) -> None: ...


class Verdict(StrEnum):
    LOCAL = "local"
    REMOTE = "remote"
    UNKNOWN_USER = "unknown-user"  # authoritative domain, no such address
    RELAY_DENIED = "relay-denied"  # not ours, and the sender is anonymous
    NO_ROUTE = "no-route"  # remote, but no send connector covers it
    OVER_QUOTA = "over-quota"  # the declared size does not fit


@dataclass(frozen=True, slots=True)
class Route:
    verdict: Verdict
    local: LocalRecipient | None = None
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict in (Verdict.LOCAL, Verdict.REMOTE)


@dataclass(frozen=True, slots=True)
class RoutedRecipient:
    address: str  # as the sender wrote it (local part kept; domain lower-cased)
    route: Route
    notify: tuple[str, ...] = ()  # RFC 3461 NOTIFY values
    orcpt: str | None = None  # RFC 3461 ORCPT, "type;address"


@dataclass(slots=True)
class DeliveryReport:
    """What happened to each recipient of one message."""

    message_id: str
    delivered: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)
    temporary: dict[str, str] = field(default_factory=dict)  # address -> reason
    quota: dict[str, str] = field(default_factory=dict)
    permanent: dict[str, str] = field(default_factory=dict)
    # (mailbox id, folder id) of each local copy stored
    folders: list[tuple[str, str]] = field(default_factory=list)

    @property
    def landed(self) -> bool:
        return bool(self.delivered or self.queued)

    @property
    def failed(self) -> bool:
        return bool(self.temporary or self.quota or self.permanent)


def new_message_id() -> str:
    return secrets.token_hex(8).upper()


class Hub:
    def __init__(
        self,
        directory: HubDirectory,
        store: Store,
        *,
        spool_dir: Path,
        queue: RemoteQueue | None = None,
        after_local: LocalDeliveryHook | None = None,
        postmaster: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.directory = directory
        # The address that receives mail for "postmaster" where no mailbox or alias of that
        # name exists (RFC 5321 4.5.1); asked each time, so a reloaded config applies.
        self.postmaster = postmaster
        self.store = store
        self.spool_dir = spool_dir
        self.queue = queue
        # Set after construction when the hook needs the hub itself (auto-replies).
        self.after_local = after_local
        spool_dir.mkdir(parents=True, exist_ok=True)

    # --- at RCPT time ---------------------------------------------------------------------

    def route(self, address: str, *, authenticated: bool, size: int | None = None) -> Route:
        """Decide what happens to mail for `address` (local@domain, domain lower-cased)."""
        local_part, _, domain = address.rpartition("@")
        # RFC 5321 4.5.1: "postmaster" (any case) MUST be accepted, with any of our
        # domains and bare ("RCPT TO:<Postmaster>", RFC 5321 4.1.1.3).
        postmaster = local_part.lower() == "postmaster"
        if postmaster and not domain:
            return self._to_postmaster(size)
        if not local_part or not domain or domain.startswith("["):
            # An address literal is never one of our domains (RFC 2505 2.6).
            return self._foreign(domain, authenticated)
        kind = self.directory.domain_kind(domain)
        if kind is None:
            return self._foreign(domain, authenticated)
        if kind is not DomainKind.EXTERNAL_RELAY:
            mailbox = self.directory.local_recipient(address)
            if mailbox is not None:
                return self._local(mailbox, size)
            if kind is DomainKind.AUTHORITATIVE:
                if postmaster:
                    return self._to_postmaster(size)
                return Route(Verdict.UNKNOWN_USER, reason=f"no mailbox for {address}")
        return self._relay(domain)

    def _to_postmaster(self, size: int | None) -> Route:
        """Postmaster mail without a mailbox of that name: to the configured address."""
        configured = self.postmaster()
        if configured:
            local, _, domain = configured.rpartition("@")
            mailbox = self.directory.local_recipient(f"{local}@{domain.lower()}")
            if mailbox is not None:
                return self._local(mailbox, size)
        return Route(Verdict.UNKNOWN_USER, reason="no postmaster mailbox (set queue.postmaster)")

    def _local(self, mailbox: LocalRecipient, size: int | None) -> Route:
        if size is not None:
            # RFC 1870: with SIZE declared, a message that cannot fit is refused at RCPT.
            quota = self.store.open_mailbox(mailbox.mailbox_id).quota()
            if quota.limit is not None and quota.usage + size > quota.limit:
                return Route(Verdict.OVER_QUOTA, mailbox, f"mailbox of {mailbox.owner} is full")
        return Route(Verdict.LOCAL, mailbox)

    def _foreign(self, domain: str, authenticated: bool) -> Route:
        if not authenticated:
            return Route(Verdict.RELAY_DENIED, reason=f"relay to {domain or 'that address'} denied")
        return self._relay(domain)

    def _relay(self, domain: str) -> Route:
        if self.queue is None or not self.queue.can_route(domain):
            return Route(Verdict.NO_ROUTE, reason=f"no send connector covers {domain}")
        return Route(Verdict.REMOTE)

    @staticmethod
    def queueable(address: str) -> bool:
        """Whether the outbound queue can hold `address` (as sent, quoting kept); a remote
        recipient it could not is refused at RCPT rather than after DATA."""
        try:
            RecipientSpec(address)
        except InvalidEnvelope:
            return False
        return True

    def sender_allowed(self, owner: str, sender: str | None) -> bool:
        """An authenticated user may send only as one of their own addresses."""
        if sender is None:
            return False
        return sender.lower() in self.directory.addresses_of(owner)

    # --- after DATA -----------------------------------------------------------------------

    def deliver(
        self,
        message: bytes | Path,
        *,
        prefix: bytes,
        sender: str | None,
        recipients: Sequence[RoutedRecipient],
        message_id: str | None = None,
        info: MessageInfo | None = None,
    ) -> DeliveryReport:
        """Deliver `prefix` + `message` (trace fields + the message as received) to every
        recipient. Blocking: run it in a worker thread. Returns once each local copy is
        fsynced in its mailbox and each remote one is durably queued.

        Every recipient ends in the report: delivered, queued, or failed (temporary,
        quota, permanent). Once any copy has landed the message will be acknowledged, so
        every copy that failed is handed to the queue too: local ones as local retries
        (retried, and bounced with a DSN if they still fail when the queue gives up;
        unknown users bounce at once), remote ones as ordinary queue entries. Only what
        even the queue cannot take stays failed, and the caller must then not
        acknowledge (a duplicate is better than a loss)."""
        info = info or MessageInfo()
        report = DeliveryReport(message_id or new_message_id())
        local = [r for r in recipients if r.route.verdict is Verdict.LOCAL and r.route.local]
        remote = [r for r in recipients if r.route.verdict is Verdict.REMOTE]
        for r in recipients:
            # A route can change between RCPT and the end of DATA (an address removed, a
            # connector deleted): such a recipient is a failure, never a silent drop.
            if r in local or r in remote:
                continue
            reason = r.route.reason or r.route.verdict.value
            if r.route.verdict is Verdict.OVER_QUOTA:
                report.quota[r.address] = reason
            elif r.route.verdict is Verdict.NO_ROUTE:
                report.temporary[r.address] = reason
            else:
                report.permanent[r.address] = reason
        # RFC 5321 4.4: the delivering MTA adds Return-Path with the envelope sender.
        return_path = b"Return-Path: <" + (sender or "").encode("utf-8") + b">\r\n"
        if remote:
            self._queue(report, prefix, message, sender, remote, info, local=False)
        if local:
            self._deliver_local(report, return_path + prefix, message, local)
            if report.delivered and self.after_local is not None:
                landed = [r for r in local if r.address in report.delivered]
                try:
                    self.after_local.after_local_delivery(message, sender=sender, recipients=landed)
                except Exception:  # a hook never costs a delivery
                    log.exception("after-delivery hook failed for id=%s", report.message_id)
        if report.landed and report.failed:
            failed = {**report.temporary, **report.quota, **report.permanent}
            # A remote copy the queue refused is not offered to it again.
            retry = [
                r
                for r in recipients
                if r.address in failed and r.route.verdict is not Verdict.REMOTE
            ]
            retry_local = [r for r in retry if r.route.verdict is not Verdict.NO_ROUTE]
            retry_remote = [r for r in retry if r.route.verdict is Verdict.NO_ROUTE]
            if retry_local:
                self._queue(
                    report, return_path + prefix, message, sender, retry_local, info, local=True
                )
            if retry_remote:
                self._queue(report, prefix, message, sender, retry_remote, info, local=False)
        return report

    def _deliver_local(
        self,
        report: DeliveryReport,
        prefix: bytes,
        message: bytes | Path,
        recipients: Sequence[RoutedRecipient],
    ) -> None:
        by_mailbox: dict[str, list[str]] = {}
        for recipient in recipients:
            assert recipient.route.local is not None
            by_mailbox.setdefault(recipient.route.local.mailbox_id, []).append(recipient.address)
        staged: Path | None = None
        try:
            if isinstance(message, bytes):
                content: bytes | Path = prefix + message
            else:
                staged = self._stage(prefix, message)
                content = staged
            results = self.store.deliver(content, list(by_mailbox))
        except OSError as exc:
            for addresses in by_mailbox.values():
                for address in addresses:
                    report.temporary[address] = f"cannot stage the message: {exc.strerror}"
            return
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        for result in results:
            self._record(report, result, by_mailbox[result.mailbox_id])
            if result.ok and result.folder_id is not None:
                report.folders.append((result.mailbox_id, result.folder_id))

    def _stage(self, prefix: bytes, message: Path) -> Path:
        """prefix + the spooled file, as one new file next to the store (one copy)."""
        path = self.spool_dir / f"deliver-{new_message_id()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out, message.open("rb") as src:
                out.write(prefix)
                shutil.copyfileobj(src, out, 1024 * 1024)
        except BaseException:
            path.unlink(missing_ok=True)  # a half-written copy (a full disk) is not kept
            raise
        finally:
            os.close(fd)
        return path

    def sweep_spool(self) -> int:
        """Remove what a crash left in the spool (messages being received or staged);
        called at start-up, before any session can be writing there."""
        removed = 0
        for entry in os.scandir(self.spool_dir):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        return removed

    @staticmethod
    def _record(report: DeliveryReport, result: DeliveryResult, addresses: list[str]) -> None:
        for address in addresses:
            if result.ok:
                report.delivered.append(address)
            elif isinstance(result.error, QuotaExceeded):
                report.quota[address] = str(result.error)
            elif isinstance(result.error, TemporaryFailure):
                report.temporary[address] = str(result.error)
            else:
                report.permanent[address] = str(result.error)

    def _queue(
        self,
        report: DeliveryReport,
        prefix: bytes,
        message: bytes | Path,
        sender: str | None,
        recipients: Sequence[RoutedRecipient],
        info: MessageInfo,
        *,
        local: bool,
    ) -> None:
        if self.queue is None:
            for recipient in recipients:
                report.temporary[recipient.address] = "no outbound queue"
            return
        staged: Path | None = None
        try:
            if isinstance(message, bytes):
                content: bytes | Path = prefix + message
            else:
                staged = self._stage(prefix, message)
                content = staged
            queue_id = self.queue.enqueue(
                content, sender=sender, recipients=recipients, info=info, local=local
            )
        except OSError as exc:
            for recipient in recipients:
                report.temporary[recipient.address] = f"cannot queue: {exc.strerror or exc}"
            return
        except ValueError as exc:
            for recipient in recipients:
                report.permanent.setdefault(recipient.address, str(exc))
            return
        finally:
            if staged is not None:
                staged.unlink(missing_ok=True)
        for recipient in recipients:
            report.temporary.pop(recipient.address, None)
            report.quota.pop(recipient.address, None)
            report.permanent.pop(recipient.address, None)
        report.queued.extend(r.address for r in recipients)
        what = "local retry" if local else "remote"
        log.info(
            "queued id=%s as %s for %d %s recipient(s)",
            report.message_id,
            queue_id,
            len(recipients),
            what,
        )
