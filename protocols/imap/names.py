"""Mailbox names as the protocol sees them: decoding from the wire and flagging danger.

The parser decodes every mailbox argument into a :class:`MailboxName`. A name that is
malformed (bad modified UTF-7) or dangerous as a path (``..`` segments, NUL, control
characters, a leading separator or ``~``, over-long) still produces a command, with
``problem`` set, so the session can answer NO with a reason; the store must refuse such a
name as well and never trust this flag alone (defence in depth, Dovecot CVE-2006-2414,
CVE-2007-2231: ``..`` in mailbox names).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from .limits import MAX_MAILBOX_COMPONENT_BYTES, MAX_MAILBOX_NAME_BYTES
from .mutf7 import MUTF7Error, decode_mutf7, encode_mutf7

__all__ = [
    "DEFAULT_SEPARATOR",
    "MailboxName",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "mailbox_name_problem",
]

# The hierarchy separator the server shows to clients; the store maps names onto disk.
DEFAULT_SEPARATOR = "/"


@dataclass(frozen=True, slots=True)
class MailboxName:
    """A decoded mailbox name.

    ``name`` is Unicode with ``INBOX`` canonicalised (RFC 3501 5.1: case-insensitive);
    ``raw`` is the argument exactly as sent; ``problem`` is ``None`` for a usable name or a
    short reason the store must refuse it for.
    """

    name: str
    raw: bytes
    problem: str | None = None

    @property
    def is_inbox(self) -> bool:
        return self.name == "INBOX"


def mailbox_name_problem(name: str, separator: str = DEFAULT_SEPARATOR) -> str | None:
    """Why ``name`` is unsafe to map onto a file system path, or ``None``."""
    if not name:
        return "empty mailbox name"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_NAME_BYTES:
        return "mailbox name too long"
    for ch in name:
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cs"):  # NUL, CR, LF, DEL, other C0/C1 controls, lone surrogates
            return "control character in mailbox name"
    if "\\" in name:
        return "backslash in mailbox name"
    if name.startswith(("~", separator, "/")):
        return "mailbox name must not start with a separator or '~'"
    for component in name.split(separator):
        if component == "":
            return "empty hierarchy level in mailbox name"
        if component in (".", ".."):
            return "'.' or '..' as a hierarchy level"
        if "/" in component:
            # only reachable when the separator is not "/": a path separator inside a level
            return "path characters in mailbox name"
        if len(component.encode("utf-8", "surrogatepass")) > MAX_MAILBOX_COMPONENT_BYTES:
            return "hierarchy level too long"
    return None


def decode_mailbox_name(
    raw: bytes, *, utf8: bool = False, separator: str = DEFAULT_SEPARATOR
) -> MailboxName:
    """Decode a mailbox argument: UTF-8 after ENABLE UTF8=ACCEPT (RFC 6855 3), else mUTF-7.

    RFC 6855 3 also lets a UTF8=ACCEPT client keep sending modified UTF-7; a name that is
    pure ASCII is decoded as modified UTF-7 in both modes, so ``&-`` stays ``&``.
    """
    try:
        if not utf8:
            name = decode_mutf7(raw)
        elif raw.isascii():
            try:
                name = decode_mutf7(raw)
            except MUTF7Error:
                name = raw.decode("ascii")  # a plain "&" sent in UTF-8 mode
        else:
            name = raw.decode("utf-8")
    except (MUTF7Error, UnicodeDecodeError):
        return MailboxName(
            name=raw.decode("utf-8", "replace"), raw=raw, problem="invalid mailbox name encoding"
        )
    if name.upper() == "INBOX":
        name = "INBOX"
    return MailboxName(name=name, raw=raw, problem=mailbox_name_problem(name, separator))


def encode_mailbox_name(name: str, *, utf8: bool = False) -> bytes:
    """The wire form of a mailbox name for responses (RFC 6855 3 when ``utf8``)."""
    if utf8:
        return name.encode("utf-8")
    return encode_mutf7(name)
