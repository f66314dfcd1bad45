"""The ResolveRecipients command (MS-ASCMD 2.2.1.15): turn what the user typed in To into
directory entries.

The directory is reached through `RecipientLookup` (blocking; run in a worker thread).
Certificates are not published (each recipient answers "no valid certificate"), free/busy
comes with the calendar (each requested slot says "no data", MergedFreeBusy digit 4) and
pictures are not stored (status 173).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import trio

from ..context import CommandContext, CommandReply, Handler
from ..numbers import parse_uint
from ..request import ProtocolVersion
from ..status import CertificateRetrievalStatus, CommonStatus, ResolveRecipientsStatus
from ..wbxml import E, Element, WbxmlError

log = logging.getLogger("mailhost.activesync")

MAX_TO: Final = 100  # MS-ASCMD 2.2.3.181.2: at most 100 To elements
MAX_TO_LENGTH: Final = 256  # MS-ASCMD 6.35 (ResolveRecipientsResponse.xsd): To maxLength
DEFAULT_MAX_AMBIGUOUS: Final = 19  # MS-ASCMD 2.2.3.103: the server's default
MAX_AMBIGUOUS: Final = 100  # our ceiling, whatever the client asks
CERTIFICATE_RETRIEVAL_NONE: Final = 1  # MS-ASCMD 2.2.3.24: 1 none, 2 full, 3 mini
FREE_BUSY_SLOT: Final = dt.timedelta(minutes=30)  # MS-ASCMD 2.2.3.101: one digit per 30 min
MAX_FREE_BUSY_SLOTS: Final = 48 * 42  # six weeks; Exchange limits the window to 42 days
NO_DATA: Final = "4"  # MergedFreeBusy digit: no data
TYPE_GAL: Final = 1  # MS-ASCMD 2.2.3.179.2: 1 = GAL, 2 = contact


@dataclass(frozen=True, slots=True)
class Recipient:
    display_name: str
    address: str


class RecipientLookup(Protocol):
    """Directory search for what a user typed: a full address, a name, a prefix. Blocking."""

    def resolve(self, query: str, *, limit: int) -> Sequence[Recipient]: ...


class ResolveRecipientsError(ValueError):
    """Malformed request: global status 5."""


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    to: tuple[str, ...]
    max_ambiguous: int
    certificates: bool
    availability: tuple[dt.datetime, dt.datetime] | None
    picture: bool


def parse_resolve_recipients(document: Element | None) -> ResolveRequest:
    try:
        return _parse(document)
    except WbxmlError as exc:  # e.g. opaque bytes that are not UTF-8 where text belongs
        raise ResolveRecipientsError(str(exc)) from None


def _parse(document: Element | None) -> ResolveRequest:
    if document is None or document.qname != "ResolveRecipients:ResolveRecipients":
        raise ResolveRecipientsError("not a ResolveRecipients document")
    to = tuple(e.text.strip() for e in document.findall("To"))
    if not to or len(to) > MAX_TO or any(not t or len(t) > MAX_TO_LENGTH for t in to):
        raise ResolveRecipientsError("want 1 to 100 To elements of up to 256 characters")
    options = document.find("Options")
    max_ambiguous = DEFAULT_MAX_AMBIGUOUS
    certificates = False
    availability = None
    picture = False
    if options is not None:
        text = options.text_of("MaxAmbiguousRecipients")
        if text is not None:
            count = parse_uint(
                text, error=ResolveRecipientsError, what="MaxAmbiguousRecipients"
            )  # MS-ASCMD 2.2.3.177.11: Status 5, protocol error
            max_ambiguous = min(count, MAX_AMBIGUOUS)
        retrieval = options.text_of("CertificateRetrieval")
        certificates = retrieval is not None and retrieval.strip() not in (
            "",
            str(CERTIFICATE_RETRIEVAL_NONE),
        )
        window = options.find("Availability")
        if window is not None:
            availability = (
                _datetime(window.text_of("StartTime")),
                _datetime(window.text_of("EndTime")),
            )
            if availability[1] <= availability[0]:
                raise ResolveRecipientsError("Availability EndTime is not after StartTime")
        picture = options.find("Picture") is not None
    return ResolveRequest(to, max_ambiguous, certificates, availability, picture)


def _datetime(text: str | None) -> dt.datetime:
    """MS-ASDTYPE 2.3: 2024-01-02T03:04:05.000Z."""
    if not text:
        raise ResolveRecipientsError("Availability needs StartTime and EndTime")
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ResolveRecipientsError(f"bad date-time {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def resolve_recipients_handler(lookup: RecipientLookup) -> Handler:
    async def handle_resolve_recipients(ctx: CommandContext) -> CommandReply:
        try:
            request = parse_resolve_recipients(ctx.document)
        except ResolveRecipientsError as exc:
            log.info("eas resolverecipients: %s: %s", ctx.account.address, exc)
            return _global(ResolveRecipientsStatus.PROTOCOL_ERROR)

        def search_all() -> list[Sequence[Recipient]]:
            # One more than shown, to tell "ambiguous" from "ambiguous, partial".
            return [lookup.resolve(query, limit=request.max_ambiguous + 1) for query in request.to]

        try:
            found = await trio.to_thread.run_sync(search_all)
        except Exception:
            log.exception("eas resolverecipients: directory lookup failed")
            return _global(ResolveRecipientsStatus.SERVER_ERROR)
        responses = [
            _response(query, list(matches), request, ctx.version)
            for query, matches in zip(request.to, found, strict=True)
        ]
        return CommandReply.wbxml(
            E(
                "ResolveRecipients:ResolveRecipients",
                E("ResolveRecipients:Status", ResolveRecipientsStatus.SUCCESS),
                responses,
            )
        )

    return handle_resolve_recipients


def _global(status: ResolveRecipientsStatus) -> CommandReply:
    return CommandReply.wbxml(
        E("ResolveRecipients:ResolveRecipients", E("ResolveRecipients:Status", status))
    )


def _response(
    query: str, matches: list[Recipient], request: ResolveRequest, version: ProtocolVersion
) -> Element:
    if not matches:
        status = ResolveRecipientsStatus.UNRESOLVED
    elif len(matches) == 1:
        status = ResolveRecipientsStatus.SUCCESS
    elif len(matches) <= request.max_ambiguous:
        status = ResolveRecipientsStatus.AMBIGUOUS
    else:
        status = ResolveRecipientsStatus.AMBIGUOUS_PARTIAL
    shown = matches[: max(request.max_ambiguous, 1)] if matches else []
    # MS-ASCMD 6.35: To, Status, RecipientCount, Recipient*.
    return E(
        "ResolveRecipients:Response",
        E("ResolveRecipients:To", query),
        E("ResolveRecipients:Status", status),
        E("ResolveRecipients:RecipientCount", len(shown)),
        (_recipient(r, request, version) for r in shown),
    )


def _recipient(recipient: Recipient, request: ResolveRequest, version: ProtocolVersion) -> Element:
    # MS-ASCMD 6.35: Type, DisplayName, EmailAddress, Availability, Certificates, Picture.
    availability = None
    if request.availability is not None and version >= ProtocolVersion.V14_0:
        start, end = request.availability
        slots = min(-(-(end - start) // FREE_BUSY_SLOT), MAX_FREE_BUSY_SLOTS)
        availability = E(
            "ResolveRecipients:Availability",
            E("ResolveRecipients:Status", CommonStatus.SUCCESS),
            E("ResolveRecipients:MergedFreeBusy", NO_DATA * slots),
        )
    certificates = None
    if request.certificates:
        certificates = E(
            "ResolveRecipients:Certificates",
            E("ResolveRecipients:Status", CertificateRetrievalStatus.NO_VALID_CERTIFICATE),
            E("ResolveRecipients:CertificateCount", 0),
        )
    picture = None
    if request.picture and version >= ProtocolVersion.V14_1:
        picture = E(
            "ResolveRecipients:Picture", E("ResolveRecipients:Status", CommonStatus.NO_PICTURE)
        )
    return E(
        "ResolveRecipients:Recipient",
        E("ResolveRecipients:Type", TYPE_GAL),
        E("ResolveRecipients:DisplayName", recipient.display_name or recipient.address),
        E("ResolveRecipients:EmailAddress", recipient.address),
        availability,
        certificates,
        picture,
    )
