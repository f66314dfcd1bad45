"""Where the store's vocabulary meets IMAP's: names, flags, metadata and errors.

Everything that translates between :mod:`store` and the protocol types lives here, so the
session never spells a store type's field twice and the error mapping is one table
(STYLE rule 4):

* folder names: the store calls the Inbox ``Inbox`` and uses Unicode with ``/``; IMAP
  calls it ``INBOX`` (RFC 3501 5.1, case-insensitive) and the wire form is modified UTF-7
  or UTF-8 (done by :mod:`protocols.imap.names`);
* flags: the store's six system flags are IMAP's five plus ``$Forwarded`` (RFC 5550 keyword
  registry); every other keyword is kept as the client spelled it;
* metadata: ``store.mime.Envelope``/``Address``/``BodyPart`` map field for field onto
  :mod:`protocols.imap.model` and :class:`~protocols.imap.sections.PartSpan`;
* errors: :data:`ERROR_RESPONSES` maps each store error class onto a status, a response
  code (RFC 5530) and a text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from store import (
    Flag,
    FolderExists,
    FolderHasChildren,
    FolderNotFound,
    FolderProtected,
    InvalidFolderName,
    InvalidItem,
    InvalidKeyword,
    MailboxNotFound,
    MessageNotFound,
    PermanentFailure,
    QuotaExceeded,
    SpecialUse,
    StoreError,
    TemporaryFailure,
)
from store import mime as store_mime

from . import responses as r
from .model import Address, BodyStructure, Disposition, Envelope
from .responses import ResponseCode, Status
from .sections import PartSpan

__all__ = [
    "ERROR_RESPONSES",
    "IMAP_INBOX",
    "PERMANENT_FLAGS",
    "SPECIAL_USE_ATTRIBUTES",
    "SYSTEM_FLAGS",
    "body_structure",
    "envelope",
    "error_response",
    "flag_names",
    "imap_name",
    "part_spans",
    "split_flags",
    "store_name",
]

IMAP_INBOX: Final = "INBOX"
STORE_INBOX: Final = "Inbox"

# Store flag <-> IMAP flag. $Forwarded is the IANA-registered keyword (RFC 5550 7.3) that
# Thunderbird and Apple Mail set; the store keeps it as a system flag (maildir "P").
_FLAG_NAMES: Final[dict[Flag, str]] = {
    Flag.SEEN: "\\Seen",
    Flag.ANSWERED: "\\Answered",
    Flag.FLAGGED: "\\Flagged",
    Flag.DELETED: "\\Deleted",
    Flag.DRAFT: "\\Draft",
    Flag.FORWARDED: "$Forwarded",
}
_BY_NAME: Final[dict[str, Flag]] = {name.lower(): flag for flag, name in _FLAG_NAMES.items()}

SYSTEM_FLAGS: Final = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
# RFC 3501 7.1 PERMANENTFLAGS: "\*" says new keywords may be created.
PERMANENT_FLAGS: Final = (*SYSTEM_FLAGS, "$Forwarded", "\\*")

# RFC 6154 2: special-use attributes for the store's folder roles.
SPECIAL_USE_ATTRIBUTES: Final[dict[SpecialUse, str]] = {
    SpecialUse.SENT: "\\Sent",
    SpecialUse.DRAFTS: "\\Drafts",
    SpecialUse.TRASH: "\\Trash",
    SpecialUse.JUNK: "\\Junk",
    SpecialUse.ARCHIVE: "\\Archive",
}
ROLE_BY_ATTRIBUTE: Final[dict[str, SpecialUse]] = {
    attr.lower(): role for role, attr in SPECIAL_USE_ATTRIBUTES.items()
}

# Flag name lists per system-flag bit pattern are built once: FETCH FLAGS over a 100k
# folder then costs a dict lookup per message.
_FLAGSET_CACHE: dict[frozenset[Flag], tuple[str, ...]] = {}


# --- names ---------------------------------------------------------------------------------


def store_name(imap: str) -> str:
    """The store's name for an IMAP mailbox name (``INBOX/x`` is ``Inbox/x``)."""
    head, sep, rest = imap.partition("/")
    if head.upper() == IMAP_INBOX:
        return STORE_INBOX + sep + rest
    return imap


def imap_name(store: str) -> str:
    """The IMAP name for a store folder name (RFC 3501 5.1: INBOX in capitals)."""
    head, sep, rest = store.partition("/")
    if head == STORE_INBOX:
        return IMAP_INBOX + sep + rest
    return store


# --- flags ---------------------------------------------------------------------------------


def flag_names(flags: frozenset[Flag], keywords: Iterable[str] = ()) -> tuple[str, ...]:
    """IMAP flags of a message: system flags in a fixed order, then its keywords."""
    names = _FLAGSET_CACHE.get(flags)
    if names is None:
        names = tuple(_FLAG_NAMES[f] for f in Flag if f in flags)
        _FLAGSET_CACHE[flags] = names
    if keywords:
        return names + tuple(sorted(keywords))
    return names


def split_flags(names: Iterable[str]) -> tuple[frozenset[Flag], frozenset[str]]:
    """IMAP flags from STORE/APPEND as (store system flags, keywords).

    Keywords compare case-insensitively with the system flags' names, so ``$forwarded``
    is the store's FORWARDED flag.
    """
    flags: set[Flag] = set()
    keywords: set[str] = set()
    for name in names:
        flag = _BY_NAME.get(name.lower())
        if flag is not None:
            flags.add(flag)
        else:
            keywords.add(name)
    return frozenset(flags), frozenset(keywords)


# --- metadata ------------------------------------------------------------------------------


def _address(a: store_mime.Address) -> Address:
    return Address(name=a.name, route=a.route, mailbox=a.mailbox, host=a.host)


def _addresses(items: tuple[store_mime.Address, ...]) -> tuple[Address, ...]:
    return tuple(_address(a) for a in items)


def envelope(env: store_mime.Envelope) -> Envelope:
    """RFC 3501 7.4.2: an empty Sender/Reply-To renders as From (``None`` here)."""
    return Envelope(
        date=env.date,
        subject=env.subject,
        from_=_addresses(env.from_),
        sender=_addresses(env.sender) or None,
        reply_to=_addresses(env.reply_to) or None,
        to=_addresses(env.to),
        cc=_addresses(env.cc),
        bcc=_addresses(env.bcc),
        in_reply_to=env.in_reply_to,
        message_id=env.message_id,
    )


def body_structure(part: store_mime.BodyPart) -> BodyStructure:
    """The BODYSTRUCTURE tree of a store MIME tree (RFC 3501 7.4.2).

    The store already bounds MIME depth (its MAX_MIME_DEPTH); the walk stops at the same
    depth again so a damaged cache record cannot recurse further.
    """
    return _structure(part, 0)


def _structure(part: store_mime.BodyPart, depth: int) -> BodyStructure:
    disposition = (
        Disposition(type=part.disposition, params=tuple(part.disposition_params))
        if part.disposition
        else None
    )
    body: BodyStructure | None = None
    env: Envelope | None = None
    if part.message is not None and depth < 100:
        body = _structure(part.message, depth + 1)
        env = envelope(part.envelope) if part.envelope is not None else Envelope()
    return BodyStructure(
        type=part.type,
        subtype=part.subtype,
        params=tuple(part.params),
        id=part.content_id,
        description=part.description,
        encoding=_encoding(part.encoding),
        size=part.size,
        lines=part.lines,
        md5=part.md5,
        disposition=disposition,
        language=part.language or None,
        location=part.location,
        parts=tuple(_structure(p, depth + 1) for p in part.parts) if depth < 100 else (),
        envelope=env,
        body=body,
    )


_KNOWN_ENCODINGS: Final = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})


def _encoding(value: str | None) -> str:
    """body-fld-enc: the standard encodings in capitals (as Dovecot sends them), others as
    written; no header means 7BIT (RFC 2045 6.1)."""
    if value is None:
        return "7BIT"
    return value.upper() if value.lower() in _KNOWN_ENCODINGS else value


def part_spans(part: store_mime.BodyPart) -> PartSpan:
    """Where each MIME entity lies in the file (offsets from the store's metadata)."""
    return _span(part, 0)


def _span(part: store_mime.BodyPart, depth: int) -> PartSpan:
    message = _span(part.message, depth + 1) if part.message is not None and depth < 100 else None
    return PartSpan(
        header_start=part.header_start,
        body_start=part.body_start,
        end=part.end,
        content_type=f"{part.type}/{part.subtype}".lower(),
        encoding=(part.encoding or "7bit").lower(),
        parts=tuple(_span(p, depth + 1) for p in part.parts) if depth < 100 else (),
        message=message,
    )


# --- errors --------------------------------------------------------------------------------

# Store error -> (status, response code, text). The first matching class in method
# resolution order wins, so the most specific entry applies (STYLE rule 4: one table).
ERROR_RESPONSES: Final[dict[type[StoreError], tuple[Status, ResponseCode | None, str]]] = {
    InvalidFolderName: (Status.NO, r.CANNOT, "invalid mailbox name"),
    FolderNotFound: (Status.NO, r.NONEXISTENT, "no such mailbox"),
    FolderExists: (Status.NO, r.ALREADYEXISTS, "mailbox already exists"),
    FolderHasChildren: (Status.NO, r.HASCHILDREN, "mailbox has children"),
    FolderProtected: (Status.NO, r.CANNOT, "this mailbox cannot be deleted or renamed"),
    MessageNotFound: (Status.NO, r.EXPUNGEISSUED, "message was expunged"),
    InvalidKeyword: (Status.NO, r.CANNOT, "keyword cannot be stored"),
    InvalidItem: (Status.NO, r.CANNOT, "not a message for this folder"),
    MailboxNotFound: (Status.NO, r.UNAVAILABLE, "mailbox unavailable"),
    QuotaExceeded: (Status.NO, r.OVERQUOTA, "quota exceeded"),
    PermanentFailure: (Status.NO, r.CANNOT, "operation not possible"),
    TemporaryFailure: (Status.NO, r.UNAVAILABLE, "temporary failure, try again later"),
    StoreError: (Status.NO, r.SERVERBUG, "internal error"),
}


def error_response(
    tag: str, exc: StoreError, *, override: ResponseCode | None = None, detail: bool = True
) -> bytes:
    """The tagged reply for a store error. ``override`` replaces the code (COPY/APPEND to
    a missing mailbox say ``[TRYCREATE]``, RFC 3501 6.3.11)."""
    for cls in type(exc).__mro__:
        entry = ERROR_RESPONSES.get(cls)
        if entry is not None:
            status, code, text = entry
            break
    else:  # pragma: no cover - StoreError is in every mro
        status, code, text = Status.NO, r.SERVERBUG, "internal error"
    if detail and isinstance(exc, InvalidFolderName | FolderProtected | InvalidKeyword):
        text = f"{text}: {exc}"
    return r.tagged(tag, status, text, override or code)
