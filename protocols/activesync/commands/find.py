"""Find (MS-ASCMD 2.2.1.4, 16.1): a lighter search returning list properties only.

`Find/{SearchId, ExecuteSearch/{MailBoxSearchCriterion | GALSearchCriterion}/{Query,
Options/{Range, DeepTraversal, Picture}}}`. Options is a child of the criterion (Exchange
answers 2 when it is not). Results page 25 at a time (Range beyond is capped).
Status (2.2.3.177.4): 1 success, 2 invalid request, 3 FolderSync required.
"""

from __future__ import annotations

import logging
from typing import Final

from ..context import CommandContext, CommandReply, Handler
from ..mail import DRAFT_BIT, IMPORTANCE, SEEN_BIT, display_names, eas_datetime, format_addresses
from ..wbxml import E, Element
from .common import MailServices
from .search import GAL_LIMIT, MailQuery, SearchError, parse_range, search_mailbox

log = logging.getLogger("mailhost.activesync")

FIND_PAGE: Final = 25  # results per Find response
MAX_SEARCH_ID: Final = 64


class FindStatus:
    SUCCESS = 1
    INVALID_REQUEST = 2
    FOLDER_SYNC_REQUIRED = 3


def find_mail(
    services: MailServices, mailbox_id: str, query: MailQuery, window: tuple[int, int]
) -> tuple[list[Element], int]:
    """Blocking: (Result elements, total)."""
    mailbox = services.mailbox(mailbox_id)
    hits = search_mailbox(mailbox, query)
    page = hits[window[0] : window[1] + 1]
    results = []
    for hit in page:
        meta = hit.metadata
        env = meta.envelope
        results.append(
            E(
                "Find:Result",
                E("AirSync:Class", "Email"),
                E("AirSync:ServerId", f"{hit.folder_id}:{hit.uid}"),
                E("AirSync:CollectionId", hit.folder_id),
                E(
                    "Find:Properties",
                    E("Email:Subject", meta.subject),
                    E("Email:DateReceived", eas_datetime(hit.date)),
                    E("Email:DisplayTo", display_names(env.to)),
                    E("Find:DisplayCc", display_names(env.cc)),
                    E("Find:DisplayBcc", display_names(env.bcc)),
                    E("Email:Importance", IMPORTANCE.get(meta.importance.value, 1)),
                    E("Email:Read", 1 if hit.flag_bits & SEEN_BIT else 0),
                    E("Email2:IsDraft", 1 if hit.flag_bits & DRAFT_BIT else 0),
                    E("Find:Preview", meta.preview),
                    E("Find:HasAttachments", 1 if meta.has_attachments else 0),
                    E("Email:From", format_addresses(env.from_)),
                ),
            )
        )
    return results, len(hits)


def _reply(status: int, *content: Element | None) -> CommandReply:
    return CommandReply.wbxml(E("Find:Find", E("Find:Status", status), content))


def find_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        doc = ctx.document
        if doc is None or doc.qname != "Find:Find":
            return _reply(FindStatus.INVALID_REQUEST)
        search_id = (doc.text_of("SearchId") or "").strip()
        execute = doc.find("ExecuteSearch")
        if not search_id or len(search_id) > MAX_SEARCH_ID or execute is None:
            return _reply(FindStatus.INVALID_REQUEST)
        if execute.find("Options") is not None:
            return _reply(FindStatus.INVALID_REQUEST)  # Options belongs to the criterion
        mail = execute.find("MailBoxSearchCriterion")
        gal = execute.find("GALSearchCriterion")
        criterion = mail or gal
        if criterion is None or (mail is not None and gal is not None):
            return _reply(FindStatus.INVALID_REQUEST)
        options = criterion.find("Options")
        query = criterion.find("Query")
        try:
            window = parse_range(
                options.text_of("Range") if options is not None else None, max_size=FIND_PAGE
            )
            if query is None:
                raise SearchError(FindStatus.INVALID_REQUEST, "no Query")
            free = (query.text_of("FreeText") or "").strip()
        except SearchError:
            return _reply(FindStatus.INVALID_REQUEST)
        if gal is not None:
            lookup = services.recipients
            entries = (
                list(await services.run(lookup.resolve, free, limit=GAL_LIMIT))
                if lookup is not None and free
                else []
            )
            page = entries[window[0] : window[1] + 1]
            results = [
                E(
                    "Find:Result",
                    E(
                        "Find:Properties",
                        E("GAL:DisplayName", r.display_name or r.address),
                        E("GAL:EmailAddress", r.address),
                        E("GAL:Alias", r.address.partition("@")[0]),
                    ),
                )
                for r in page
            ]
            return _answer("GAL", results, window, len(page), len(entries))
        collections = tuple(
            c.text.strip() for c in query.findall("AirSync:CollectionId") if c.text.strip()
        )
        klass = query.text_of("AirSync:Class")
        if klass is not None and klass.strip() not in ("Email", ""):
            return _reply(FindStatus.INVALID_REQUEST)
        deep = options is not None and options.find("DeepTraversal") is not None
        mail_query = MailQuery(
            collections=collections,
            words=tuple(w.casefold() for w in free.split()),
            deep=deep,
        )
        try:
            results, total = await services.run(
                find_mail, services, ctx.account.mailbox_id, mail_query, window
            )
        except SearchError as exc:
            log.info("eas: Find from %s: %s", ctx.account.address, exc)
            status = FindStatus.FOLDER_SYNC_REQUIRED if collections else FindStatus.INVALID_REQUEST
            return _reply(status)
        return _answer("Mailbox", results, window, len(results), total)

    return handle


def _answer(
    store: str, results: list[Element], window: tuple[int, int], count: int, total: int
) -> CommandReply:
    shown = f"{window[0]}-{window[0] + count - 1}" if count else "0-0"
    return _reply(
        FindStatus.SUCCESS,
        E(
            "Find:Response",
            E("ItemOperations:Store", store),
            E("Find:Status", FindStatus.SUCCESS),
            results,
            E("Find:Range", shown),
            E("Find:Total", total),
        ),
    )
