"""Delivery status notifications (RFC 3464) for the queue's senders.

A DSN is `multipart/report; report-type=delivery-status` (RFC 6522) with three parts: a
text for people, `message/delivery-status` for programs, and the original message's
headers (RET=HDRS, and our default when RET was not given) or the whole message
(RET=FULL), cut at `bounce_size_limit` (Postfix's 50000) so a bounce cannot be used to
amplify traffic. It goes out with the null reverse-path, `From: MAILER-DAEMON@host` and
`Auto-Submitted: auto-replied` (RFC 3834 5), so no well-behaved system answers it.

Every header is made through `email.policy.default`, and each value we put in is
checked for CR and LF first (reliability item 49, CVE-2024-6923): addresses and remote
replies are data from strangers.
"""

from __future__ import annotations

import email
import email.policy
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage, Message, MIMEPart
from email.utils import format_datetime, make_msgid

from .envelope import DsnReturn, QueueEntry, Recipient

__all__ = [
    "BOUNCE_SIZE_LIMIT",
    "DsnAction",
    "DsnError",
    "DsnRecipient",
    "build_dsn",
    "split_headers",
]

# Postfix bounce_size_limit = 50000: at most this much of the original comes back.
BOUNCE_SIZE_LIMIT = 50_000

_POLICY = email.policy.default.clone(linesep="\r\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}>")  # printable, no '<' '>' inside


class DsnError(ValueError):
    """A DSN could not be made from this input (a header value that would inject)."""


class DsnAction(enum.StrEnum):
    """RFC 3464 2.3.3 Action values."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    recipient: Recipient
    action: DsnAction
    status: str | None = None  # overrides the diagnostic's status (4.4.7 on expiry)


def _safe(value: str, what: str) -> str:
    """A header value we generate: never a CR, LF or other control (item 49)."""
    if _CONTROL.search(value):
        raise DsnError(f"{what} contains control characters")
    return value


def _clean(text: str, limit: int = 900) -> str:
    """Text from a remote server, made one harmless line. "=?" is broken up so that no
    RFC 2047 encoded-word survives: the email package decodes those when it refolds a
    long header, which is how CVE-2024-6923 smuggles a CR LF into the output."""
    return _CONTROL.sub(" ", text)[:limit].strip().replace("=?", "= ?")


def _set(container: Message, name: str, value: str) -> None:
    """Set a header and check its value as the email package will understand it: after
    RFC 2047 decoding there must still be no CR or LF (item 49)."""
    container[name] = value
    decoded = str(container[name])
    if "\r" in decoded or "\n" in decoded:
        raise DsnError(f"{name} would contain a line break")


def _date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


def split_headers(message: bytes) -> tuple[bytes, bytes]:
    """The header block (with its line ends) and the body of a raw message."""
    match = re.search(rb"\r?\n\r?\n", message)
    if match is None:
        return message, b""
    return message[: match.start()] + b"\r\n", message[match.end() :]


def _truncate(data: bytes, limit: int) -> bytes:
    """At most `limit` bytes, cut after a line end when there is one."""
    if len(data) <= limit:
        return data
    cut = data.rfind(b"\n", 0, limit)
    return data[: cut + 1] if cut > 0 else data[:limit]


def _address_type(address: str) -> str:
    # RFC 6533 3: a non-ASCII address is reported with the utf-8 address type.
    # todo(rfc 6533 3): such DSNs should be message/global-delivery-status.
    return "rfc822" if address.isascii() else "utf-8"


def _field_block(fields: Sequence[tuple[str, str]]) -> Message:
    block = Message(policy=_POLICY)
    for name, value in fields:
        _set(block, name, _safe(value, name))
    return block


def _original_message_id(headers: bytes) -> str | None:
    parsed = email.message_from_bytes(headers + b"\r\n", policy=email.policy.compat32)
    value = parsed.get("Message-ID")
    if not isinstance(value, str):
        return None
    match = _MESSAGE_ID.search(value)
    return match.group(0) if match else None


_SUBJECTS = {
    DsnAction.FAILED: "Undelivered Mail Returned to Sender",
    DsnAction.DELAYED: "Delayed Mail (still being retried)",
    DsnAction.DELIVERED: "Successful Mail Delivery Report",
    DsnAction.RELAYED: "Successful Mail Delivery Report",
    DsnAction.EXPANDED: "Successful Mail Delivery Report",
}


def _human_text(
    entry: QueueEntry,
    recipients: Sequence[DsnRecipient],
    reporting_mta: str,
    will_retry_until: float | None,
) -> str:
    action = recipients[0].action
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if action is DsnAction.FAILED:
        lines += [
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. The reasons are below.",
        ]
    elif action is DsnAction.DELAYED:
        until = _date(will_retry_until) if will_retry_until is not None else "later"
        lines += [
            "Your message could not be delivered yet to the recipients below.",
            f"The mail system will keep trying until {until}.",
            "You do not need to send it again.",
        ]
    else:
        lines += [
            "Your message was delivered to the destination(s) below. The receiving",
            "server does not send delivery notifications itself, so you will not",
            "receive any further notice from there.",
        ]
    lines.append("")
    for item in recipients:
        r = item.recipient
        diagnostic = r.diagnostic
        reason = _clean(diagnostic.text) if diagnostic is not None else item.action.value
        remote = f" (host {diagnostic.remote_mta})" if diagnostic and diagnostic.remote_mta else ""
        lines.append(f"<{r.address}>{remote}: {reason}")
    lines += ["", f"Queue id: {entry.id}", ""]
    return "\n".join(lines)


def build_dsn(
    entry: QueueEntry,
    recipients: Sequence[DsnRecipient],
    original: bytes,
    *,
    to: str,
    reporting_mta: str,
    now: float,
    will_retry_until: float | None = None,
    size_limit: int = BOUNCE_SIZE_LIMIT,
) -> bytes:
    """The DSN about `recipients` of `entry` (all with the same action), addressed to `to`.

    `reporting_mta` is our host name (RFC 3464 2.2.2). Raises DsnError only if a value
    would inject a header, which the queue's own checks already prevent.
    """
    if not recipients:
        raise DsnError("a DSN needs at least one recipient")
    _safe(to, "To")
    _safe(reporting_mta, "Reporting-MTA")
    action = recipients[0].action
    headers, _body = split_headers(original)

    msg = EmailMessage(policy=_POLICY)
    try:
        _set(msg, "From", str(Address("Mail Delivery System", "MAILER-DAEMON", reporting_mta)))
        _set(msg, "To", to)
    except (ValueError, IndexError) as exc:  # the email package's own refusals
        raise DsnError(f"cannot address the DSN: {exc}") from None
    _set(msg, "Subject", _SUBJECTS[action])
    _set(msg, "Date", _date(now))
    _set(msg, "Message-ID", make_msgid(domain=reporting_mta))
    _set(msg, "Auto-Submitted", "auto-replied")  # RFC 3834 5
    original_id = _original_message_id(headers)
    if original_id is not None:
        _set(msg, "In-Reply-To", original_id)
        _set(msg, "References", original_id)
    _set(msg, "MIME-Version", "1.0")

    text = MIMEPart(policy=_POLICY)
    text.set_content(_human_text(entry, recipients, reporting_mta, will_retry_until))

    # RFC 3464 2.2: the per-message fields.
    per_message = [("Reporting-MTA", f"dns; {reporting_mta}")]
    if entry.id:
        per_message.append(("X-Mailhost-Queue-ID", entry.id))
    if entry.envid is not None:
        per_message.append(("Original-Envelope-Id", entry.envid))  # RFC 3464 2.2.1
    if entry.hop is not None and entry.hop.client_helo:
        per_message.append(("Received-From-MTA", f"dns; {entry.hop.client_helo}"))
    per_message.append(("Arrival-Date", _date(entry.arrival)))
    blocks: list[Message | str] = [_field_block(per_message)]
    for item in recipients:
        r = item.recipient
        diagnostic = r.diagnostic
        fields = []
        if r.orcpt is not None:  # RFC 3464 2.3.1
            fields.append(("Original-Recipient", f"{r.orcpt.addr_type};{r.orcpt.address}"))
        fields.append(("Final-Recipient", f"{_address_type(r.address)}; {r.address}"))
        fields.append(("Action", item.action.value))
        status = item.status or (diagnostic.status if diagnostic else None)
        if status is None:
            status = {DsnAction.FAILED: "5.0.0", DsnAction.DELAYED: "4.0.0"}.get(
                item.action, "2.0.0"
            )
        fields.append(("Status", status))
        if diagnostic is not None and diagnostic.remote_mta:
            fields.append(("Remote-MTA", f"dns; {diagnostic.remote_mta}"))
        if diagnostic is not None:
            if diagnostic.reply_code is not None:
                fields.append(("Diagnostic-Code", f"smtp; {_clean(diagnostic.text)}"))
            else:
                fields.append(("Diagnostic-Code", f"X-mailhost; {_clean(diagnostic.text)}"))
        if r.last_attempt is not None:
            fields.append(("Last-Attempt-Date", _date(r.last_attempt)))
        if item.action is DsnAction.DELAYED and will_retry_until is not None:
            fields.append(("Will-Retry-Until", _date(will_retry_until)))
        blocks.append(_field_block(fields))
    status_part = MIMEPart(policy=_POLICY)
    status_part["Content-Type"] = "message/delivery-status"
    status_part.set_payload(blocks)

    returned = _returned_part(original, headers, entry.ret, size_limit)

    msg["Content-Type"] = "multipart/report; report-type=delivery-status"  # RFC 6522
    msg.preamble = "This is a MIME-encapsulated delivery status notification.\n"
    msg.set_payload([text, status_part, returned])
    return msg.as_bytes(policy=_POLICY)


def _returned_part(original: bytes, headers: bytes, ret: DsnReturn | None, limit: int) -> MIMEPart:
    if ret is DsnReturn.FULL:
        try:
            body = _truncate(original, limit)
            part = MIMEPart(policy=_POLICY)
            parsed = email.message_from_bytes(body, policy=email.policy.default)
            cte = "7bit" if body.isascii() else "8bit"
            part.set_content(parsed, cte=cte)
            part.as_bytes(policy=_POLICY)  # fail here, not in the caller, on a strange message
            return part
        except (ValueError, TypeError, LookupError, UnicodeError):
            pass  # fall back to the headers
    part = MIMEPart(policy=_POLICY)
    data = _truncate(headers, limit)
    part.set_content(
        data, maintype="text", subtype="rfc822-headers", cte="7bit" if data.isascii() else "8bit"
    )
    return part
