"""The SMTP policy over the hub transport: the one place hub verdicts become SMTP replies.

Multi-recipient replies: SMTP has one reply for DATA (LMTP's per-recipient replies are
not available), so the rule is
- every copy durable, in a local mailbox or the outbound queue: `250`. When some copies
  land and others fail (a full mailbox, a disk error, an address removed since RCPT), the
  hub hands the failed ones to the queue, which retries them and bounces with a DSN when
  they cannot be delivered: every copy is then accounted for and the reply is `250`;
- nothing landed: the worst class wins (`451` for a temporary failure, `452 4.2.2` when
  only mailboxes were full, `554` when every copy failed for good), and the client keeps
  the message;
- copies landed, but others could not be queued either: `451`, and the client sends
  again (a duplicate copy is better than a lost one, RFC 5321 6.1).
"""

from __future__ import annotations

import email.utils
import functools
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from protocols.auth import LoginOutcome, PasswordChecker
from protocols.smtp.address import Address
from protocols.smtp.esmtp import MailParams, RcptParams
from protocols.smtp.replies import Reply
from protocols.smtp.sasl import Credentials
from protocols.smtp.session import (
    AuthResult,
    ConnectorKind,
    Envelope,
    EnvelopeRecipient,
    MessageContent,
    SessionState,
)
from transport import headers
from transport.agent import (
    AgentClient,
    AgentRecipient,
    AgentUnavailable,
    DeliveryRequest,
    route_and_deliver,
)
from transport.hub import (
    MAX_RECEIVED_FIELDS,
    DeliveryReport,
    Hub,
    MessageInfo,
    Route,
    Verdict,
)

log = logging.getLogger("mailhost.smtp")

# Verdicts at RCPT time and their replies (RFC 3463 enhanced codes).
RCPT_REPLIES: dict[Verdict, tuple[int, str, str]] = {
    Verdict.UNKNOWN_USER: (550, "5.1.1", "Recipient address rejected: no such user here"),
    Verdict.RELAY_DENIED: (554, "5.7.1", "Relay access denied"),
    Verdict.NO_ROUTE: (550, "5.4.4", "Unable to route: no send connector covers this domain"),
    Verdict.OVER_QUOTA: (452, "4.2.2", "Mailbox full"),
}


DELIVERY_THREADS = 32
# What of a HELO name goes into the Received comment: letters and digits (any script),
# and . - _ : [ ]; anything else becomes "?".
_HELO_UNSAFE = re.compile(r"[^\w.\-:\[\]]")


@dataclass(frozen=True, slots=True)
class BackendSettings:
    hostname: str


class HubBackend:
    """`SmtpBackend` for every receive connector, bound to one hub and one authenticator."""

    def __init__(self, hub: Hub, checker: PasswordChecker, settings: BackendSettings) -> None:
        self.hub = hub
        self.checker = checker
        self.settings = settings
        # Deliveries doing disk work at once; commits into one folder are grouped, so more
        # overlap means fewer fsyncs per message.
        self._limiter = trio.CapacityLimiter(DELIVERY_THREADS)
        # Where deliveries run: the delivery agent process when the service has one
        # (smtp.delivery_agent), else worker threads of this process.
        self.agent: AgentClient | None = None

    async def authenticate(self, session: SessionState, credentials: Credentials) -> AuthResult:
        if credentials.authzid and credentials.authzid.lower() != credentials.authcid.lower():
            # Acting as someone else needs an administrator role we do not have (item 25).
            return AuthResult(None, Reply(535, "5.7.8", "Authorization identity refused"))
        login = await self.checker.authenticate(
            credentials.authcid, credentials.password, peer=session.peer[0], protocol="smtp"
        )
        if login.outcome is LoginOutcome.THROTTLED:
            return AuthResult(
                None, Reply(454, "4.7.0", "Too many failed logins from your address; try later")
            )
        if not login.ok or login.account is None:
            return AuthResult(None)
        return AuthResult(login.account.address)

    async def check_sender(
        self, session: SessionState, sender: Address | None, params: MailParams
    ) -> Reply | None:
        if session.auth_user is None:
            return None
        address = None if sender is None else _address_key(sender)
        allowed = await trio.to_thread.run_sync(self.hub.sender_allowed, session.auth_user, address)
        if not allowed:
            shown = "<>" if sender is None else sender.path()
            log.info(
                "refused sender %s for authenticated user %s from %s",
                shown,
                session.auth_user,
                session.peer[0],
            )
            return Reply(553, "5.7.1", f"Sender address {shown} is not owned by the logged-in user")
        return None

    async def check_recipient(
        self, session: SessionState, recipient: Address, params: RcptParams
    ) -> Reply | None:
        size = session.mail_params.size if session.mail_params else None
        if size is None:
            # A directory lookup (SQLite, WAL: readers never wait) costs less than a thread
            # hand-off; only the quota check against a declared size reads the store.
            route = self._route(session, recipient)
        else:
            route = await trio.to_thread.run_sync(self._route, session, recipient)
        if route.verdict is Verdict.REMOTE and not self.hub.queueable(str(recipient)):
            return Reply(553, "5.1.3", "Recipient address cannot be relayed")
        if route.accepted:
            return None
        code, enhanced, text = RCPT_REPLIES[route.verdict]
        log.debug(  # the session logs the refusal with its reply; this adds the detail
            "refused recipient %s from %s: %s",
            recipient.path(),
            session.peer[0],
            route.reason or route.verdict.value,
        )
        return Reply(code, enhanced, text)

    def _route(self, session: SessionState, recipient: Address) -> Route:
        size = session.mail_params.size if session.mail_params else None
        return self.hub.route(
            _address_key(recipient), authenticated=session.auth_user is not None, size=size
        )

    async def deliver(self, envelope: Envelope, message: MessageContent) -> Reply:
        message_id = secrets.token_hex(8).upper()
        if message.data is not None:
            header = headers.header_block(message.data)  # in memory: no thread hop needed
        else:
            header = await trio.to_thread.run_sync(_header_of, message)
        if headers.count_fields(header, b"received") >= MAX_RECEIVED_FIELDS:
            # RFC 5321 6.3: too many hops is a loop.
            log.info("refused id=%s from %s: mail loop", message_id, envelope.client[0])
            return Reply(554, "5.4.6", "Too many Received headers: mail loop")
        prefix = self._trace(envelope, message_id, header)
        content: bytes | Path = (
            message.data if message.data is not None else Path(str(message.path))
        )
        sender = None if envelope.sender is None else str(envelope.sender)

        params = envelope.mail_params
        info = MessageInfo(
            ret=params.ret.value if params.ret else None,
            envid=params.envid,
            auth_identity=envelope.auth_user,
            client_helo=envelope.helo or None,
            client_address=envelope.client[0],
            received_by=envelope.hostname,
            body=params.body.value if params.body else None,
            smtputf8=params.smtputf8,
        )

        request = DeliveryRequest(
            content,
            prefix,
            sender,
            [_agent_recipient(rcpt) for rcpt in envelope.recipients],
            envelope.auth_user is not None,
            message_id,
            info,
        )
        async with self._limiter:
            agent = self.agent
            if agent is None:
                report = await trio.to_thread.run_sync(route_and_deliver, self.hub, request)
            else:
                try:
                    report = await agent.deliver(request)
                except AgentUnavailable as exc:
                    log.error("delivery of id=%s failed: %s", message_id, exc)
                    return Reply(451, "4.3.0", "Temporary failure writing the message; try again")
        return self._reply(envelope, message, report)

    def _trace(self, envelope: Envelope, message_id: str, header: bytes) -> bytes:
        """Received: for this hop, and for submissions the Message-ID and Date a mail
        program left out (RFC 6409 8.2, 8.3)."""
        lines = [_received(envelope, message_id)]
        if envelope.connector is ConnectorKind.CLIENT:
            if not headers.has_field(header, b"message-id"):
                lines.append(f"Message-ID: <{secrets.token_hex(12)}@{envelope.hostname}>\r\n")
            if not headers.has_field(header, b"date"):
                lines.append(f"Date: {_rfc5322_date(envelope.received_at)}\r\n")
        return "".join(lines).encode("utf-8")

    def _reply(self, envelope: Envelope, message: MessageContent, report: DeliveryReport) -> Reply:
        sender = "<>" if envelope.sender is None else envelope.sender.path()
        tls = f"{envelope.tls.version}" if envelope.tls else "none"
        results = [(a, "delivered") for a in report.delivered]
        results += [(a, "queued") for a in report.queued]
        results += [(a, f"deferred ({r})") for a, r in report.temporary.items()]
        results += [(a, f"deferred, mailbox full ({r})") for a, r in report.quota.items()]
        results += [(a, f"failed ({r})") for a, r in report.permanent.items()]
        # One line per message, every recipient with its result in it.
        log.info(
            "message id=%s session=%s client=%s sender=%s size=%d tls=%s auth=%s proto=%s %s",
            report.message_id,
            envelope.session_id,
            envelope.client[0],
            sender,
            message.size,
            tls,
            envelope.auth_user or "-",
            envelope.protocol,
            " ".join(f"rcpt=<{address}> result={result}" for address, result in results),
        )
        if not report.failed:
            # Every copy is in a mailbox or in the queue (failed local copies included,
            # which the queue retries or bounces with a DSN).
            return Reply(250, "2.0.0", f"Ok: queued as {report.message_id}")
        if report.landed:
            # Copies landed and the rest could not even be queued: the client retries the
            # whole message (a duplicate is better than a loss, RFC 5321 6.1).
            return Reply(451, "4.3.0", "Some recipients could not take the message; try again")
        if report.temporary:
            return Reply(451, "4.3.0", "Temporary failure writing the message; try again later")
        if report.quota:
            return Reply(452, "4.2.2", "Mailbox full")
        return Reply(554, "5.3.0", "Message refused by the mail store")


def _agent_recipient(rcpt: EnvelopeRecipient) -> AgentRecipient:
    notify = tuple(sorted(n.value for n in rcpt.params.notify)) if rcpt.params.notify else ()
    orcpt = rcpt.params.orcpt
    # The queue gets the address as it goes on the wire (a quoted local part kept).
    return AgentRecipient(
        _address_key(rcpt.address),
        str(rcpt.address),
        notify,
        f"{orcpt.addr_type};{orcpt.address}" if orcpt else None,
    )


def _address_key(address: Address) -> str:
    """local@domain with the domain folded to lower case (the local part kept)."""
    return f"{address.local_part}@{address.domain_key}"


def _header_of(message: MessageContent) -> bytes:
    if message.data is not None:
        return headers.header_block(message.data)
    return headers.read_header_block(Path(str(message.path)))


@functools.lru_cache(maxsize=4)
def _date_at(second: int) -> str:
    return email.utils.formatdate(second)


def _rfc5322_date(when: float | None) -> str:
    """RFC 5322 date-time to the second (formatted once per second: a busy server
    stamps many messages in each)."""
    return _date_at(int(time.time() if when is None else when))


def _received(envelope: Envelope, message_id: str) -> str:
    """RFC 5321 4.4 trace field, Postfix's layout; the HELO name is sanitised for the
    comment and nothing the client sent goes in unquoted."""
    helo = _HELO_UNSAFE.sub("?", envelope.helo)[:255]
    parts = [f"Received: from {helo or 'unknown'} ([{envelope.client[0]}])"]
    if envelope.tls is not None:
        bits = f" ({envelope.tls.bits} bits)" if envelope.tls.bits else ""
        parts.append(f"\t(using {envelope.tls.version} with cipher {envelope.tls.cipher}{bits})")
    if envelope.auth_user:
        parts.append(f"\t(authenticated sender: {envelope.auth_user})")
    by = f"\tby {envelope.hostname} (mailhost) with {envelope.protocol} id {message_id}"
    if len(envelope.recipients) == 1:
        parts.append(by)
        parts.append(f"\tfor {envelope.recipients[0].address.path()};")
    else:
        parts.append(by + ";")
    date = _rfc5322_date(envelope.received_at or time.time())
    parts[-1] += f" {date}"
    return "\r\n".join(parts) + "\r\n"
