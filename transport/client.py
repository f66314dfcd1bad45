"""The outbound SMTP client on trio: one connection to one server, command by command.

What it guarantees whatever the server does (reliability items 17, 18, 52):

- replies are read through a bounded buffer: a line longer than MAX_REPLY_LINE, more
  than MAX_REPLY_LINES lines, more than MAX_REPLY_BYTES in total, a code that is not
  three digits, or a reply that arrives before its command is a protocol violation that
  closes the connection (the recipients are deferred), never a hang or a MemoryError;
- every step has the RFC 5321 4.5.3.2 client timeout (`ClientTimeouts`);
- after `220` to STARTTLS anything already buffered is discarded, never read as a reply
  to a later command (the CVE-2011-0411 family seen from the client side);
- CR, LF, NUL, `<`, `>` and spaces in an address are refused before MAIL/RCPT is written
  (PYSEC-2026-2338); ENVID and ORCPT go out as xtext (RFC 3461 4), so they cannot either;
- the message is sent with every line ending normalised to CRLF (a bare CR or LF becomes
  CRLF, as Postfix's cleanup does) and dots stuffed (RFC 5321 4.5.2), so no byte sequence
  in a message can end the DATA early at the next hop (SMTP smuggling).

Decisions: with 8-bit content and a server without 8BITMIME the message is sent anyway,
as Postfix does (downgrading MIME would break signatures, and a server without 8BITMIME
in practice passes 8-bit bytes); a message whose envelope has non-ASCII addresses is not
sent to a server without SMTPUTF8 (RFC 6531 3.4): those recipients fail with 5.6.7.

A message received as BINARYMIME (RFC 3030) goes out with BDAT and BODY=BINARYMIME, as is,
to a server that offers CHUNKING and BINARYMIME. To one that does not, RFC 3030 3 forbids
sending it as binary: if its bytes would pass through DATA unchanged (CRLF line ends only,
no NUL, lines within 998 octets) it goes as DATA, else its recipients fail with 5.6.3
(conversion required but not supported, RFC 3463), where DATA would have altered it.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from .envelope import DsnReturn, Notify, OriginalRecipient, RecipientState

__all__ = [
    "DATA_CHUNK",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINE",
    "MAX_REPLY_LINES",
    "Capabilities",
    "ClientTimeouts",
    "OutboundRecipient",
    "RecipientVerdict",
    "SessionError",
    "SmtpClient",
    "SmtpReply",
    "TlsFailure",
    "Transaction",
    "UnsafeAddress",
    "check_address",
    "client_tls_context",
    "encode_data",
    "passes_data_unchanged",
    "verdicts_for",
    "xtext_encode",
]

# RFC 5321 4.5.3.1.5 says a reply line is at most 512 octets; servers exceed it in
# practice (long EHLO keywords, verbose errors), so we allow more but stay bounded.
MAX_REPLY_LINE = 4096
# A multi-line reply: EHLO replies have ~15 lines; 100 is generous and bounded.
MAX_REPLY_LINES = 100
# All lines of one reply together (a hostile 100 KB reply ends the connection).
MAX_REPLY_BYTES = 64 * 1024
# How much of the message one write hands to the socket (each under the data-block timeout).
DATA_CHUNK = 64 * 1024

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)", re.DOTALL)
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_EOL = re.compile(rb"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class ClientTimeouts:
    """Seconds per step. Defaults from RFC 5321 4.5.3.2 where it gives them; the rest are
    Postfix's (smtp_connect_timeout 30s, smtp_helo_timeout 300s, smtp_rset_timeout 20s,
    smtp_quit_timeout 300s, which we shorten: nothing rides on QUIT)."""

    connect: float = 30.0
    greeting: float = 300.0  # 4.5.3.2.1 initial 220 message: 5 minutes
    hello: float = 300.0
    starttls: float = 300.0  # reply plus handshake
    auth: float = 300.0
    mail: float = 300.0  # 4.5.3.2.2 MAIL: 5 minutes
    rcpt: float = 300.0  # 4.5.3.2.3 RCPT: 5 minutes
    data_init: float = 120.0  # 4.5.3.2.4 DATA initiation: 2 minutes
    data_block: float = 180.0  # 4.5.3.2.5 data block: 3 minutes
    data_term: float = 600.0  # 4.5.3.2.6 DATA termination: 10 minutes
    rset: float = 20.0
    quit: float = 20.0


@dataclass(frozen=True, slots=True)
class SmtpReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        """The RFC 3463 code at the start of the first line, if the server sent one
        whose class matches the reply code (RFC 2034 3)."""
        match = _ENHANCED.match(self.lines[0] if self.lines else "")
        if match and match.group(1) == str(self.code)[0]:
            return match.group(0)
        return None

    @property
    def status(self) -> str:
        """Enhanced status, or the generic one for the reply class (RFC 3463 3.1)."""
        return self.enhanced or f"{str(self.code)[0]}.0.0"

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class SessionError(Exception):
    """The connection cannot carry on (network error, timeout, protocol violation, 421, a
    refused greeting or EHLO). `committed` is True when the end of DATA had been sent:
    the server may have taken the message, so it must not be tried on another host now."""

    def __init__(
        self,
        text: str,
        *,
        status: str = "4.4.2",
        reply: SmtpReply | None = None,
        committed: bool = False,
    ) -> None:
        super().__init__(text)
        self.text = text
        self.status = status
        self.reply = reply
        self.committed = committed


class TlsFailure(SessionError):
    """STARTTLS was refused or the handshake failed (opportunistic TLS may retry in clear)."""


class UnsafeAddress(ValueError):
    """An address that must never be written into an SMTP command."""


def check_address(address: str) -> str:
    """Refuse what could inject a command or break the path syntax (item 52)."""
    if not address or len(address) > 254:
        raise UnsafeAddress("empty or too long")
    if _CONTROL.search(address) or any(c in address for c in "<> "):
        raise UnsafeAddress(f"forbidden character in {address!r}")
    if "@" not in address:
        raise UnsafeAddress(f"no domain in {address!r}")
    return address


def xtext_encode(text: str) -> str:
    """RFC 3461 4: `+` and `=`, controls, space and non-ASCII become +XX (per UTF-8 byte)."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def encode_data(message: bytes) -> bytes:
    """The DATA payload: CRLF line endings everywhere, dots stuffed, `.CRLF` at the end.

    Bare CR and bare LF are each turned into CRLF (Postfix cleanup_replace_stray_cr_lf),
    so `\\n.\\r\\n` or `\\r.\\r` in a message becomes an ordinary line with a stuffed dot.
    """
    normalised = _EOL.sub(b"\r\n", message)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    stuffed = normalised.replace(b"\r\n.", b"\r\n..")  # RFC 5321 4.5.2
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


def client_tls_context(*, verify: bool, cafile: str | None = None) -> ssl.SSLContext:
    """A client context: TLS 1.2+, and certificate plus name verification when `verify`."""
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        # Opportunistic TLS to MX hosts (RFC 7435): encryption without authentication
        # beats plaintext; most MX certificates would not verify against the MX name.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an EHLO reply offered (empty after HELO)."""

    esmtp: bool = False
    keywords: frozenset[str] = frozenset()
    size: int | None = None  # RFC 1870: None if SIZE not offered, 0 if no fixed limit
    auth: frozenset[str] = frozenset()

    @classmethod
    def from_ehlo(cls, reply: SmtpReply) -> Capabilities:
        keywords = set()
        size = None
        auth: set[str] = set()
        for line in reply.lines[1:]:
            words = line.upper().split()
            if not words:
                continue
            keywords.add(words[0])
            if words[0] == "SIZE":
                size = 0
                if len(words) > 1 and words[1].isdigit() and len(words[1]) <= 20:
                    size = int(words[1])
            elif words[0] == "AUTH":
                auth.update(words[1:])
        return cls(True, frozenset(keywords), size, frozenset(auth))

    def offers(self, keyword: str) -> bool:
        return keyword in self.keywords


@dataclass(frozen=True, slots=True)
class OutboundRecipient:
    address: str
    notify: frozenset[Notify] | None = None
    orcpt: OriginalRecipient | None = None


@dataclass(frozen=True, slots=True)
class Transaction:
    sender: str | None
    recipients: tuple[OutboundRecipient, ...]
    eight_bit: bool = False
    binary: bool = False  # received with BODY=BINARYMIME (RFC 3030)
    smtputf8: bool = False
    ret: DsnReturn | None = None
    envid: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientVerdict:
    """What became of one recipient in one transaction."""

    address: str
    state: RecipientState  # DELIVERED, DEFERRED or FAILED
    status: str
    text: str
    reply_code: int | None = None
    dsn_passed_on: bool = False  # the server offered DSN, so it reports from here on

    @classmethod
    def from_reply(cls, address: str, reply: SmtpReply, *, dsn: bool = False) -> RecipientVerdict:
        if 200 <= reply.code < 300:
            state = RecipientState.DELIVERED
        elif reply.code >= 500:
            state = RecipientState.FAILED
        else:
            state = RecipientState.DEFERRED
        return cls(address, state, reply.status, str(reply), reply.code, dsn)


def _decode_line(line: bytes) -> str:
    return _CONTROL.sub(" ", line.decode("utf-8", "replace")).strip()


@dataclass
class _ReplyReader:
    stream: trio.abc.Stream
    buffer: bytearray = field(default_factory=bytearray)

    async def read_reply(self) -> SmtpReply:
        lines: list[str] = []
        total = 0
        code: bytes | None = None
        while True:
            raw = await self._read_line()
            total += len(raw)
            if total > MAX_REPLY_BYTES:
                raise SessionError(f"reply longer than {MAX_REPLY_BYTES} bytes")
            match = _REPLY_LINE.fullmatch(raw)
            if match is None:
                raise SessionError(f"malformed reply line {_decode_line(raw[:80])!r}")
            if code is not None and match.group(1) != code:
                raise SessionError("reply code changes within a multi-line reply")
            code = match.group(1)
            lines.append(_decode_line(match.group(3)))
            if match.group(2) != b"-":
                return SmtpReply(int(code), tuple(lines))
            if len(lines) >= MAX_REPLY_LINES:
                raise SessionError(f"reply has more than {MAX_REPLY_LINES} lines")

    async def _read_line(self) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                if end > MAX_REPLY_LINE:
                    raise SessionError(f"reply line longer than {MAX_REPLY_LINE} bytes")
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buffer) > MAX_REPLY_LINE:
                raise SessionError(f"reply line longer than {MAX_REPLY_LINE} bytes")
            try:
                data = await self.stream.receive_some(8192)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise SessionError(f"connection lost: {exc}") from None
            if not data:
                raise SessionError("connection closed by the server")
            self.buffer += data


class SmtpClient:
    """One SMTP session over an established stream. Raises SessionError when the session
    cannot continue; per-recipient outcomes come back as RecipientVerdicts."""

    def __init__(
        self, stream: trio.abc.Stream, *, timeouts: ClientTimeouts, peer: str = ""
    ) -> None:
        self._stream = stream
        self._reader = _ReplyReader(stream)
        self.timeouts = timeouts
        self.peer = peer
        self.capabilities = Capabilities()
        self.tls_version: str | None = None
        self.transactions = 0
        # True while a transaction is open (MAIL accepted, no final DATA reply yet): the
        # next transaction on this connection must start with RSET (RFC 5321 4.1.1.5).
        self.needs_reset = False

    # -- plumbing -------------------------------------------------------------------------

    async def _send(self, data: bytes, *, committed: bool = False) -> None:
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise SessionError(f"connection lost: {exc}", committed=committed) from None

    async def _command(self, line: str, limit: float, *, step: str) -> SmtpReply:
        if self._reader.buffer:
            # Nothing should be waiting before we ask: a reply before the command.
            raise SessionError(f"server sent data before {step}")
        with trio.move_on_after(limit) as scope:
            await self._send(line.encode("utf-8") + b"\r\n")
            reply = await self._reader.read_reply()
        if scope.cancelled_caught:
            raise SessionError(f"timeout after {limit:g}s waiting for the {step} reply")
        self._check_closing(reply, step)
        return reply

    async def _read(self, limit: float, *, step: str, committed: bool = False) -> SmtpReply:
        with trio.move_on_after(limit) as scope:
            try:
                reply = await self._reader.read_reply()
            except SessionError as exc:
                exc.committed = committed
                raise
        if scope.cancelled_caught:
            raise SessionError(
                f"timeout after {limit:g}s waiting for the {step} reply", committed=committed
            )
        self._check_closing(reply, step, committed=committed)
        return reply

    @staticmethod
    def _check_closing(reply: SmtpReply, step: str, *, committed: bool = False) -> None:
        if reply.code == 421:  # RFC 5321 3.8: the server is closing the channel
            raise SessionError(
                f"{step}: {reply}", status=reply.status, reply=reply, committed=committed
            )

    # -- session steps --------------------------------------------------------------------

    async def read_greeting(self) -> SmtpReply:
        reply = await self._read(self.timeouts.greeting, step="greeting")
        if reply.code != 220:
            raise SessionError(f"greeting: {reply}", status=reply.status, reply=reply)
        return reply

    async def hello(self, name: str) -> Capabilities:
        """EHLO, falling back to HELO when EHLO gets a 5xx (RFC 5321 3.2)."""
        reply = await self._command(f"EHLO {name}", self.timeouts.hello, step="EHLO")
        if reply.code == 250:
            self.capabilities = Capabilities.from_ehlo(reply)
            return self.capabilities
        if reply.code >= 500:
            reply = await self._command(f"HELO {name}", self.timeouts.hello, step="HELO")
            if reply.code == 250:
                self.capabilities = Capabilities()
                return self.capabilities
        raise SessionError(f"EHLO/HELO: {reply}", status=reply.status, reply=reply)

    async def starttls(self, context: ssl.SSLContext, server_hostname: str | None) -> None:
        """RFC 3207: STARTTLS, then the handshake on the same connection."""
        reply = await self._command("STARTTLS", self.timeouts.starttls, step="STARTTLS")
        if reply.code != 220:
            raise TlsFailure(f"STARTTLS: {reply}", status="4.7.5", reply=reply)
        # Bytes that arrived with the 220 were sent before TLS: discard them unread.
        self._reader.buffer.clear()
        tls = trio.SSLStream(self._stream, context, server_hostname=server_hostname)
        with trio.move_on_after(self.timeouts.starttls) as scope:
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                cause = exc.__cause__ if exc.__cause__ is not None else exc
                raise TlsFailure(f"TLS handshake failed: {cause}", status="4.7.5") from None
        if scope.cancelled_caught:
            raise TlsFailure("timeout during the TLS handshake", status="4.7.5")
        self._stream = tls
        self._reader = _ReplyReader(tls)
        self.capabilities = Capabilities()  # RFC 3207 4.2: forget what was said in clear
        self.tls_version = tls.version()

    async def authenticate(self, username: str, password: str) -> None:
        """AUTH PLAIN (with an initial response, RFC 4954 4) or LOGIN, whichever is offered."""
        mechanisms = self.capabilities.auth
        timeout = self.timeouts.auth
        if "PLAIN" in mechanisms:
            token = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
            reply = await self._command(f"AUTH PLAIN {token}", timeout, step="AUTH")
            if reply.code == 334:  # a server that ignores the initial response
                reply = await self._command(token, timeout, step="AUTH")
        elif "LOGIN" in mechanisms:
            reply = await self._command("AUTH LOGIN", timeout, step="AUTH")
            for secret in (username, password):
                if reply.code != 334:
                    break
                encoded = base64.b64encode(secret.encode()).decode("ascii")
                reply = await self._command(encoded, timeout, step="AUTH")
        else:
            raise SessionError("the server offers neither AUTH PLAIN nor LOGIN", status="4.7.0")
        if reply.code != 235:
            if reply.code == 334:
                await self._command("*", timeout, step="AUTH")  # RFC 4954 4: cancel
            raise SessionError(f"authentication failed: {reply}", status="4.7.0", reply=reply)

    async def reset(self) -> None:
        reply = await self._command("RSET", self.timeouts.rset, step="RSET")
        if reply.code != 250:
            raise SessionError(f"RSET: {reply}", status=reply.status, reply=reply)
        self.needs_reset = False

    async def quit(self) -> None:
        """QUIT politely; whatever happens, the stream is closed afterwards."""
        try:
            with trio.move_on_after(self.timeouts.quit):
                await self._send(b"QUIT\r\n")
                await self._reader.read_reply()
        except SessionError:
            pass
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        with trio.move_on_after(1) as scope:
            scope.shield = True
            try:
                await self._stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    # -- a mail transaction ---------------------------------------------------------------

    async def send_message(self, tx: Transaction, message: bytes) -> list[RecipientVerdict]:
        """MAIL, RCPTs (pipelined when offered, RFC 2920), DATA. One verdict per recipient.

        Raises SessionError when the connection breaks or the server says 421; recipients
        of this transaction are then undecided (the caller defers them).
        """
        caps = self.capabilities
        verdicts: dict[int, RecipientVerdict] = {}
        sender = tx.sender or ""
        if sender:
            check_address(sender)
        if caps.size and len(message) > caps.size:
            # RFC 1870 6.1: do not send what the server has said it will not take.
            return [
                RecipientVerdict(
                    r.address,
                    RecipientState.FAILED,
                    "5.3.4",
                    f"message size {len(message)} exceeds the limit {caps.size} of {self.peer}",
                )
                for r in tx.recipients
            ]
        utf8 = caps.offers("SMTPUTF8")
        for i, rcpt in enumerate(tx.recipients):
            needs_utf8 = not rcpt.address.isascii() or not sender.isascii()
            if needs_utf8 and not utf8:
                verdicts[i] = RecipientVerdict(
                    rcpt.address,
                    RecipientState.FAILED,
                    "5.6.7",  # RFC 6531 3.4
                    f"{self.peer} does not support SMTPUTF8, needed for this address",
                )
        chunking = tx.binary and caps.offers("CHUNKING") and caps.offers("BINARYMIME")
        if (
            tx.binary
            and not chunking
            # A pass over the whole message (a few hundred ms at 30 MB): off the event loop.
            and not await trio.to_thread.run_sync(passes_data_unchanged, message)
        ):
            for i, rcpt in enumerate(tx.recipients):
                verdicts.setdefault(
                    i,
                    RecipientVerdict(
                        rcpt.address,
                        RecipientState.FAILED,
                        "5.6.3",  # RFC 3463: conversion required but not supported
                        f"{self.peer} does not support BINARYMIME, which this message needs",
                    ),
                )
        wanted = [i for i in range(len(tx.recipients)) if i not in verdicts]
        if not wanted:
            return [verdicts[i] for i in range(len(tx.recipients))]
        dsn = caps.offers("DSN")
        mail = f"MAIL FROM:<{sender}>"
        if caps.size is not None:
            mail += f" SIZE={len(message)}"
        if chunking:
            mail += " BODY=BINARYMIME"  # RFC 3030 3
        elif tx.eight_bit and caps.offers("8BITMIME"):
            mail += " BODY=8BITMIME"  # RFC 6152
        if utf8 and (
            tx.smtputf8
            or not sender.isascii()
            or any(not tx.recipients[i].address.isascii() for i in wanted)
        ):
            mail += " SMTPUTF8"  # RFC 6531 3.4
        if dsn:
            if tx.ret is not None:
                mail += f" RET={tx.ret.value}"
            if tx.envid is not None:
                mail += f" ENVID={xtext_encode(tx.envid)}"
        rcpt_lines = []
        for i in wanted:
            rcpt = tx.recipients[i]
            line = f"RCPT TO:<{rcpt.address}>"
            if dsn and rcpt.notify is not None:
                line += " NOTIFY=" + ",".join(sorted(n.value for n in rcpt.notify))
            if dsn and rcpt.orcpt is not None:
                line += f" ORCPT={rcpt.orcpt.addr_type};{xtext_encode(rcpt.orcpt.address)}"
            rcpt_lines.append(line)
        self.transactions += 1
        if caps.offers("PIPELINING"):
            if self._reader.buffer:
                raise SessionError("server sent data before MAIL")
            await self._send(("\r\n".join([mail, *rcpt_lines]) + "\r\n").encode("utf-8"))
            mail_reply = await self._read(self.timeouts.mail, step="MAIL")
            rcpt_replies = [await self._read(self.timeouts.rcpt, step="RCPT") for _ in rcpt_lines]
        else:
            mail_reply = await self._command(mail, self.timeouts.mail, step="MAIL")
            rcpt_replies = []
            if mail_reply.code == 250:
                for line in rcpt_lines:
                    rcpt_replies.append(await self._command(line, self.timeouts.rcpt, step="RCPT"))
        self.needs_reset = mail_reply.code == 250
        if mail_reply.code != 250:
            for i in wanted:
                verdicts[i] = RecipientVerdict.from_reply(tx.recipients[i].address, mail_reply)
            return [verdicts[i] for i in range(len(tx.recipients))]
        accepted = []
        for i, reply in zip(wanted, rcpt_replies, strict=True):
            if reply.code in (250, 251):
                accepted.append(i)
            else:
                verdicts[i] = RecipientVerdict.from_reply(tx.recipients[i].address, reply)
        if accepted and chunking:
            reply = await self._send_bdat(message)
            # RFC 3030 leaves the server's state after a refused BDAT LAST open: RSET
            # before the next transaction unless it was accepted.
            self.needs_reset = not 200 <= reply.code < 300
            for i in accepted:
                verdicts[i] = RecipientVerdict.from_reply(tx.recipients[i].address, reply, dsn=dsn)
        elif accepted:
            reply = await self._command("DATA", self.timeouts.data_init, step="DATA")
            if reply.code == 354:
                reply = await self._send_data(message)
                self.needs_reset = False  # the final reply ends the transaction
            for i in accepted:
                verdicts[i] = RecipientVerdict.from_reply(tx.recipients[i].address, reply, dsn=dsn)
        return [verdicts[i] for i in range(len(tx.recipients))]

    async def _send_data(self, message: bytes) -> SmtpReply:
        return await self._send_message(encode_data(message), step="end of DATA")

    async def _send_bdat(self, message: bytes) -> SmtpReply:
        """The whole message as one chunk, `BDAT <size> LAST` (RFC 3030 2): the octets as
        they are, no dot stuffing and no line-end changes."""
        if self._reader.buffer:
            raise SessionError("server sent data before BDAT")
        payload = f"BDAT {len(message)} LAST\r\n".encode("ascii") + message
        return await self._send_message(payload, step="BDAT LAST")

    async def _send_message(self, payload: bytes, *, step: str) -> SmtpReply:
        """`payload` in DATA_CHUNK writes, each within the data-block timeout, then the
        final reply (RFC 5321 4.5.3.2.5 and 4.5.3.2.6). From the last write on, the
        message may have been taken: `committed`."""
        view = memoryview(payload)
        for start in range(0, len(view), DATA_CHUNK):
            last = start + DATA_CHUNK >= len(view)
            with trio.move_on_after(self.timeouts.data_block) as scope:
                await self._send(bytes(view[start : start + DATA_CHUNK]), committed=last)
            if scope.cancelled_caught:
                raise SessionError("timeout sending the message", committed=last)
        return await self._read(self.timeouts.data_term, step=step, committed=True)


# A line of more than 998 octets, tried only where a line starts (linear in the message).
_LONG_LINE = re.compile(rb"^[^\r\n]{999}", re.MULTILINE)


def passes_data_unchanged(message: bytes) -> bool:
    """Whether DATA carries `message` exactly: CRLF line ends only (and one at the end), no
    NUL, no line over 998 octets (RFC 5321 4.5.3.1.6); the receiver undoes dot stuffing.
    Linear in the message: counts and searches in C."""
    if not message:
        return True
    if not message.endswith(b"\r\n") or b"\x00" in message:
        return False
    line_ends = message.count(b"\r\n")
    if message.count(b"\r") != line_ends or message.count(b"\n") != line_ends:
        return False  # a bare CR or LF
    return _LONG_LINE.search(message) is None


def verdicts_for(
    recipients: Sequence[OutboundRecipient], error: SessionError
) -> list[RecipientVerdict]:
    """Every recipient deferred with the session error (a broken connection is temporary)."""
    status = error.status if error.status.startswith("4") else "4" + error.status[1:]
    code = error.reply.code if error.reply is not None else None
    return [
        RecipientVerdict(r.address, RecipientState.DEFERRED, status, error.text, code)
        for r in recipients
    ]
