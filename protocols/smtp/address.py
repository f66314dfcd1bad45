"""Envelope addresses: a strict parser for RFC 5321 4.1.2 paths, with RFC 6531 UTF-8.

Our own parser, not `email.utils`: the stdlib address helpers are header parsers that
guess (CVE-2023-27043: `alice"@example.org" <bob@evil.com>` yields `bob@evil.com`), and
an envelope address decides where mail goes, so guessing is how open relays happen.

What the parser does with the RFC 2505 relay tricks, so the relay decision (made by the
hub, not here) always sees the domain the mail would really go to:

- `user%other.example@us.example` and `other!user@us.example`: `%` and `!` are plain
  atext; the domain is `us.example` and the local part keeps them
  (`Address.has_routing_characters` tells the hub; no percent hack is ever applied).
- `<@a.example,@b.example:user@c.example>`: the source route is accepted and ignored
  (RFC 5321 4.1.2 and C); the address is `user@c.example`, the route kept only for logs.
- `"user@other.example"@us.example`: a quoted local part; the domain is `us.example`.
- `user@other.example@us.example`, `user@`, `@us.example`: syntax errors.
- `user@[127.0.0.1]`, `user@[IPv6:::1]`: address literals, exposed as `ipaddress`
  objects in `Address.literal`; `[127.000.0.1]` and unknown tags are refused.
- `user@us.example.` (trailing dot), `user@127.0.0.1` (an IP without brackets, RFC 1123
  2.1: a top-level label is never all-numeric): syntax errors.
- Case: the domain is kept as sent; `Address.domain_key` is the lowercase form to compare.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "MAX_DOMAIN",
    "MAX_DOMAIN_LABEL",
    "MAX_LOCAL_PART",
    "MAX_PATH",
    "Address",
    "AddressError",
    "is_valid_domain",
    "parse_forward_path",
    "parse_mailbox",
    "parse_reverse_path",
]

# RFC 5321 4.5.3.1.1: "The maximum total length of a user name or other local-part is 64
# octets."
MAX_LOCAL_PART = 64
# RFC 5321 4.5.3.1.2: "The maximum total length of a domain name or number is 255 octets."
MAX_DOMAIN = 255
# RFC 5321 4.5.3.1.3: "The maximum total length of a reverse-path or forward-path is 256
# octets (including the punctuation and element separators)."
MAX_PATH = 256
# RFC 1035 2.3.4: labels are 63 octets or less (of the A-label, RFC 5890 2.3.2.1).
MAX_DOMAIN_LABEL = 63

# RFC 5321 4.1.2 atext (from RFC 5322 3.2.3): ALPHA / DIGIT / these specials.
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_ATEXT = frozenset(_ALNUM + "!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset(_ALNUM + "-")
_LET_DIG = _LDH - {"-"}
# The same sets as regular expressions: the ASCII runs of a path are matched in C, and
# only what they stop at (UTF-8, or an error) is looked at one character at a time.
_ATEXT_CLASS = "A-Za-z0-9!#$%&'*+\\-/=?^_`{|}~"
_ASCII_DOT_ATEXT_RUN = re.compile(f"[{_ATEXT_CLASS}.]*")
_DOT_STRING = f"[{_ATEXT_CLASS}]+(?:\\.[{_ATEXT_CLASS}]+)*"  # RFC 5321 Dot-string, ASCII
_ASCII_DOT_STRING = re.compile(_DOT_STRING)
_ASCII_DOMAIN_RUN = re.compile("[A-Za-z0-9.-]*")
_ASCII_LDH = re.compile("[A-Za-z0-9-]+")
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SIMPLE_PATH = re.compile(f"<({_DOT_STRING})@((?:{_LABEL}\\.)*{_LABEL})>")


class AddressError(ValueError):
    """An envelope path that does not follow RFC 5321 4.1.2 (or RFC 6531 3.3)."""

    def __init__(self, reason: str, *, too_long: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.too_long = too_long


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox from an envelope path.

    `local_part` is the semantic value: quotes removed and quoted-pairs resolved, so
    `"a b"@x` has local part `a b`. `domain` is the domain as sent (A-labels or, under
    SMTPUTF8, U-labels), or the address literal with its brackets (`[192.0.2.1]`), or
    the empty string for the bare `<Postmaster>` recipient (RFC 5321 4.1.1.3), which
    the receiver maps to its own postmaster. `literal` is the parsed IP of an address
    literal. `route` is the ignored source route, for logging only.
    """

    local_part: str
    domain: str
    literal: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    route: tuple[str, ...] = ()

    @property
    def is_postmaster(self) -> bool:
        """True for the bare `<Postmaster>` forward-path (RFC 5321 4.1.1.3)."""
        return self.domain == ""

    @property
    def is_ascii(self) -> bool:
        return self.local_part.isascii() and self.domain.isascii()

    @property
    def has_routing_characters(self) -> bool:
        """The local part holds `%`, `!` or `@`: old relay syntaxes (RFC 2505 2.6.3).

        They mean nothing to us, but a hub may want to refuse them outright.
        """
        return any(ch in self.local_part for ch in "%!@")

    @property
    def domain_key(self) -> str:
        """The domain in a form fit for comparison: lowercase, literals canonical."""
        if isinstance(self.literal, ipaddress.IPv6Address):
            return f"[ipv6:{self.literal.compressed}]"
        if self.literal is not None:
            return f"[{self.literal}]"
        return self.domain.lower()

    @property
    def quoted_local_part(self) -> str:
        """The local part as it goes on the wire: a Dot-string, else a Quoted-string."""
        if _is_dot_string(self.local_part):
            return self.local_part
        escaped = self.local_part.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    def __str__(self) -> str:
        if self.is_postmaster:
            return self.local_part
        return f"{self.quoted_local_part}@{self.domain}"

    def path(self) -> str:
        """The forward-path form `<mailbox>`, without any source route."""
        return f"<{self}>"


def _run_end(run: re.Pattern[str], text: str, pos: int) -> int:
    """Where a run of `run`'s characters starting at `pos` ends."""
    match = run.match(text, pos)
    assert match is not None  # a starred class matches the empty string
    return match.end()


def _is_dot_string(text: str) -> bool:
    if _ASCII_DOT_STRING.fullmatch(text):
        return True
    if not text or text.isascii():
        return False
    return all(atom and all(_is_atext(ch, True) for ch in atom) for atom in text.split("."))


def _is_atext(ch: str, utf8: bool) -> bool:
    # RFC 6531 3.3: atext =/ UTF8-non-ascii. We also refuse non-printable code points
    # (C1 controls, U+2028/2029, ...): they have no business in an address.
    return ch in _ATEXT or (utf8 and ord(ch) > 127 and ch.isprintable())


def _is_qtext(ch: str, utf8: bool) -> bool:
    # RFC 5321 4.1.2 qtextSMTP = %d32-33 / %d35-91 / %d93-126; RFC 6531 adds UTF-8.
    code = ord(ch)
    if code < 128:
        return 32 <= code <= 126 and ch not in '"\\'
    return utf8 and ch.isprintable()


def _check_label(label: str, utf8: bool) -> None:
    if not label:
        raise AddressError("empty domain label")
    if label.isascii():
        # RFC 5321 4.1.2: sub-domain = Let-dig [Ldh-str]; Ldh-str ends in Let-dig.
        if label[0] not in _LET_DIG or label[-1] not in _LET_DIG:
            raise AddressError("domain label must start and end with a letter or digit")
        if not _ASCII_LDH.fullmatch(label):
            raise AddressError("invalid character in domain")
        if len(label) > MAX_DOMAIN_LABEL:
            raise AddressError("domain label too long", too_long=True)
        return
    # RFC 6531 3.3: sub-domain =/ U-label (RFC 5890).
    # todo(rfc 5891 5.4): full IDNA2008 validity (contextual rules, bidi) needs a table
    # the stdlib lacks; we accept letters and digits in NFC and the A-label length limit.
    if not utf8:
        raise AddressError("non-ASCII domain without SMTPUTF8")
    if label[0] == "-" or label[-1] == "-":
        raise AddressError("domain label must not start or end with a hyphen")
    for ch in label:
        if ch.isascii():
            if ch not in _LDH:
                raise AddressError("invalid character in domain")
        elif not ch.isalnum() and not _is_combining(ch):
            raise AddressError("invalid character in domain")
    try:
        a_label = "xn--" + label.lower().encode("punycode").decode("ascii")
    except UnicodeError as exc:
        raise AddressError("domain label cannot be encoded") from exc
    if len(a_label) > MAX_DOMAIN_LABEL:
        raise AddressError("domain label too long", too_long=True)


def _is_combining(ch: str) -> bool:
    return unicodedata.category(ch) in ("Mn", "Mc")


def _check_domain(domain: str, utf8: bool) -> None:
    if len(domain.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError("domain too long", too_long=True)
    if not domain.isascii() and not unicodedata.is_normalized("NFC", domain):
        raise AddressError("domain is not in Unicode normalization form C")
    labels = domain.split(".")
    for label in labels:
        _check_label(label, utf8)
    # RFC 1123 2.1 / RFC 3696 2: a top-level label is never all-numeric, so a dotted
    # quad without brackets is not a domain (it must be written [192.0.2.1]).
    if labels[-1].isdigit():
        raise AddressError("all-numeric top-level label: use an address literal")


def is_valid_domain(text: str, *, utf8: bool = False) -> bool:
    """True when `text` is an RFC 5321 Domain (with U-labels when `utf8`)."""
    try:
        _check_domain(text, utf8)
    except AddressError:
        return False
    return True


class _Scanner:
    """A cursor over one path; every method consumes exactly what it accepts."""

    def __init__(self, text: str, utf8: bool) -> None:
        self.text = text
        self.pos = 0
        self.utf8 = utf8

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, ch: str, what: str) -> None:
        if self.peek() != ch:
            raise AddressError(f"expected {what}")
        self.pos += 1

    def domain(self) -> str:
        start = self.pos
        self.pos = _run_end(_ASCII_DOMAIN_RUN, self.text, self.pos)
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in _LDH or ch == "." or (ord(ch) > 127 and ch.isprintable()):
                self.pos += 1
            else:
                break
        domain = self.text[start : self.pos]
        if not domain:
            raise AddressError("missing domain")
        _check_domain(domain, self.utf8)
        return domain

    def address_literal(self) -> tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address]:
        start = self.pos
        self.expect("[", "[")
        end = self.text.find("]", self.pos)
        if end < 0:
            raise AddressError("unterminated address literal")
        content = self.text[self.pos : end]
        self.pos = end + 1
        literal: ipaddress.IPv4Address | ipaddress.IPv6Address
        if content[:5].lower() == "ipv6:":
            # RFC 5321 4.1.3: IPv6-address-literal = "IPv6:" IPv6-addr. No zone ids.
            if "%" in content:
                raise AddressError("zone identifiers are not allowed in address literals")
            try:
                literal = ipaddress.IPv6Address(content[5:])
            except ValueError as exc:
                raise AddressError("invalid IPv6 address literal") from exc
        elif ":" in content:
            # RFC 5321 4.1.3 General-address-literal: only registered tags; IANA has
            # registered none besides IPv6, so any other tag is unusable.
            raise AddressError("unsupported address literal tag")
        else:
            try:
                # Strict dotted quad: no leading zeros (octal readings), no short forms.
                literal = ipaddress.IPv4Address(content)
            except ValueError as exc:
                raise AddressError("invalid IPv4 address literal") from exc
        if self.pos - start > MAX_DOMAIN:
            raise AddressError("address literal too long", too_long=True)
        return self.text[start : self.pos], literal

    def local_part(self) -> tuple[str, int]:
        """Return (semantic local part, octets as sent)."""
        start = self.pos
        if self.peek() == '"':
            self.pos += 1
            chars: list[str] = []
            while True:
                ch = self.peek()
                if ch == "":
                    raise AddressError("unterminated quoted local part")
                self.pos += 1
                if ch == '"':
                    break
                if ch == "\\":
                    # RFC 5321 4.1.2: quoted-pairSMTP = %d92 %d32-126
                    escaped = self.peek()
                    if escaped == "" or not (32 <= ord(escaped) <= 126):
                        raise AddressError("invalid quoted pair in local part")
                    self.pos += 1
                    chars.append(escaped)
                elif _is_qtext(ch, self.utf8):
                    chars.append(ch)
                else:
                    raise AddressError("invalid character in quoted local part")
            value = "".join(chars)
        else:
            self.pos = _run_end(_ASCII_DOT_ATEXT_RUN, self.text, self.pos)
            while self.pos < len(self.text) and (
                _is_atext(self.text[self.pos], self.utf8) or self.text[self.pos] == "."
            ):
                self.pos += 1
            value = self.text[start : self.pos]
            # RFC 5321 4.1.2: Dot-string = Atom *("." Atom): no empty atoms.
            if not value or any(not atom for atom in value.split(".")):
                raise AddressError("invalid local part")
        if not value:
            raise AddressError("empty local part")
        sent = len(self.text[start : self.pos].encode("utf-8"))
        if sent > MAX_LOCAL_PART:
            raise AddressError("local part too long", too_long=True)
        return value, sent


def _parse_path(text: str, *, forward: bool, utf8: bool) -> tuple[Address | None, str]:
    simple = _SIMPLE_PATH.match(text)
    if simple is not None:
        # The common case, <dot-string@ldh.domain>, in one C match; the limits below are
        # the scanner's, and anything else (or over a limit) takes the scanner's path.
        local, domain = simple.group(1, 2)
        if (
            len(local) <= MAX_LOCAL_PART
            and len(domain) <= MAX_DOMAIN
            and simple.end() <= MAX_PATH
            and not domain.rpartition(".")[2].isdigit()
        ):
            return Address(local, domain), text[simple.end() :]
    scanner = _Scanner(text, utf8)
    scanner.expect("<", "'<' to open the path")
    if not forward and scanner.peek() == ">":
        return None, text[2:]  # RFC 5321 4.1.1.2: the null reverse-path "<>"
    route: list[str] = []
    if scanner.peek() == "@":
        # RFC 5321 4.1.2: A-d-l = At-domain *( "," At-domain ) ":" ; accepted, ignored.
        while True:
            scanner.expect("@", "'@' in source route")
            route.append(scanner.domain())
            if scanner.peek() == ",":
                scanner.pos += 1
                continue
            scanner.expect(":", "':' after source route")
            break
    local, _ = scanner.local_part()
    address: Address
    if scanner.peek() == "@":
        scanner.pos += 1
        if scanner.peek() == "[":
            domain, literal = scanner.address_literal()
            address = Address(local, domain, literal, tuple(route))
        else:
            address = Address(local, scanner.domain(), None, tuple(route))
    elif forward and not route and local.lower() == "postmaster" and text[1] != '"':
        address = Address(local, "")  # RFC 5321 4.1.1.3: RCPT TO:<Postmaster>
    else:
        raise AddressError("missing '@domain'")
    scanner.expect(">", "'>' to close the path")
    if len(text[: scanner.pos].encode("utf-8")) > MAX_PATH:
        raise AddressError("path too long", too_long=True)
    return address, text[scanner.pos :]


def parse_reverse_path(text: str, *, utf8: bool = False) -> tuple[Address | None, str]:
    """Parse `Reverse-path` at the start of `text` (RFC 5321 4.1.2).

    Returns the address (None for the null path `<>`) and the text after `>`.
    `utf8` allows RFC 6531 non-ASCII local parts and U-labels.
    """
    return _parse_path(text, forward=False, utf8=utf8)


def parse_forward_path(text: str, *, utf8: bool = False) -> tuple[Address, str]:
    """Parse `Forward-path` (or `<Postmaster>`) at the start of `text`."""
    address, rest = _parse_path(text, forward=True, utf8=utf8)
    assert address is not None  # a forward path is never null
    return address, rest


def parse_mailbox(text: str, *, utf8: bool = False) -> Address:
    """Parse a bare `Mailbox` (no angle brackets), e.g. the address inside ORCPT."""
    address, rest = _parse_path(f"<{text}>", forward=False, utf8=utf8)
    if address is None or rest or address.route:
        raise AddressError("not a mailbox")
    return address
