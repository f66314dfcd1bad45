"""ESMTP: the extensions we advertise, and the MAIL/RCPT parameters they allow.

`Extensions` is what one EHLO reply offered; the caller builds it from its settings
(TLS state, whether AUTH may be offered) and the protocol core accepts exactly the
parameters those extensions define. Parameter syntax lives here; the sequencing and
the size check against the configured limit live in the core.

Reply codes: a keyword we do not know, or one whose extension was not offered, is
`555 5.5.4` (RFC 5321 4.1.1.11); a known keyword with a bad value is `501 5.5.4`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from protocols.smtp.replies import Reply, SmtpError

__all__ = [
    "MAX_AUTH_PARAM",
    "MAX_ENVID",
    "MAX_ORCPT",
    "MAX_ORCPT_ADDR_TYPE",
    "BodyType",
    "DsnNotify",
    "DsnReturn",
    "Extensions",
    "MailParams",
    "OriginalRecipient",
    "RcptParams",
    "parse_mail_params",
    "parse_rcpt_params",
    "xtext_decode",
    "xtext_encode",
]

# RFC 3461 4.4: "the ENVID parameter ... MUST NOT exceed 100 characters" (as xtext).
MAX_ENVID = 100
# RFC 3461 4.2: the ORCPT parameter may be up to 500 characters.
MAX_ORCPT = 500
# Its addr-type ("rfc822", "utf-8"): the RFC sets no bound; the queue keeps 64 octets, so
# a longer one is refused here, at RCPT, and never after DATA (where local copies may
# already have landed and a refusal would make the client send them again).
MAX_ORCPT_ADDR_TYPE = 64
# RFC 4954 5: the AUTH= parameter adds up to 500 characters to the MAIL command.
MAX_AUTH_PARAM = 500
# RFC 1870 3: "size-value ::= 1*20DIGIT".
MAX_SIZE_DIGITS = 20

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")  # RFC 5321 4.1.2 esmtp-keyword
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")  # RFC 3461 4: xchar / hexchar
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]+")  # RFC 3461 4.2 atom


class BodyType(enum.StrEnum):
    """MAIL BODY= (RFC 6152 2, RFC 3030 3)."""

    SEVEN_BIT = "7BIT"
    EIGHT_BIT_MIME = "8BITMIME"
    BINARY_MIME = "BINARYMIME"


class DsnReturn(enum.StrEnum):
    """MAIL RET= (RFC 3461 4.3): return the full message or only its headers."""

    FULL = "FULL"
    HEADERS = "HDRS"


class DsnNotify(enum.StrEnum):
    """RCPT NOTIFY= (RFC 3461 4.1)."""

    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


@dataclass(frozen=True, slots=True, kw_only=True)
class Extensions:
    """The ESMTP extensions one EHLO reply advertises.

    `size` is the SIZE value to advertise (RFC 1870: 0 means no fixed limit) or None
    to leave SIZE out. `auth` lists the SASL mechanisms offered now; empty means AUTH
    is not offered (before TLS, RFC 4954 4 / our rule: never over plaintext).
    """

    size: int | None = None
    eight_bit_mime: bool = True
    smtputf8: bool = True
    enhanced_status_codes: bool = True
    pipelining: bool = True
    starttls: bool = False
    auth: tuple[str, ...] = ()
    dsn: bool = True
    chunking: bool = True
    binary_mime: bool = True

    def __post_init__(self) -> None:
        if self.binary_mime and not self.chunking:
            raise ValueError("BINARYMIME needs CHUNKING (RFC 3030 3)")
        if self.size is not None and self.size < 0:
            raise ValueError("SIZE must not be negative")

    def keywords(self) -> tuple[str, ...]:
        """The EHLO keyword lines, in the order Postfix uses (clients do not care)."""
        lines: list[str] = []
        if self.pipelining:
            lines.append("PIPELINING")  # RFC 2920
        if self.size is not None:
            lines.append(f"SIZE {self.size}")  # RFC 1870
        if self.starttls:
            lines.append("STARTTLS")  # RFC 3207
        if self.auth:
            lines.append("AUTH " + " ".join(self.auth))  # RFC 4954
        if self.enhanced_status_codes:
            lines.append("ENHANCEDSTATUSCODES")  # RFC 2034
        if self.eight_bit_mime:
            lines.append("8BITMIME")  # RFC 6152
        if self.dsn:
            lines.append("DSN")  # RFC 3461
        if self.smtputf8:
            lines.append("SMTPUTF8")  # RFC 6531
        if self.chunking:
            lines.append("CHUNKING")  # RFC 3030
        if self.binary_mime:
            lines.append("BINARYMIME")  # RFC 3030
        return tuple(lines)

    def ehlo_reply(self, greeting: str) -> Reply:
        """The 250 reply to EHLO: `greeting` on the first line, then the keywords."""
        return Reply(250, None, (greeting, *self.keywords()))


def xtext_encode(value: str) -> str:
    """RFC 3461 4: xtext; bytes outside `!`..`~`, and `+` and `=`, become `+XX`."""
    out: list[str] = []
    for byte in value.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def xtext_decode(text: str, *, allow_space: bool = True) -> str:
    """Decode RFC 3461 xtext to printable US-ASCII, or raise ValueError.

    The decoded value may hold only printable ASCII (and SP when `allow_space`): an
    encoded CR, LF or NUL (`+0D`, `+0A`, `+00`) would otherwise travel into queue
    files and headers (the Exim CVE-2020-28021 class).
    """
    if not _XTEXT.fullmatch(text):
        raise ValueError("malformed xtext")
    raw = bytearray()
    index = 0
    while index < len(text):
        if text[index] == "+":
            raw.append(int(text[index + 1 : index + 3], 16))
            index += 3
        else:
            raw.append(ord(text[index]))
            index += 1
    lowest = 32 if allow_space else 33
    if any(not lowest <= byte <= 126 for byte in raw):
        raise ValueError("xtext decodes to a control or non-ASCII octet")
    return raw.decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class MailParams:
    """The parameters of one MAIL command."""

    size: int | None = None  # RFC 1870: the client's size estimate
    body: BodyType | None = None  # RFC 6152 / RFC 3030; None means not given (7bit)
    smtputf8: bool = False  # RFC 6531 3.4
    ret: DsnReturn | None = None  # RFC 3461 4.3
    envid: str | None = None  # RFC 3461 4.4, decoded
    auth: str | None = None  # RFC 4954 5, decoded; "<>" when the client sent AUTH=<>

    def to_esmtp(self) -> tuple[str, ...]:
        """Render for a MAIL command when relaying (the outbound client's use)."""
        out: list[str] = []
        if self.size is not None:
            out.append(f"SIZE={self.size}")
        if self.body is not None:
            out.append(f"BODY={self.body}")
        if self.smtputf8:
            out.append("SMTPUTF8")
        if self.ret is not None:
            out.append(f"RET={self.ret}")
        if self.envid is not None:
            out.append(f"ENVID={xtext_encode(self.envid)}")
        if self.auth is not None:
            out.append(f"AUTH={xtext_encode(self.auth)}")
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class OriginalRecipient:
    """RCPT ORCPT= (RFC 3461 4.2): `addr-type;address`, the address decoded."""

    addr_type: str
    address: str


_NOTIFY_ORDER = (DsnNotify.SUCCESS, DsnNotify.FAILURE, DsnNotify.DELAY)


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptParams:
    """The parameters of one RCPT command (kept with the recipient for DSNs)."""

    notify: frozenset[DsnNotify] | None = None  # None: not given (RFC 3461 default)
    orcpt: OriginalRecipient | None = None

    def to_esmtp(self) -> tuple[str, ...]:
        out: list[str] = []
        if self.notify is not None:
            if DsnNotify.NEVER in self.notify:
                out.append("NOTIFY=NEVER")
            else:
                out.append("NOTIFY=" + ",".join(n for n in _NOTIFY_ORDER if n in self.notify))
        if self.orcpt is not None:
            out.append(f"ORCPT={self.orcpt.addr_type};{xtext_encode(self.orcpt.address)}")
        return tuple(out)


def _syntax(text: str) -> SmtpError:
    return SmtpError(Reply(501, "5.5.4", text))


def _unrecognized(keyword: str) -> SmtpError:
    # RFC 5321 4.1.1.11: 555 "MAIL FROM/RCPT TO parameters not recognized or not
    # implemented". The keyword is echoed only after it passed the keyword syntax.
    return SmtpError(Reply(555, "5.5.4", f"Unsupported parameter {keyword.upper()}"))


def _split(text: str, esmtp: bool) -> Iterable[tuple[str, str | None]]:
    """Split the text after a path into (KEYWORD, value) pairs, refusing duplicates."""
    if not text.strip(" "):
        return []
    if not text.startswith(" "):
        raise _syntax("Syntax error after the address")
    if not esmtp:
        # Parameters exist only in ESMTP sessions (RFC 5321 4.1.1.2, after EHLO).
        raise SmtpError(Reply(555, "5.5.4", "Parameters need EHLO"))
    seen: set[str] = set()
    pairs: list[tuple[str, str | None]] = []
    for item in text.split(" "):
        if not item:
            continue  # tolerate runs of spaces between parameters
        keyword, equals, value = item.partition("=")
        if not _KEYWORD.fullmatch(keyword):
            raise _syntax("Malformed parameter")
        # RFC 5321 4.1.2: esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 adds UTF-8.
        if equals and (not value or any(not _is_value_char(ch) for ch in value)):
            raise _syntax(f"Malformed value for {keyword.upper()}")
        upper = keyword.upper()
        if upper in seen:
            raise _syntax(f"Duplicate parameter {upper}")
        seen.add(upper)
        pairs.append((upper, value if equals else None))
    return pairs


def _is_value_char(ch: str) -> bool:
    code = ord(ch)
    return 33 <= code <= 126 and ch != "=" if code < 128 else ch.isprintable()


def _require_value(keyword: str, value: str | None) -> str:
    if value is None:
        raise _syntax(f"{keyword} needs a value")
    if not value.isascii():
        raise _syntax(f"Non-ASCII value for {keyword}")
    return value


def parse_mail_params(text: str, extensions: Extensions, *, esmtp: bool) -> MailParams:
    """Parse the parameters after `MAIL FROM:<path>` (leading space included).

    Raises SmtpError (501 / 555) for bad syntax or parameters not offered.
    """
    size: int | None = None
    body: BodyType | None = None
    smtputf8 = False
    ret: DsnReturn | None = None
    envid: str | None = None
    auth: str | None = None
    for keyword, value in _split(text, esmtp):
        if keyword == "SIZE" and extensions.size is not None:
            digits = _require_value(keyword, value)
            if not digits.isdigit() or len(digits) > MAX_SIZE_DIGITS:  # RFC 1870 3
                raise _syntax("SIZE must be a number")
            size = int(digits)
        elif keyword == "BODY" and (extensions.eight_bit_mime or extensions.binary_mime):
            name = _require_value(keyword, value).upper()
            try:
                body = BodyType(name)
            except ValueError:
                raise _syntax("BODY must be 7BIT, 8BITMIME or BINARYMIME") from None
            if body is BodyType.EIGHT_BIT_MIME and not extensions.eight_bit_mime:
                raise _unrecognized("BODY=8BITMIME")
            if body is BodyType.BINARY_MIME and not extensions.binary_mime:
                raise _unrecognized("BODY=BINARYMIME")
        elif keyword == "SMTPUTF8" and extensions.smtputf8:
            if value is not None:  # RFC 6531 3.4: the parameter takes no value
                raise _syntax("SMTPUTF8 takes no value")
            smtputf8 = True
        elif keyword == "RET" and extensions.dsn:
            try:
                ret = DsnReturn(_require_value(keyword, value).upper())
            except ValueError:
                raise _syntax("RET must be FULL or HDRS") from None
        elif keyword == "ENVID" and extensions.dsn:
            encoded = _require_value(keyword, value)
            if len(encoded) > MAX_ENVID:
                raise _syntax("ENVID too long")
            try:
                envid = xtext_decode(encoded, allow_space=False)
            except ValueError:
                raise _syntax("ENVID must be xtext of printable ASCII") from None
        elif keyword == "AUTH" and extensions.auth:
            encoded = _require_value(keyword, value)
            if len(encoded) > MAX_AUTH_PARAM:
                raise _syntax("AUTH parameter too long")
            try:
                auth = xtext_decode(encoded)
            except ValueError:
                raise _syntax("AUTH parameter must be xtext of printable ASCII") from None
        else:
            raise _unrecognized(keyword)
    return MailParams(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth)


def parse_rcpt_params(text: str, extensions: Extensions, *, esmtp: bool) -> RcptParams:
    """Parse the parameters after `RCPT TO:<path>` (leading space included)."""
    notify: frozenset[DsnNotify] | None = None
    orcpt: OriginalRecipient | None = None
    for keyword, value in _split(text, esmtp):
        if keyword == "NOTIFY" and extensions.dsn:
            names = _require_value(keyword, value).upper().split(",")
            try:
                chosen = [DsnNotify(name) for name in names]
            except ValueError:
                raise _syntax("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY") from None
            # RFC 3461 4.1: NEVER stands alone; the others are a list without repeats.
            if len(set(chosen)) != len(chosen) or (DsnNotify.NEVER in chosen and len(chosen) > 1):
                raise _syntax("NOTIFY must be NEVER or SUCCESS,FAILURE,DELAY")
            notify = frozenset(chosen)
        elif keyword == "ORCPT" and extensions.dsn:
            encoded = _require_value(keyword, value)
            if len(encoded) > MAX_ORCPT:
                raise _syntax("ORCPT too long")
            addr_type, semicolon, xtext = encoded.partition(";")
            if not semicolon or not _ADDR_TYPE.fullmatch(addr_type) or not xtext:
                raise _syntax("ORCPT must be addr-type;xtext")
            if len(addr_type) > MAX_ORCPT_ADDR_TYPE:
                raise _syntax("ORCPT address type too long")
            # todo(rfc 6533 3): utf-8-addr-unitext forms of ORCPT under SMTPUTF8.
            try:
                address = xtext_decode(xtext)
            except ValueError:
                raise _syntax("ORCPT address must be xtext of printable ASCII") from None
            orcpt = OriginalRecipient(addr_type=addr_type.lower(), address=address)
        else:
            raise _unrecognized(keyword)
    return RcptParams(notify=notify, orcpt=orcpt)
