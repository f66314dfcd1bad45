"""A data-driven `SmtpBackend` for tests: users, domains and mailboxes as plain data.

It follows the receive-connector rules in miniature, so session tests can check the
whole conversation without the hub transport: recipients in `local_domains` must be in
`mailboxes` (550 5.1.1 otherwise); any other domain is relayed only for an
authenticated sender (554 5.7.1); an authenticated sender may use only the addresses
listed for it (553 5.7.1). Delivered messages are kept in `delivered`.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from protocols.smtp.address import Address
from protocols.smtp.esmtp import MailParams, RcptParams
from protocols.smtp.replies import Reply
from protocols.smtp.sasl import Credentials
from protocols.smtp.session import AuthResult, Envelope, MessageContent, SessionState

__all__ = ["DeliveredMessage", "DictBackend"]


@dataclass(frozen=True, slots=True)
class DeliveredMessage:
    envelope: Envelope
    content: bytes
    spooled_to_disk: bool


@dataclass
class DictBackend:
    """`passwords`: user -> password; `addresses`: user -> addresses they may send as."""

    passwords: dict[str, str] = field(default_factory=dict)
    addresses: dict[str, frozenset[str]] = field(default_factory=dict)
    local_domains: frozenset[str] = frozenset()
    mailboxes: frozenset[str] = frozenset()
    deliver_reply: Reply = field(default_factory=lambda: Reply(250, "2.0.0", "OK queued"))
    delivered: list[DeliveredMessage] = field(default_factory=list)
    auth_attempts: list[tuple[str, bool]] = field(default_factory=list)

    async def authenticate(self, session: SessionState, credentials: Credentials) -> AuthResult:
        expected = self.passwords.get(credentials.authcid)
        # Compare in constant time and the same way for unknown users (item 35/36).
        ok = hmac.compare_digest(
            (expected or "\x00unknown").encode("utf-8"), credentials.password.encode("utf-8")
        )
        ok = ok and expected is not None
        if credentials.authzid and credentials.authzid != credentials.authcid:
            ok = False  # acting as someone else is not for ordinary users (item 25)
        self.auth_attempts.append((credentials.authcid, ok))
        return AuthResult(credentials.authcid if ok else None)

    async def check_sender(
        self, session: SessionState, sender: Address | None, params: MailParams
    ) -> Reply | None:
        if session.auth_user is None or sender is None:
            return None
        allowed = self.addresses.get(session.auth_user, frozenset())
        if f"{sender.local_part}@{sender.domain_key}".lower() not in allowed:
            return Reply(553, "5.7.1", "Sender address not owned by the authenticated user")
        return None

    async def check_recipient(
        self, session: SessionState, recipient: Address, params: RcptParams
    ) -> Reply | None:
        key = f"{recipient.local_part}@{recipient.domain_key}".lower()
        if recipient.is_postmaster or recipient.domain_key in self.local_domains:
            if recipient.is_postmaster or key in self.mailboxes:
                return None
            return Reply(550, "5.1.1", "No such user here")
        if session.auth_user is None:
            return Reply(554, "5.7.1", "Relay access denied")
        return None

    async def deliver(self, envelope: Envelope, message: MessageContent) -> Reply:
        with message.open() as handle:
            content = handle.read()
        assert len(content) == message.size
        self.delivered.append(DeliveredMessage(envelope, content, message.path is not None))
        return self.deliver_reply
