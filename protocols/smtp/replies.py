"""SMTP replies and the one error family that carries them.

A reply is data (`Reply`), rendered to bytes in one place so that nothing a backend
says can break the framing: CR, LF and NUL are refused in reply text, and every line
is cut to the RFC 5321 reply-line limit.

Errors raised by the protocol core are `SmtpError`s. Each carries the exact reply the
peer is to get and whether the peer is to blame (as mox's `smtpError.userError` and
h11's `error_status_hint`): the session sends `error.reply`, logs at a level chosen by
`peer_at_fault`, and goes on (or closes, when the core has moved to CLOSED).
"""

from __future__ import annotations

import base64
import functools
import re
from dataclasses import dataclass

__all__ = [
    "MAX_REPLY_LINE",
    "MessageRejected",
    "Reply",
    "SmtpError",
    "SmtpUsageError",
]

# RFC 5321 4.5.3.1.5: "The maximum total length of a reply line including the reply code
# and the <CRLF> is 512 octets."
MAX_REPLY_LINE = 512

_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}")  # RFC 3463 2: class.subject.detail
_FRAMING = re.compile("[\r\n\x00]")


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a three-digit code, an RFC 3463 enhanced code, and text lines.

    `enhanced` is None for replies that must not carry one: the greeting, the EHLO
    keyword list (RFC 2034 3 leaves them out of 220/EHLO), and SASL 334 challenges.
    `text` is one line or a tuple of lines; several lines render as a multi-line reply
    (RFC 5321 4.2.1: `250-first`, ..., `250 last`).
    """

    code: int
    enhanced: str | None
    text: str | tuple[str, ...]

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code out of range: {self.code}")
        if self.enhanced is not None:
            if not _ENHANCED.fullmatch(self.enhanced):
                raise ValueError(f"malformed enhanced status code: {self.enhanced!r}")
            # RFC 3463 2: the class digit of the enhanced code matches the reply class.
            if self.enhanced[0] != str(self.code)[0] and self.code // 100 != 3:
                raise ValueError(f"enhanced code {self.enhanced} does not match {self.code}")
        for line in self.lines:
            if _FRAMING.search(line):
                raise ValueError("CR, LF and NUL are not allowed in reply text")

    @property
    def lines(self) -> tuple[str, ...]:
        return (self.text,) if isinstance(self.text, str) else self.text or ("",)

    @property
    def is_positive(self) -> bool:
        """2xx and 3xx (RFC 5321 4.2.1: positive completion and intermediate)."""
        return self.code < 400

    @property
    def closes_connection(self) -> bool:
        """421 means the server closes the channel (RFC 5321 3.8); 221 answers QUIT."""
        return self.code in (221, 421)

    def render(self) -> bytes:
        """The reply as it goes on the wire, CRLF-terminated, each line within 512 octets."""
        return _render(self)

    def _render(self) -> bytes:
        lines = self.lines
        out: list[bytes] = []
        for index, line in enumerate(lines):
            separator = " " if index == len(lines) - 1 else "-"
            prefix = f"{self.code}{separator}"
            if self.enhanced is not None:
                prefix += f"{self.enhanced} "
            encoded = (prefix + line).encode("utf-8", "replace")
            if len(encoded) > MAX_REPLY_LINE - 2:
                encoded = encoded[: MAX_REPLY_LINE - 2]
                # Never leave half a UTF-8 sequence at the cut.
                encoded = encoded.decode("utf-8", "ignore").encode("utf-8")
            out.append(encoded + b"\r\n")
        return b"".join(out)

    @classmethod
    def challenge(cls, data: bytes) -> Reply:
        """A SASL challenge: `334 <base64>` (RFC 4954 4)."""
        return cls(334, None, base64.b64encode(data).decode("ascii"))

    def __str__(self) -> str:
        prefix = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        return prefix + " / ".join(self.lines)


# Most replies are constants; rendering them once saves a good part of the per-command cost.
_render = functools.lru_cache(maxsize=512)(Reply._render)


class SmtpError(Exception):
    """A protocol error with the reply that answers it.

    `peer_at_fault` is True when the client broke the protocol (syntax, sequence,
    limits) and False when the failure is ours (internal errors, resource trouble).
    """

    def __init__(self, reply: Reply, *, peer_at_fault: bool = True) -> None:
        super().__init__(str(reply))
        self.reply = reply
        self.peer_at_fault = peer_at_fault


class MessageRejected(SmtpError):
    """The message being received was refused at its end (size, bare CR/LF, ...).

    Raised only once the whole message has been read, so the command stream stays in
    step with the client; the transaction is over and any spooled content must go.
    """


class SmtpUsageError(RuntimeError):
    """The caller used the core wrongly (a bug on our side, never the peer's)."""
