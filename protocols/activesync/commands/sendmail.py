"""SendMail, SmartReply, SmartForward (MS-ASCMD 2.2.1.16, 2.2.1.18, 2.2.1.19).

Forms:
- 12.1 (and any request whose Content-Type is message/rfc822): the body is the raw
  message; `SaveInSent=T` saves a copy; SmartReply/SmartForward name the source in the
  query (`ItemId` + `CollectionId`, or `LongId`) and always get the original appended.
- 14.0+: WBXML `ComposeMail:SendMail|SmartReply|SmartForward/{ClientId, AccountId,
  SaveInSentItems, Source/{FolderId, ItemId | LongId | InstanceId}, ReplaceMime, Mime}`.

Behaviour: a ClientId sent before gets 118 MessagePreviouslySent (nothing is sent twice).
The ClientId is recorded after the submission succeeded, and a failure to record it is
logged but still answered as success: recording it first would turn a crash or failure
between recording and submitting into a message the device believes sent (118) but that
never left, and answering an error after the message was queued makes the device resend
it. A duplicate then needs two failures at once (the record and the answer are lost).
Without ReplaceMime the original is appended (reply) or appended with its attachments
(forward); the source item gets its reply/forward status (\\Answered or $Forwarded in the
store, the exact verb and time in the item properties: Email2 LastVerbExecuted 1 reply,
2 reply all, 3 forward). Success is an empty 200 (MS-ASCMD 2.2.1.16.2). Failures at 14.0+
are a `Status` with a common code (MS-ASCMD 2.2.2): 107 InvalidMIME, 110 server error,
111 retry later, 116 recipient unresolved, 118 previously sent, 119 no recipients, 120
submission failed, 122 too large, 130 access denied (From is not the user's), 150 source
item not found. At 12.1 a failure is HTTP 500 (the version has no status in the body).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Final

from store import Flag, FlagMode, Folder, MessageNotFound, SpecialUse, StoreError
from store.errors import FolderNotFound, QuotaExceeded
from transport.submission import Outcome, SubmissionResult

from ..context import CommandContext, CommandReply, Handler
from ..mail import VERB_FORWARD, VERB_REPLY, VERB_REPLY_ALL, eas_datetime, parse_server_id
from ..request import ProtocolVersion
from ..status import CommonStatus
from ..wbxml import E
from .common import MailServices, served_folder
from .compose import ComposeError, complete_reply

log = logging.getLogger("mailhost.activesync")

MIME_CONTENT_TYPE: Final = "message/rfc822"
MAX_CLIENT_ID: Final = 64  # MS-ASCMD 2.2.3.28.1: ClientId is at most 64 characters
PROTOCOL: Final = "ActiveSync"

OUTCOME_STATUS: Final[dict[Outcome, CommonStatus]] = {
    Outcome.INVALID_MESSAGE: CommonStatus.INVALID_MIME,
    Outcome.NO_RECIPIENTS: CommonStatus.MESSAGE_HAS_NO_RECIPIENT,
    Outcome.RECIPIENT_UNRESOLVED: CommonStatus.MESSAGE_RECIPIENT_UNRESOLVED,
    Outcome.NO_ROUTE: CommonStatus.MAIL_SUBMISSION_FAILED,
    Outcome.SENDER_NOT_OWNED: CommonStatus.ACCESS_DENIED,
    Outcome.TOO_LARGE: CommonStatus.ATTACHMENT_IS_TOO_LARGE,
    Outcome.TOO_MANY_RECIPIENTS: CommonStatus.MAIL_SUBMISSION_FAILED,
    Outcome.LOOP: CommonStatus.MAIL_SUBMISSION_FAILED,
    Outcome.TEMPORARY: CommonStatus.SERVER_ERROR_RETRY_LATER,
    Outcome.FAILED: CommonStatus.MAIL_SUBMISSION_FAILED,
}


@dataclass(frozen=True, slots=True)
class Compose:
    """One SendMail/SmartReply/SmartForward request, either form."""

    command: str
    mime: bytes
    client_id: str | None
    save_in_sent: bool
    replace_mime: bool
    source: tuple[str, int] | None  # (folder id, uid)
    source_given: bool


class ComposeRequestError(ValueError):
    pass


def parse_compose(ctx: CommandContext) -> Compose:
    command = ctx.command
    raw_form = ctx.version <= ProtocolVersion.V12_1 or ctx.content_type == MIME_CONTENT_TYPE
    if raw_form or ctx.document is None:
        if not raw_form and ctx.document is None and not ctx.body:
            raise ComposeRequestError("no body")
        if not ctx.body:
            raise ComposeRequestError("no message")
        query = ctx.query
        source = None
        given = command != "SendMail"
        if given:
            text = query.long_id or (
                f"{query.collection_id}:{query.item_id}"
                if query.collection_id and query.item_id
                else None
            )
            source = _source(text, query.collection_id)
        return Compose(command, ctx.body, None, query.save_in_sent, False, source, given)
    doc = ctx.document
    if doc.qname != f"ComposeMail:{command}":
        raise ComposeRequestError(f"not a {command} document")
    mime = doc.bytes_of("Mime")
    if not mime:
        raise ComposeRequestError("no Mime")
    client_id = doc.text_of("ClientId")
    if client_id is not None:
        client_id = client_id.strip()
        if not client_id or len(client_id) > MAX_CLIENT_ID:
            raise ComposeRequestError("ClientId is empty or too long")
    source = None
    given = command != "SendMail"
    if given:
        folder_id = doc.text_of("Source/FolderId")
        item_id = doc.text_of("Source/ItemId")
        long_id = doc.text_of("Source/LongId")
        text = long_id or (item_id if item_id and ":" in item_id else None)
        if text is None and folder_id and item_id:
            text = f"{folder_id.strip()}:{item_id.strip()}"
        source = _source(text, folder_id)
    return Compose(
        command=command,
        mime=mime,
        client_id=client_id,
        save_in_sent=doc.find("SaveInSentItems") is not None,
        replace_mime=doc.find("ReplaceMime") is not None,
        source=source,
        source_given=given,
    )


def _source(text: str | None, folder_hint: str | None) -> tuple[str, int] | None:
    if not text:
        return None
    parsed = parse_server_id(text)
    if parsed is None:
        return None
    if folder_hint and folder_hint.strip() and parsed[0] != folder_hint.strip():
        return None
    return parsed


@dataclass(frozen=True, slots=True)
class SendOutcome:
    status: CommonStatus | None  # None: sent
    result: SubmissionResult | None = None


def send(
    services: MailServices,
    request: Compose,
    *,
    mailbox_id: str,
    addresses: tuple[str, ...],
    peer: str,
    now: float,
) -> SendOutcome:
    """Blocking: compose, submit, save to Sent Items, mark the source item."""
    submitter = services.submitter
    assert submitter is not None
    mailbox = services.mailbox(mailbox_id)
    message = request.mime
    source_folder = None
    if request.source_given:
        if request.source is None or served_folder(mailbox, request.source[0]) is None:
            return SendOutcome(CommonStatus.ITEM_NOT_FOUND)
        source_folder = mailbox.folder_by_id(request.source[0])
        if not request.replace_mime:
            try:
                original = source_folder.read_message(request.source[1])
            except MessageNotFound:
                return SendOutcome(CommonStatus.ITEM_NOT_FOUND)
            try:
                message = complete_reply(
                    message, original, forward=request.command == "SmartForward"
                )
            except ComposeError as exc:
                log.info("eas: %s by %s: %s", request.command, addresses[0], exc)
                return SendOutcome(CommonStatus.INVALID_MIME)
    result = submitter.submit(message, addresses=addresses, peer=peer, protocol=PROTOCOL, now=now)
    if not result.sent:
        return SendOutcome(OUTCOME_STATUS.get(result.outcome, CommonStatus.SERVER_ERROR), result)
    assert result.prepared is not None
    if request.save_in_sent:
        try:
            sent_folder = mailbox.folder_by_role(SpecialUse.SENT)
            sent_folder.append(result.prepared.saved, flags=[Flag.SEEN])
        except (StoreError, FolderNotFound, QuotaExceeded) as exc:
            # The message went out; losing the Sent copy must not make the phone resend.
            log.warning("eas: saving %s's sent message failed: %s", addresses[0], exc)
    if source_folder is not None and request.source is not None:
        _mark_source(services, mailbox_id, source_folder, request, result)
    return SendOutcome(None, result)


def _mark_source(
    services: MailServices,
    mailbox_id: str,
    folder: Folder,
    request: Compose,
    result: SubmissionResult,
) -> None:
    assert request.source is not None
    uid = request.source[1]
    forward = request.command == "SmartForward"
    prepared = result.prepared
    if forward:
        verb = VERB_FORWARD
    elif prepared is not None and len(prepared.recipients) > 1:
        verb = VERB_REPLY_ALL
    else:
        verb = VERB_REPLY
    try:
        folder.store_flags([uid], FlagMode.ADD, [Flag.FORWARDED if forward else Flag.ANSWERED])
        with services.states.editing_props(mailbox_id) as props:
            values = dict(props.get(folder.id, uid) or {})
            values["verb"] = verb
            values["verb_time"] = eas_datetime(dt.datetime.now(dt.UTC))
            props.set(folder.id, uid, values)
    except StoreError as exc:
        log.info("eas: cannot mark %s as answered: %s", request.source, exc)


def compose_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        legacy = ctx.version <= ProtocolVersion.V12_1
        try:
            request = parse_compose(ctx)
        except ComposeRequestError as exc:
            log.info("eas: %s from %s: %s", ctx.command, ctx.account.address, exc)
            return _failure(ctx, CommonStatus.INVALID_CONTENT, legacy)
        mailbox_id, device_id = ctx.account.mailbox_id, ctx.device.device_id
        states = services.states
        async with services.push.device_lock(mailbox_id, device_id):
            device_state = await services.run(states.load_device, mailbox_id, device_id)
            if request.client_id is not None and request.client_id in device_state.sent:
                return _failure(ctx, CommonStatus.MESSAGE_PREVIOUSLY_SENT, legacy)
            addresses = tuple(dict.fromkeys((ctx.account.address, *ctx.account.addresses)))
            outcome = await services.run(
                send,
                services,
                request,
                mailbox_id=mailbox_id,
                addresses=addresses,
                peer=ctx.peer,
                now=ctx.clock(),
            )
            if outcome.status is None and request.client_id is not None:
                device_state.remember_sent(request.client_id)
                try:
                    await services.run(states.save_device, mailbox_id, device_id, device_state)
                except Exception:
                    # The message is queued: an error now would make the device send it
                    # again (a duplicate for every recipient). Without the record, only a
                    # resend after a lost answer can duplicate it, which is rarer.
                    log.exception(
                        "eas: %s by %s was sent, but its ClientId %r was not recorded",
                        ctx.command,
                        ctx.account.address,
                        request.client_id,
                    )
        if outcome.status is not None:
            reason = outcome.result.reason if outcome.result is not None else ""
            log.info(
                "eas: %s by %s failed: %d %s",
                ctx.command,
                ctx.account.address,
                int(outcome.status),
                reason,
            )
            return _failure(ctx, outcome.status, legacy)
        return CommandReply.empty()

    return handle


def _failure(ctx: CommandContext, status: CommonStatus, legacy: bool) -> CommandReply:
    if legacy:
        return CommandReply(status=500)
    return CommandReply.wbxml(E(f"ComposeMail:{ctx.command}", E("ComposeMail:Status", status)))
