"""MoveItems (MS-ASCMD 2.2.1.12): move messages between folders.

Statuses (2.2.3.177.9): 1 invalid source, 2 invalid destination, 3 success, 4 source and
destination are the same, 5 the move failed (e.g. the item is gone), 7 locked.
Each Move has its own status: a malformed SrcMsgId or a failing store is that item's 1 or
5, never an error for the whole reply after earlier moves were made.
The device's states of both folders record the move at once (checklist 1.10.1): its next
Sync sends neither a Delete in the source nor a second Add in the destination.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from store import Mailbox, MessageNotFound, StoreError
from store.flags import flags_to_bits

from ..context import CommandContext, CommandReply, Handler
from ..mail import item_token, parse_server_id, server_id
from ..wbxml import E, Element
from .common import MailServices, served_folder

log = logging.getLogger("mailhost.activesync")

MAX_MOVES: Final = 1000  # Move elements per request


class MoveStatus:
    INVALID_SOURCE = 1
    INVALID_DESTINATION = 2
    SUCCESS = 3
    SAME_FOLDER = 4
    FAILED = 5
    LOCKED = 7


@dataclass(frozen=True, slots=True)
class MoveRequest:
    source_id: str
    source_folder: str
    destination: str


@dataclass(frozen=True, slots=True)
class MoveResult:
    source_id: str
    status: int
    destination_id: str | None = None


def move_items(
    services: MailServices, mailbox_id: str, device_id: str, moves: list[MoveRequest]
) -> list[MoveResult]:
    """Blocking: perform the moves and record them in the device's states."""
    mailbox = services.mailbox(mailbox_id)
    results: list[MoveResult] = []
    for move in moves:
        try:
            results.append(_move_one(services, mailbox, mailbox_id, device_id, move))
        except (StoreError, OSError) as exc:
            # This item failed; the moves before it are made and reported as such.
            log.warning("eas: MoveItems %s failed: %s", move.source_id, exc)
            results.append(MoveResult(move.source_id, MoveStatus.FAILED))
    return results


def _move_one(
    services: MailServices, mailbox: Mailbox, mailbox_id: str, device_id: str, move: MoveRequest
) -> MoveResult:
    states = services.states
    parsed = parse_server_id(move.source_id)
    source_info = served_folder(mailbox, move.source_folder)
    if source_info is None or parsed is None or parsed[0] != move.source_folder:
        return MoveResult(move.source_id, MoveStatus.INVALID_SOURCE)
    dest_info = served_folder(mailbox, move.destination)
    if dest_info is None:
        return MoveResult(move.source_id, MoveStatus.INVALID_DESTINATION)
    if dest_info.id == source_info.id:
        return MoveResult(move.source_id, MoveStatus.SAME_FOLDER)
    source = mailbox.folder_by_id(source_info.id)
    dest = mailbox.folder_by_id(dest_info.id)
    record = states.load_collection(mailbox_id, device_id, source_info.id)
    uid = record.current.real_uid(parsed[1]) if record is not None else parsed[1]
    try:
        moved = source.move_to([uid], dest)
    except MessageNotFound:
        moved = None
    if moved is None or not moved.mapping:
        return MoveResult(move.source_id, MoveStatus.INVALID_SOURCE)
    new_uid = moved.mapping[0][1]
    with states.editing_props(mailbox_id) as props:
        props.move(source_info.id, uid, dest_info.id, new_uid)
        snapshot = dest.snapshot()
        token = None
        if new_uid in snapshot:
            token = item_token(
                flags_to_bits(snapshot.flags(new_uid)),
                snapshot.keywords(new_uid),
                props,
                dest_info.id,
                new_uid,
            )
    if record is not None:
        for state in (record.current, record.previous):
            if state is not None:
                state.view.pop(uid, None)
                state.aliases.pop(uid, None)
        states.save_collection(mailbox_id, device_id, record)
    dest_record = states.load_collection(mailbox_id, device_id, dest_info.id)
    if dest_record is not None and token is not None:
        for state in (dest_record.current, dest_record.previous):
            if state is not None:
                state.view[new_uid] = token
        states.save_collection(mailbox_id, device_id, dest_record)
    return MoveResult(move.source_id, MoveStatus.SUCCESS, server_id(dest_info.id, new_uid))


def move_items_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        doc = ctx.document
        if doc is None or doc.qname != "Move:MoveItems":
            return CommandReply.wbxml(E("Move:MoveItems", E("Move:Status", 5)))
        moves = []
        for element in doc.findall("Move")[:MAX_MOVES]:
            moves.append(
                MoveRequest(
                    (element.text_of("SrcMsgId") or "").strip(),
                    (element.text_of("SrcFldId") or "").strip(),
                    (element.text_of("DstFldId") or "").strip(),
                )
            )
        async with services.push.device_lock(ctx.account.mailbox_id, ctx.device.device_id):
            results = await services.run(
                move_items, services, ctx.account.mailbox_id, ctx.device.device_id, moves
            )
        # MS-ASCMD 2.2.3.153.3: Response/{SrcMsgId, Status, DstMsgId}.
        responses: list[Element] = [
            E(
                "Move:Response",
                E("Move:SrcMsgId", r.source_id),
                E("Move:Status", r.status),
                E("Move:DstMsgId", r.destination_id) if r.destination_id else None,
            )
            for r in results
        ]
        return CommandReply.wbxml(E("Move:MoveItems", responses))

    return handle
