"""The protocol-neutral message metadata IMAP renders: envelopes, MIME trees, threads.

The store computes this metadata (at delivery, cached in its index); the IMAP session
maps the store's records onto these types, and :mod:`protocols.imap.responses` renders
them. Keeping our own input types means the renderer never imports the store.

Strings are as they appear in the message header, not decoded: RFC 3501 7.4.2 wants
ENVELOPE and BODYSTRUCTURE strings raw (encoded-words left as they are). A store that
reads 8-bit headers should decode them as UTF-8 (with replacement) before filling these.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "BodyStructure", "Disposition", "Envelope", "ThreadNode"]


@dataclass(frozen=True, slots=True)
class Address:
    """One ENVELOPE address (RFC 3501 7.4.2): ``(name adl mailbox host)``.

    Group syntax: the group start is ``Address(mailbox=<group name>, host=None)`` and the
    group end is ``Address()`` (all ``None``).
    """

    name: str | None = None  # display name, raw (encoded-words kept)
    route: str | None = None  # obsolete source route ("adl"), almost always None
    mailbox: str | None = None  # local part, or the group name for a group start
    host: str | None = None  # domain; None for group markers

    @classmethod
    def group_start(cls, group: str) -> Address:
        return cls(mailbox=group)

    @classmethod
    def group_end(cls) -> Address:
        return cls()


@dataclass(frozen=True, slots=True)
class Envelope:
    """ENVELOPE fields. ``sender``/``reply_to`` ``None`` (absent) or empty render as
    ``from_`` (RFC 3501 7.4.2); empty address lists render as NIL."""

    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] | None = None
    reply_to: tuple[Address, ...] | None = None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class Disposition:
    """Content-Disposition: ``("attachment" ("filename" "a.pdf"))``."""

    type: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class BodyStructure:
    """One MIME entity of the BODYSTRUCTURE tree.

    * multipart: ``type="multipart"``, ``parts`` holds the children (extension data uses
      ``params``, ``disposition``, ``language``, ``location``).
    * message/rfc822 (and message/global): ``envelope`` and ``body`` describe the
      encapsulated message; ``lines`` is required.
    * text/*: ``lines`` is required.

    ``size`` is the body's size in octets as transferred (RFC 3501 body-fld-octets);
    ``lines`` its line count.
    """

    type: str = "text"
    subtype: str = "plain"
    params: tuple[tuple[str, str], ...] = ()
    id: str | None = None
    description: str | None = None
    encoding: str = "7BIT"
    size: int = 0
    lines: int | None = None
    md5: str | None = None
    disposition: Disposition | None = None
    language: tuple[str, ...] | None = None
    location: str | None = None
    parts: tuple[BodyStructure, ...] = ()
    envelope: Envelope | None = None
    body: BodyStructure | None = None

    @property
    def is_multipart(self) -> bool:
        return self.type.lower() == "multipart"

    @property
    def is_message(self) -> bool:
        return self.type.lower() == "message" and self.subtype.lower() in ("rfc822", "global")


@dataclass(frozen=True, slots=True)
class ThreadNode:
    """A THREAD tree node (RFC 5256 4). ``message`` is None for a dummy parent."""

    message: int | None
    children: tuple[ThreadNode, ...] = ()
