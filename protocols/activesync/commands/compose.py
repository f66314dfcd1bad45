"""Messages the server writes for a device: SmartReply/SmartForward bodies completed with
the original (MS-ASCMD 2.2.1.18/2.2.1.19 without ReplaceMime), and 16.0 drafts built from
Sync ApplicationData (MS-ASEMAIL 3.1.5.3 drafts).

Phones send only the text they typed; without ReplaceMime the server appends the
original: quoted below the reply, or under a "Forwarded message" block with the
original's attachments carried over on forward. Parsing and serialising go through the
stdlib `email` package (policy.default to read, policy.SMTP to write CRLF).
"""

from __future__ import annotations

import email.policy
import email.utils
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from typing import Final

# Bytes of original text appended to a reply or forward (a 10 MB body is not repeated).
MAX_QUOTED_CHARS: Final = 1024 * 1024
_POLICY: Final = email.policy.default
_SMTP: Final = email.policy.SMTP


class ComposeError(ValueError):
    """The device's MIME cannot be read or completed (status 107 InvalidMIME)."""


def parse(data: bytes) -> EmailMessage:
    try:
        message = BytesParser(policy=_POLICY).parsebytes(data)
    except (ValueError, TypeError, LookupError) as exc:
        raise ComposeError(f"unreadable MIME: {exc}") from None
    if not isinstance(message, EmailMessage):  # policy.default always makes EmailMessage
        raise ComposeError("unreadable MIME")
    return message


def _text_of(message: EmailMessage, subtype: str) -> str | None:
    try:
        part = message.get_body(preferencelist=(subtype,))
    except (KeyError, LookupError):
        return None
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError, UnicodeError, AssertionError):
        return None
    return content[:MAX_QUOTED_CHARS] if isinstance(content, str) else None


def _header(message: EmailMessage, name: str) -> str:
    try:
        value = message.get(name)
    except (ValueError, TypeError, IndexError):
        return ""
    return str(value) if value is not None else ""


def _attribution(original: EmailMessage) -> str:
    date = _header(original, "date") or "an earlier date"
    sender = _header(original, "from") or "someone"
    return f"On {date}, {sender} wrote:"


def _forward_block(original: EmailMessage) -> list[tuple[str, str]]:
    fields = [
        ("From", "from"),
        ("Date", "date"),
        ("Subject", "subject"),
        ("To", "to"),
        ("Cc", "cc"),
    ]
    return [(label, _header(original, name)) for label, name in fields if _header(original, name)]


def _plain_addition(original: EmailMessage, *, forward: bool) -> str:
    text = _text_of(original, "plain")
    if text is None:
        html_text = _text_of(original, "html")
        text = _strip_html(html_text) if html_text is not None else ""
    if forward:
        lines = ["", "", "---------- Forwarded message ----------"]
        lines += [f"{label}: {value}" for label, value in _forward_block(original)]
        return "\n".join(lines) + "\n\n" + text
    quoted = "\n".join("> " + line if line else ">" for line in text.splitlines())
    return "\n\n" + _attribution(original) + "\n" + quoted + "\n"


def _html_addition(original: EmailMessage, *, forward: bool) -> str:
    original_html = _text_of(original, "html")
    if original_html is None:
        plain = _text_of(original, "plain") or ""
        original_html = "<pre>" + html.escape(plain) + "</pre>"
    else:
        original_html = _inside_body(original_html)
    if forward:
        block = "<br>".join(
            f"<b>{html.escape(label)}:</b> {html.escape(value)}"
            for label, value in _forward_block(original)
        )
        return (
            "<br><br><div>---------- Forwarded message ----------<br>"
            f"{block}<br><br>{original_html}</div>"
        )
    return (
        f"<br><br><div>{html.escape(_attribution(original))}</div>"
        f'<blockquote type="cite" style="margin:0 0 0 .8ex;border-left:1px #ccc solid;'
        f'padding-left:1ex">{original_html}</blockquote>'
    )


def _strip_html(text: str) -> str:
    from ..mail import html_to_text

    return html_to_text(text)


def _inside_body(document: str) -> str:
    lower = document.lower()
    start = lower.find("<body")
    if start >= 0:
        start = lower.find(">", start) + 1
        end = lower.rfind("</body")
        return document[start : end if end > start else len(document)]
    return document


def _append_to_html(document: str, addition: str) -> str:
    end = document.lower().rfind("</body")
    if end >= 0:
        return document[:end] + addition + document[end:]
    return document + addition


def _set_text(part: MIMEPart, text: str, subtype: str) -> None:
    part.set_content(text, subtype=subtype, charset="utf-8", cte="quoted-printable")


def complete_reply(new: bytes, original: bytes, *, forward: bool) -> bytes:
    """The device's message with the original appended to each of its text bodies (and,
    on forward, the original's attachments attached)."""
    message = parse(new)
    source = parse(original)
    plain_add = _plain_addition(source, forward=forward)
    html_add = _html_addition(source, forward=forward)
    bodies = [
        p
        for p in message.walk()
        if p.get_content_maintype() == "text"
        and p.get_content_subtype() in ("plain", "html")
        and not p.is_attachment()
    ]
    if not bodies:
        if message.is_multipart():
            message.add_attachment(plain_add.lstrip("\n"), subtype="plain", disposition="inline")
        else:
            _set_text(message, plain_add.lstrip("\n"), "plain")
    for part in bodies:
        try:
            content = part.get_content()
        except (LookupError, ValueError, UnicodeError, AssertionError):
            content = ""
        if not isinstance(content, str):
            continue
        if part.get_content_subtype() == "html":
            _set_text(part, _append_to_html(content, html_add), "html")
        else:
            _set_text(part, content + plain_add, "plain")
    if forward:
        carried = list(source.iter_attachments())
        if carried:
            if message.get_content_type() != "multipart/mixed":
                message.make_mixed()
            for attachment in carried:
                message.attach(attachment)
    try:
        return message.as_bytes(policy=_SMTP)
    except (ValueError, TypeError, LookupError) as exc:
        raise ComposeError(f"cannot write the message: {exc}") from None


# --- drafts (16.0) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewAttachment:
    client_id: str
    name: str
    content_type: str
    data: bytes
    content_id: str | None = None
    inline: bool = False


@dataclass(slots=True)
class DraftFields:
    """What a device set on a draft; None = unchanged (or, for a new draft, empty)."""

    to: str | None = None
    cc: str | None = None
    bcc: str | None = None
    subject: str | None = None
    importance: int | None = None
    body_type: int | None = None  # 1 plain, 2 HTML
    body: str | None = None
    add: list[NewAttachment] = field(default_factory=list)
    delete: list[int] = field(default_factory=list)  # indexes into the draft's attachments


_IMPORTANCE_HEADER: Final = {0: "low", 1: "normal", 2: "high"}


def _replace_header(message: EmailMessage, name: str, value: str | None) -> None:
    if value is None:
        return
    del message[name]
    if value.strip():
        message[name] = value


def build_draft(
    fields: DraftFields, base: bytes | None, *, sender: str, hostname: str, now: float
) -> bytes:
    """A draft message from a device's fields, over the previous version if any."""
    old = parse(base) if base is not None else None
    message = EmailMessage(policy=_POLICY)
    for name in ("From", "To", "Cc", "Bcc", "Subject", "Importance", "Message-ID", "Date"):
        if old is not None and _header(old, name):
            message[name] = _header(old, name)
    if not _header(message, "From"):
        message["From"] = sender
    _replace_header(message, "To", fields.to)
    _replace_header(message, "Cc", fields.cc)
    _replace_header(message, "Bcc", fields.bcc)
    _replace_header(message, "Subject", fields.subject)
    if fields.importance is not None:
        _replace_header(message, "Importance", _IMPORTANCE_HEADER.get(fields.importance))
    if not _header(message, "Message-ID"):
        message["Message-ID"] = email.utils.make_msgid(domain=hostname)
    del message["Date"]
    message["Date"] = email.utils.formatdate(now, localtime=False)
    subtype = "html" if fields.body_type == 2 else "plain"
    body = fields.body
    if body is None and old is not None:
        old_html = _text_of(old, "html")
        body = old_html if old_html is not None else _text_of(old, "plain")
        subtype = "html" if old_html is not None else "plain"
    message.set_content(body or "", subtype=subtype, charset="utf-8", cte="quoted-printable")
    kept: Sequence[MIMEPart] = list(old.iter_attachments()) if old is not None else []
    attachments = [a for i, a in enumerate(kept) if i not in set(fields.delete)]
    if attachments or fields.add:
        message.make_mixed()
        for part in attachments:
            message.attach(part)  # type: ignore[arg-type]  # typeshed: attach wants the own class
        for new in fields.add:
            maintype, _, subtype_ = (new.content_type or "application/octet-stream").partition("/")
            message.add_attachment(
                new.data,
                maintype=maintype or "application",
                subtype=subtype_ or "octet-stream",
                filename=new.name,
                disposition="inline" if new.inline else "attachment",
                cid=f"<{new.content_id}>" if new.content_id else None,
            )
    try:
        return message.as_bytes(policy=_SMTP)
    except (ValueError, TypeError, LookupError) as exc:
        raise ComposeError(f"cannot write the draft: {exc}") from None
