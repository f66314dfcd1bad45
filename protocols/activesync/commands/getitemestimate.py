"""GetItemEstimate (MS-ASCMD 2.2.1.9): how many changes a Sync of each collection would
bring, from the device's state at the given SyncKey (no state changes).

Status (2.2.3.177.7): 1 success, 2 invalid collection, 3 sync state not primed (key 0),
4 invalid SyncKey.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from store import FolderNotFound

from ..context import CommandContext, CommandReply, Handler
from ..numbers import NumberError, parse_uint
from ..policy import Policy
from ..wbxml import E, Element
from .common import MailServices, served_folder
from .items import effective_filter, pending_changes

log = logging.getLogger("mailhost.activesync")

MAX_ESTIMATE_COLLECTIONS: Final = 300
MAX_FILTER_TYPE: Final = 8  # MS-ASCMD 2.2.3.70.1 FilterType: 0-8


class EstimateStatus:
    SUCCESS = 1
    INVALID_COLLECTION = 2
    NOT_PRIMED = 3
    INVALID_SYNC_KEY = 4


def estimate(
    services: MailServices,
    mailbox_id: str,
    device_id: str,
    collection_id: str,
    key: str,
    filter_type: int | None,
    policy: Policy,
) -> tuple[int, int]:
    """Blocking: (status, estimate)."""
    mailbox = services.mailbox(mailbox_id)
    info = served_folder(mailbox, collection_id)
    if info is None:
        return EstimateStatus.INVALID_COLLECTION, 0
    if key == "0":
        return EstimateStatus.NOT_PRIMED, 0
    record = services.states.load_collection(mailbox_id, device_id, collection_id)
    state = record.match(key) if record is not None else None
    if state is None:
        return EstimateStatus.INVALID_SYNC_KEY, 0
    if filter_type is not None:
        state.filter_type = effective_filter(filter_type, policy)
    try:
        folder = mailbox.folder_by_id(collection_id)
    except FolderNotFound:
        return EstimateStatus.INVALID_COLLECTION, 0
    props = services.states.load_props(mailbox_id)
    pending = pending_changes(folder, state, props, time.time(), services.tokens)
    return EstimateStatus.SUCCESS, pending.difference.count


def get_item_estimate_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        doc = ctx.document
        if doc is None or doc.qname != "GetItemEstimate:GetItemEstimate":
            return _top(2)
        collections = doc.findall("Collections/Collection")
        if not collections or len(collections) > MAX_ESTIMATE_COLLECTIONS:
            return _top(2)
        responses: list[Element] = []
        for collection in collections:
            collection_id = (collection.text_of("CollectionId") or "").strip()
            key = (collection.text_of("AirSync:SyncKey") or "").strip()
            filter_type = None
            filter_text = collection.text_of("AirSync:Options/FilterType")
            if filter_text is not None and filter_text.strip():
                try:
                    filter_type = parse_uint(filter_text, what="FilterType")
                except NumberError:
                    filter_type = -1
            if not collection_id or not key or not 0 <= (filter_type or 0) <= MAX_FILTER_TYPE:
                # MS-ASCMD 2.2.3.177.7: 2 for a collection that cannot be estimated as asked.
                status, count = EstimateStatus.INVALID_COLLECTION, 0
            else:
                status, count = await services.run(
                    estimate,
                    services,
                    ctx.account.mailbox_id,
                    ctx.device.device_id,
                    collection_id,
                    key,
                    filter_type,
                    ctx.policy,
                )
            # MS-ASCMD 2.2.3.153.2: Response/{Status, Collection/{CollectionId, Estimate}}.
            responses.append(
                E(
                    "GetItemEstimate:Response",
                    E("GetItemEstimate:Status", status),
                    E(
                        "GetItemEstimate:Collection",
                        E("GetItemEstimate:CollectionId", collection_id),
                        E("GetItemEstimate:Estimate", count)
                        if status == EstimateStatus.SUCCESS
                        else None,
                    ),
                )
            )
        return CommandReply.wbxml(E("GetItemEstimate:GetItemEstimate", responses))

    return handle


def _top(status: int) -> CommandReply:
    return CommandReply.wbxml(
        E("GetItemEstimate:GetItemEstimate", E("GetItemEstimate:Status", status))
    )
