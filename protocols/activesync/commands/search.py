"""Search (MS-ASCMD 2.2.1.16): the Mailbox store and the GAL.

Mailbox queries are `Query/And/{airsync:Class, airsync:CollectionId, FreeText,
GreaterThan|LessThan/{email:DateReceived, Value}, ConversationId}` (or one of those
alone). FreeText matches every word, case-insensitively, against the subject, the sender
and recipients (names and addresses), the attachment names and the message preview (the
first 255 characters of the text; the store keeps no full-text index yet, so words
further down a long body are not found). Results are newest first; each has a LongId
(the item's ServerId) that ItemOperations, SmartReply and SmartForward accept.
Range and Total are always sent, also for no results (checklist 1.10.6).

GAL queries search the directory (the ResolveRecipients lookup).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from store import Folder, FolderInfo, Mailbox, MessageMetadata
from store.flags import flags_to_bits

from ..context import CommandContext, CommandReply, Handler
from ..mail import (
    ItemFacts,
    RenderOptions,
    conversation_id,
    email_application_data,
    parse_eas_datetime,
    policy_render_limits,
    server_id,
)
from ..numbers import parse_uint
from ..wbxml import E, Element
from .common import MailServices, served_folder, served_folders
from .items import reader
from .resolverecipients import Recipient
from .sync import SyncRequestError, parse_options

log = logging.getLogger("mailhost.activesync")

# MS-ASCMD 2.2.3.143.4: Range "m-n"; the server's default is 0-99 and it may cap the size.
DEFAULT_RANGE: Final = (0, 99)
MAX_RANGE_SIZE: Final = 100
MAX_FREE_TEXT: Final = 256
# Messages looked at by one mailbox search (a guard on huge mailboxes).
MAX_SCANNED: Final = 200_000
GAL_LIMIT: Final = 100


class SearchStatus:
    SUCCESS = 1
    INVALID_REQUEST = 2
    SERVER_ERROR = 3
    TOO_COMPLEX = 8
    END_OF_RANGE = 12


class SearchError(ValueError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class MailQuery:
    collections: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    after: dt.datetime | None = None
    before: dt.datetime | None = None
    conversation: bytes | None = None
    deep: bool = False


@dataclass(slots=True)
class Hit:
    folder_id: str
    uid: int
    date: dt.datetime
    metadata: MessageMetadata
    flag_bits: int
    keywords: frozenset[str]
    size: int


def parse_range(text: str | None, *, max_size: int = MAX_RANGE_SIZE) -> tuple[int, int]:
    if text is None:
        return 0, max_size - 1
    first, sep, last = text.strip().partition("-")
    if not sep:
        raise _bad_range(text)
    start = parse_uint(first, error=_bad_range, what="Range start")  # Status 2
    end = parse_uint(last, error=_bad_range, what="Range end")
    if start > end:
        raise _bad_range(text)
    return start, min(end, start + max_size - 1)


def _bad_range(reason: str) -> SearchError:
    return SearchError(SearchStatus.INVALID_REQUEST, f"bad Range: {reason[:60]}")


def _date_condition(element: Element) -> dt.datetime:
    if element.find("Email:DateReceived") is None:
        raise SearchError(SearchStatus.INVALID_REQUEST, "only DateReceived can be compared")
    value = element.text_of("Value")
    when = parse_eas_datetime(value or "")
    if when is None:
        raise SearchError(SearchStatus.INVALID_REQUEST, "Value is not a date")
    return when


def parse_mail_query(query: Element, *, deep: bool) -> MailQuery:
    conditions: list[Element] = []
    for child in query.children:
        if child.tag == "And":
            conditions.extend(child.children)
        elif child.tag == "Or":
            raise SearchError(SearchStatus.TOO_COMPLEX, "Or is not supported")
        else:
            conditions.append(child)
    collections: list[str] = []
    words: list[str] = []
    after = before = None
    conversation = None
    for cond in conditions:
        if cond.qname == "AirSync:Class":
            if cond.text.strip() not in ("Email", ""):
                raise SearchError(SearchStatus.INVALID_REQUEST, "only Email is searched")
        elif cond.qname == "AirSync:CollectionId":
            collections.append(cond.text.strip())
        elif cond.tag == "FreeText":
            text = cond.text.strip()
            if len(text) > MAX_FREE_TEXT:
                raise SearchError(SearchStatus.TOO_COMPLEX, "FreeText is too long")
            words += [w.casefold() for w in text.split()]
        elif cond.tag == "GreaterThan":
            after = _date_condition(cond)
        elif cond.tag == "LessThan":
            before = _date_condition(cond)
        elif cond.tag == "ConversationId":
            conversation = cond.data
        elif cond.tag in ("And", "Or", "EqualTo"):
            raise SearchError(SearchStatus.TOO_COMPLEX, f"nested {cond.tag}")
        else:
            raise SearchError(SearchStatus.INVALID_REQUEST, f"unexpected {cond.qname}")
    return MailQuery(tuple(collections), tuple(words), after, before, conversation, deep)


def _haystack(meta: MessageMetadata) -> str:
    env = meta.envelope
    parts = [meta.subject, meta.preview]
    for address in (*env.from_, *env.to, *env.cc):
        parts += [address.name or "", address.addr_spec or ""]
    parts += [a.filename or "" for a in meta.attachments]
    return " ".join(parts).casefold()


def _folders(mailbox: Mailbox, query: MailQuery) -> list[FolderInfo]:
    served = served_folders(mailbox)
    if not query.collections:
        return served
    chosen: dict[str, FolderInfo] = {}
    for collection_id in query.collections:
        info = served_folder(mailbox, collection_id)
        if info is None:
            raise SearchError(SearchStatus.INVALID_REQUEST, "unknown CollectionId")
        chosen[info.id] = info
        if query.deep:
            prefix = info.name + "/"
            for sub in served:
                if sub.name.startswith(prefix):
                    chosen[sub.id] = sub
    return list(chosen.values())


def search_mailbox(mailbox: Mailbox, query: MailQuery) -> list[Hit]:
    """Blocking: every matching message, newest first."""
    hits: list[Hit] = []
    scanned = 0
    conversation = query.conversation.hex() if query.conversation else None
    for info in _folders(mailbox, query):
        folder = mailbox.folder_by_id(info.id)
        snapshot = folder.snapshot()
        candidates = []
        for summary in snapshot:
            if query.after is not None and summary.internal_date <= query.after:
                continue
            if query.before is not None and summary.internal_date >= query.before:
                continue
            candidates.append(summary)
        scanned += len(candidates)
        if scanned > MAX_SCANNED:
            raise SearchError(SearchStatus.TOO_COMPLEX, "too many messages to search")
        metadata = folder.metadata(s.uid for s in candidates)
        for summary in candidates:
            meta = metadata.get(summary.uid)
            if meta is None:
                continue
            if conversation is not None and meta.thread_id[:32] != conversation:
                continue
            if query.words:
                hay = _haystack(meta)
                if not all(word in hay for word in query.words):
                    continue
            hits.append(
                Hit(
                    info.id,
                    summary.uid,
                    summary.internal_date,
                    meta,
                    flags_to_bits(summary.flags),
                    summary.keywords,
                    summary.size,
                )
            )
    hits.sort(key=lambda h: (h.date, h.uid), reverse=True)
    return hits


def hit_facts(services: MailServices, mailbox_id: str, hit: Hit) -> ItemFacts:
    props = services.states.load_props(mailbox_id)
    return ItemFacts(
        hit.folder_id,
        hit.uid,
        hit.metadata,
        hit.flag_bits,
        hit.keywords,
        hit.date,
        hit.size,
        props.get(hit.folder_id, hit.uid),
    )


@dataclass(slots=True)
class MailboxAnswer:
    status: int
    results: list[Element] = field(default_factory=list)
    range: tuple[int, int] | None = None
    total: int = 0


def mailbox_search(
    services: MailServices,
    mailbox_id: str,
    query: MailQuery,
    window: tuple[int, int],
    render: RenderOptions,
) -> MailboxAnswer:
    """Blocking: the Search Mailbox results with properties, for the range asked."""
    mailbox = services.mailbox(mailbox_id)
    hits = search_mailbox(mailbox, query)
    total = len(hits)
    start, end = window
    page = hits[start : end + 1]
    results = []
    for hit in page:
        folder: Folder = mailbox.folder_by_id(hit.folder_id)
        facts = hit_facts(services, mailbox_id, hit)
        data = email_application_data(facts, render, reader(folder, hit.uid))
        results.append(
            E(
                "Search:Result",
                E("AirSync:Class", "Email"),
                E("Search:LongId", server_id(hit.folder_id, hit.uid)),
                E("AirSync:CollectionId", hit.folder_id),
                E("Search:Properties", data),
            )
        )
    shown = (start, start + len(page) - 1) if page else (0, 0)
    return MailboxAnswer(SearchStatus.SUCCESS, results, shown, total)


def _split_name(display: str) -> tuple[str, str]:
    pieces = display.split()
    if not pieces:
        return "", ""
    if len(pieces) == 1:
        return pieces[0], ""
    return pieces[0], " ".join(pieces[1:])


def gal_results(entries: Iterable[Recipient], *, picture: bool) -> Iterator[Element]:
    for entry in entries:
        first, last = _split_name(entry.display_name)
        local = entry.address.partition("@")[0]
        yield E(
            "Search:Result",
            E(
                "Search:Properties",
                E("GAL:DisplayName", entry.display_name or entry.address),
                E("GAL:Alias", local),
                E("GAL:FirstName", first or local),  # Nokia needs FirstName (checklist 1.10.6)
                E("GAL:LastName", last) if last else None,
                E("GAL:EmailAddress", entry.address),
                E("GAL:Picture", E("GAL:Status", 173)) if picture else None,  # NoPicture
            ),
        )


def _store_reply(
    status: int, results: list[Element], window: tuple[int, int] | None, total: int | None
) -> CommandReply:
    # MS-ASCMD 2.2.3.153.6 / 2.2.3.177.16: Search/{Status, Response/Store/{Status, Result*,
    # Range, Total}}.
    if not results and status == SearchStatus.SUCCESS:
        results = [E("Search:Result")]
    return CommandReply.wbxml(
        E(
            "Search:Search",
            E("Search:Status", SearchStatus.SUCCESS),
            E(
                "Search:Response",
                E(
                    "Search:Store",
                    E("Search:Status", status),
                    results,
                    E("Search:Range", f"{window[0]}-{window[1]}") if window else None,
                    E("Search:Total", total) if total is not None else None,
                ),
            ),
        )
    )


def search_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        doc = ctx.document
        store = doc.find("Store") if doc is not None else None
        if doc is None or doc.qname != "Search:Search" or store is None:
            return CommandReply.wbxml(E("Search:Search", E("Search:Status", 2)))
        name = (store.text_of("Name") or "").strip().lower()
        options = store.find("Options")
        try:
            window = parse_range(options.text_of("Range") if options is not None else None)
            query = store.find("Query")
            if query is None:
                raise SearchError(SearchStatus.INVALID_REQUEST, "no Query")
            if name == "gal":
                return await _gal(services, query.text.strip(), window, options)
            if name != "mailbox":
                raise SearchError(SearchStatus.INVALID_REQUEST, f"store {name!r} not served")
            deep = options is not None and options.find("DeepTraversal") is not None
            mail_query = parse_mail_query(query, deep=deep)
            parsed = parse_options(options) if options is not None else None
        except SearchError as exc:
            log.info("eas: Search from %s: %s", ctx.account.address, exc)
            return _store_reply(exc.status, [], None, None)
        except SyncRequestError as exc:
            log.info("eas: Search from %s: %s", ctx.account.address, exc)
            return _store_reply(SearchStatus.INVALID_REQUEST, [], None, None)
        render = RenderOptions(
            version=ctx.version,
            body_preferences=parsed.body_preferences if parsed else (),
            mime_support=parsed.mime_support if parsed else 0,
            **policy_render_limits(ctx.policy),
        )
        try:
            answer = await services.run(
                mailbox_search, services, ctx.account.mailbox_id, mail_query, window, render
            )
        except SearchError as exc:
            return _store_reply(exc.status, [], None, None)
        return _store_reply(answer.status, answer.results, answer.range, answer.total)

    async def _gal(
        services: MailServices, text: str, window: tuple[int, int], options: Element | None
    ) -> CommandReply:
        lookup = services.recipients
        if lookup is None or not text:
            return _store_reply(SearchStatus.SUCCESS, [], (0, 0), 0)
        entries = list(await services.run(lookup.resolve, text, limit=GAL_LIMIT))
        page = entries[window[0] : window[1] + 1]
        picture = options is not None and options.find("Picture") is not None
        results = list(gal_results(page, picture=picture))
        shown = (window[0], window[0] + len(page) - 1) if page else (0, 0)
        return _store_reply(SearchStatus.SUCCESS, results, shown, len(entries))

    return handle


__all__ = ["MailQuery", "conversation_id", "search_handler", "search_mailbox"]
