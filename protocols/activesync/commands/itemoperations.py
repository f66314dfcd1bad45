"""ItemOperations (MS-ASCMD 2.2.1.10): Fetch (an item by CollectionId+ServerId or by
LongId, an attachment by FileReference, with byte ranges), EmptyFolderContents, and Move
of a conversation (MS-ASCON). Also GetAttachment (2.2.1.7), 12.1's attachment download.

Multipart (MS-ASCMD 2.2.1.10.1, asked for with MS-ASAcceptMultiPart: T or the base64
query's option bit): the binary data leaves the WBXML and travels as parts after it; the
WBXML names each by its Part index. Layout: PartsCount (int32 LE), then per part an
(offset, length) pair (int32 LE each, from the start of the body), then the parts; part 0
is the WBXML response.

Fetch statuses (2.2.3.177.8): 1 success, 2 protocol error, 3 server error, 6 not found,
8 invalid byte range, 9 unknown store, 11 too large (over MAX_FETCH_BYTES, or past the
response's MAX_ITEMOPERATIONS_RESPONSE_BYTES), 15 invalid attachment id, 16 blocked.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import struct
from dataclasses import dataclass
from typing import Final

from store import Attachment, FolderNotFound, MessageNotFound, StoreError
from store.mime import BodyPart

from ..context import MULTIPART_CONTENT_TYPE, CommandContext, CommandReply, Handler
from ..mail import (
    Reader,
    RenderOptions,
    email_application_data,
    parse_file_reference,
    parse_server_id,
    policy_render_limits,
)
from ..numbers import NumberError, parse_uint
from ..wbxml import E, Element, encode
from .common import MailServices, served_folder, served_folders
from .items import facts_for, reader, trash_of
from .sync import SyncRequestError, parse_options

log = logging.getLogger("mailhost.activesync")

MAX_OPERATIONS: Final = 100  # Fetch/EmptyFolderContents/Move elements per request
# Attachment bytes sent inline (base64 in WBXML) or as parts in one response; a larger
# attachment must be fetched in Ranges. Exchange's default MaxRequestLength is ~ 30 MB.
MAX_FETCH_BYTES: Final = 64 * 1024 * 1024
# The data (attachment bytes, item bodies) of all the fetches of one response together.
# MAX_FETCH_BYTES bounds one fetch only: 100 Fetch elements naming one 30 MB attachment
# would otherwise build 3 GB in memory. A fetch past the budget gets Status 11, "the
# requested data size is too large" (MS-ASCMD 2.2.3.177.8, item scope), and the device
# asks for it again on its own or in Ranges. Equal to MAX_FETCH_BYTES, so one fetch of
# the largest size still fits; counted before base64 (inline data is a third larger).
MAX_ITEMOPERATIONS_RESPONSE_BYTES: Final = MAX_FETCH_BYTES
_RANGE_SEPARATOR: Final = "-"
# Digits of a Range bound: ten reach 9.9 GB, past any message this server stores.
RANGE_DIGITS: Final = 10


class ItemOpsStatus:
    SUCCESS = 1
    PROTOCOL_ERROR = 2
    SERVER_ERROR = 3
    DOCUMENT_NOT_FOUND = 6
    INVALID_RANGE = 8
    UNKNOWN_STORE = 9
    TOO_LARGE = 11
    INVALID_ATTACHMENT = 15
    ACCESS_DENIED = 16  # MS-ASCMD 2.2.3.177.7: access to the resource is denied


@dataclass(slots=True)
class ResponseBudget:
    """What is left of MAX_ITEMOPERATIONS_RESPONSE_BYTES for the rest of a response."""

    left: int

    def take(self, size: int) -> bool:
        """Count `size` bytes of data against the budget; False (nothing counted) if they
        do not fit."""
        if size > self.left:
            return False
        self.left -= size
        return True


@dataclass(slots=True)
class _Parts:
    """Binary parts of a multipart response (part 0, the WBXML, is added at the end)."""

    enabled: bool
    data: list[bytes]

    def add(self, blob: bytes) -> int:
        self.data.append(blob)
        return len(self.data)  # part numbers start at 1; 0 is the WBXML


def multipart_body(wbxml: bytes, parts: list[bytes]) -> bytes:
    """MS-ASCMD 2.2.1.10.1.1 MultiPartResponse."""
    count = 1 + len(parts)
    header_size = 4 + 8 * count
    offsets = []
    position = header_size
    for blob in (wbxml, *parts):
        offsets.append((position, len(blob)))
        position += len(blob)
    head = struct.pack("<i", count) + b"".join(struct.pack("<ii", o, n) for o, n in offsets)
    return head + wbxml + b"".join(parts)


def parse_range(text: str | None, total: int) -> tuple[int, int] | None:
    """(start, end inclusive) of "m-n" within `total` bytes; None if invalid."""
    if text is None:
        return (0, total - 1) if total else (0, -1)
    start_text, sep, end_text = text.strip().partition(_RANGE_SEPARATOR)
    if not sep:
        return None
    try:  # MS-ASCMD 2.2.3.143.2: "m-n", zero-based; anything else is Status 8
        start = parse_uint(start_text, max_digits=RANGE_DIGITS, what="Range start")
        end = parse_uint(end_text, max_digits=RANGE_DIGITS, what="Range end")
    except NumberError:
        return None
    if start > end or (total and start >= total):
        return None
    return start, min(end, total - 1)


def attachment_bytes(read: Reader, part: BodyPart) -> bytes:
    """The decoded content of an attachment part (an embedded message as it is)."""
    raw = read(part.body_start, part.size)
    encoding = (part.encoding or "").lower()
    if part.type == "message" or encoding not in ("base64", "quoted-printable"):
        return raw
    if encoding == "base64":
        compact = b"".join(raw.split())
        compact += b"=" * (-len(compact) % 4)
        try:
            return base64.b64decode(compact)
        except ValueError:
            return b""
    return binascii.a2b_qp(raw)


def load_attachment(
    services: MailServices, mailbox_id: str, reference: str
) -> tuple[Attachment, bytes] | None:
    """Blocking: the attachment a FileReference names and its decoded content, or None
    when the reference names no attachment of a message in a served folder."""
    parsed = parse_file_reference(reference)
    if parsed is None:
        return None
    folder_id, uid, path = parsed
    mailbox = services.mailbox(mailbox_id)
    if served_folder(mailbox, folder_id) is None:
        return None
    folder = mailbox.folder_by_id(folder_id)
    meta = folder.metadata([uid]).get(uid)
    if meta is None:
        return None
    attachment = next((a for a in meta.attachments if a.part == path), None)
    part = meta.structure.part(path)
    if attachment is None or part is None:
        return None
    try:
        return attachment, attachment_bytes(reader(folder, uid), part)
    except MessageNotFound:
        return None


def get_attachment_handler(services: MailServices) -> Handler:
    """GetAttachment (MS-ASCMD 2.2.1.7), protocol 12.1 and before: the attachment named by
    the query's AttachmentName (a FileReference from Sync) as the raw response body, with
    its content type. 14.0 replaced it with ItemOperations Fetch. It has no status element:
    a failure is HTTP 500, as Exchange and grommunio-sync answer it; the mailbox policy
    (AttachmentsEnabled, MaxAttachmentSize, MS-ASPROV 2.2.2.3 and 2.2.2.30) holds here as
    in ItemOperations."""

    async def handle(ctx: CommandContext) -> CommandReply:
        reference = (ctx.query.attachment_name or "").strip()
        if not reference:
            return CommandReply(status=400)
        policy = ctx.policy
        if not policy.attachments_enabled:
            log.info("eas: GetAttachment refused by policy (user=%s)", ctx.account.address)
            return CommandReply(status=500)
        found = await services.run(load_attachment, services, ctx.account.mailbox_id, reference)
        if found is None:
            return CommandReply(status=500)
        attachment, content = found
        limit = policy.max_attachment_kb
        if limit is not None and len(content) > limit * 1024:
            log.info("eas: GetAttachment over MaxAttachmentSize (user=%s)", ctx.account.address)
            return CommandReply(status=500)
        return CommandReply(body=content, content_type=attachment.content_type)

    return handle


def fetch_attachment(
    services: MailServices,
    mailbox_id: str,
    reference: str,
    range_text: str | None,
    parts: _Parts,
    *,
    attachments_enabled: bool = True,
    max_attachment_bytes: int | None = None,
    budget: ResponseBudget | None = None,
) -> list[Element]:
    """Blocking: the Fetch response children for a FileReference. The mailbox policy is
    enforced here, whatever the device does with its EASProvisionDoc: no attachments
    when AttachmentsEnabled is 0, none above MaxAttachmentSize (MS-ASPROV 2.2.2.30)."""
    echo = E("AirSyncBase:FileReference", reference)
    if not attachments_enabled:
        return [E("ItemOperations:Status", ItemOpsStatus.ACCESS_DENIED), echo]
    if parse_file_reference(reference) is None:
        return [E("ItemOperations:Status", ItemOpsStatus.INVALID_ATTACHMENT), echo]
    if budget is not None and budget.left <= 0:
        return [E("ItemOperations:Status", ItemOpsStatus.TOO_LARGE), echo]  # nothing read
    found = load_attachment(services, mailbox_id, reference)
    if found is None:
        return [E("ItemOperations:Status", ItemOpsStatus.INVALID_ATTACHMENT), echo]
    attachment, content = found
    total = len(content)
    if max_attachment_bytes is not None and total > max_attachment_bytes:
        return [E("ItemOperations:Status", ItemOpsStatus.TOO_LARGE), echo]
    bounds = parse_range(range_text, total)
    if bounds is None:
        return [E("ItemOperations:Status", ItemOpsStatus.INVALID_RANGE), echo]
    chunk = content[bounds[0] : bounds[1] + 1]
    del content
    if len(chunk) > MAX_FETCH_BYTES or (budget is not None and not budget.take(len(chunk))):
        return [E("ItemOperations:Status", ItemOpsStatus.TOO_LARGE), echo]
    data = (
        E("ItemOperations:Part", parts.add(chunk))
        if parts.enabled
        else E("ItemOperations:Data", base64.b64encode(chunk).decode("ascii"))
    )
    ranged = range_text is not None
    return [
        E("ItemOperations:Status", ItemOpsStatus.SUCCESS),
        echo,
        E(
            "ItemOperations:Properties",
            E("AirSyncBase:ContentType", attachment.content_type),
            E("ItemOperations:Range", f"{bounds[0]}-{max(bounds[1], bounds[0])}")
            if ranged
            else None,
            E("ItemOperations:Total", total) if ranged else None,
            data,
        ),
    ]


def fetch_item(
    services: MailServices,
    mailbox_id: str,
    folder_id: str,
    uid: int,
    options: RenderOptions,
    parts: _Parts,
    budget: ResponseBudget | None = None,
) -> tuple[int, list[Element]]:
    """Blocking: (status, ApplicationData-like properties) of one e-mail."""
    if budget is not None and budget.left <= 0:
        return ItemOpsStatus.TOO_LARGE, []
    mailbox = services.mailbox(mailbox_id)
    if served_folder(mailbox, folder_id) is None:
        return ItemOpsStatus.DOCUMENT_NOT_FOUND, []
    folder = mailbox.folder_by_id(folder_id)
    snapshot = folder.snapshot()
    props = services.states.load_props(mailbox_id)
    facts = facts_for(folder, snapshot, [uid], props).get(uid)
    if facts is None:
        return ItemOpsStatus.DOCUMENT_NOT_FOUND, []
    try:
        data = email_application_data(facts, options, reader(folder, uid))
    except MessageNotFound:
        return ItemOpsStatus.DOCUMENT_NOT_FOUND, []
    if budget is not None and not budget.take(data_size(data)):
        return ItemOpsStatus.TOO_LARGE, []
    if parts.enabled:
        data = [_body_to_part(e, parts) for e in data]
    return ItemOpsStatus.SUCCESS, data


def data_size(elements: list[Element]) -> int:
    """The bytes of text and opaque values under `elements` (what the budget counts)."""
    return sum(len(node.value) for e in elements for node in e.iter() if node.value is not None)


def _body_to_part(element: Element, parts: _Parts) -> Element:
    if element.qname != "AirSyncBase:Body":
        return element
    children = []
    for child in element.children:
        if child.qname == "AirSyncBase:Data":
            children.append(E("ItemOperations:Part", parts.add(child.data)))
        else:
            children.append(child)
    return E("AirSyncBase:Body", children)


def empty_folder(services: MailServices, mailbox_id: str, folder_id: str, subfolders: bool) -> int:
    """Blocking: EmptyFolderContents (MS-ASCMD 2.2.3.56): remove every item (and the
    subfolders when asked)."""
    mailbox = services.mailbox(mailbox_id)
    info = served_folder(mailbox, folder_id)
    if info is None:
        return ItemOpsStatus.DOCUMENT_NOT_FOUND
    folder = mailbox.folder_by_id(folder_id)
    try:
        folder.expunge(list(folder.snapshot().uids))
        if subfolders:
            prefix = info.name + "/"
            for child in sorted(
                (f for f in served_folders(mailbox) if f.name.startswith(prefix)),
                key=lambda f: -f.name.count("/"),
            ):
                mailbox.delete_folder(child.name, recursive=True)
    except (StoreError, FolderNotFound) as exc:
        log.warning("eas: EmptyFolderContents of %s failed: %s", folder_id, exc)
        return ItemOpsStatus.SERVER_ERROR
    return ItemOpsStatus.SUCCESS


def move_conversation(
    services: MailServices, mailbox_id: str, conversation: bytes, destination: str
) -> int:
    """Blocking: move every message of a conversation (MS-ASCON 3.1.4.2) from the mail
    folders other than Deleted Items and Sent Items into `destination`."""
    mailbox = services.mailbox(mailbox_id)
    dest_info = served_folder(mailbox, destination)
    if dest_info is None:
        return ItemOpsStatus.DOCUMENT_NOT_FOUND
    dest = mailbox.folder_by_id(destination)
    thread = conversation.hex()
    trash = trash_of(mailbox)
    for info in served_folders(mailbox):
        if info.id == destination or (trash is not None and info.id == trash.id):
            continue
        if info.role is not None and info.role.value == "sent":
            continue
        folder = mailbox.folder_by_id(info.id)
        uids = list(folder.snapshot().uids)
        matching = [u for u, m in folder.metadata(uids).items() if m.thread_id[:32] == thread]
        if matching:
            folder.move_to(matching, dest)
    return ItemOpsStatus.SUCCESS


def item_operations_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        doc = ctx.document
        if doc is None or doc.qname != "ItemOperations:ItemOperations":
            return _top(ItemOpsStatus.PROTOCOL_ERROR)
        operations = doc.children
        if not operations or len(operations) > MAX_OPERATIONS:
            return _top(ItemOpsStatus.PROTOCOL_ERROR)
        parts = _Parts(ctx.accept_multipart, [])
        budget = ResponseBudget(MAX_ITEMOPERATIONS_RESPONSE_BYTES)
        mailbox_id = ctx.account.mailbox_id
        responses: list[Element] = []
        for operation in operations:
            try:
                if operation.tag == "Fetch":
                    responses.append(await _fetch(services, ctx, operation, parts, budget))
                elif operation.tag == "EmptyFolderContents":
                    folder_id = (operation.text_of("AirSync:CollectionId") or "").strip()
                    sub = operation.find("Options/DeleteSubFolders") is not None
                    status = await services.run(empty_folder, services, mailbox_id, folder_id, sub)
                    responses.append(
                        E(
                            "ItemOperations:EmptyFolderContents",
                            E("ItemOperations:Status", status),
                            E("AirSync:CollectionId", folder_id),
                        )
                    )
                elif operation.tag == "Move":
                    conversation = operation.bytes_of("ConversationId") or b""
                    destination = (operation.text_of("DstFldId") or "").strip()
                    status = await services.run(
                        move_conversation, services, mailbox_id, conversation, destination
                    )
                    responses.append(
                        E(
                            "ItemOperations:Move",
                            E("ItemOperations:Status", status),
                            E("ItemOperations:ConversationId", conversation),
                        )
                    )
                else:
                    return _top(ItemOpsStatus.PROTOCOL_ERROR)
            except SyncRequestError:
                return _top(ItemOpsStatus.PROTOCOL_ERROR)
        document = E(
            "ItemOperations:ItemOperations",
            E("ItemOperations:Status", ItemOpsStatus.SUCCESS),
            E("ItemOperations:Response", responses),
        )
        if not parts.enabled:
            return CommandReply.wbxml(document)
        body = await services.run(_multipart, document, parts.data)
        return CommandReply(body=body, content_type=MULTIPART_CONTENT_TYPE)

    return handle


def _multipart(document: Element, parts: list[bytes]) -> bytes:
    return multipart_body(encode(document), parts)


async def _fetch(
    services: MailServices,
    ctx: CommandContext,
    operation: Element,
    parts: _Parts,
    budget: ResponseBudget,
) -> Element:
    store_name = (operation.text_of("Store") or "Mailbox").strip()
    if store_name.lower() != "mailbox":
        return E("ItemOperations:Fetch", E("ItemOperations:Status", ItemOpsStatus.UNKNOWN_STORE))
    mailbox_id = ctx.account.mailbox_id
    options_el = operation.find("Options")
    reference = operation.text_of("AirSyncBase:FileReference")
    if reference is not None:
        range_text = options_el.text_of("Range") if options_el is not None else None
        policy = ctx.policy
        limit = policy.max_attachment_kb
        children = await services.run(
            functools.partial(
                fetch_attachment,
                services,
                mailbox_id,
                reference.strip(),
                range_text,
                parts,
                attachments_enabled=policy.attachments_enabled,
                max_attachment_bytes=None if limit is None else limit * 1024,
                budget=budget,
            )
        )
        return E("ItemOperations:Fetch", children)
    long_id = operation.text_of("Search:LongId")
    collection_id = operation.text_of("AirSync:CollectionId")
    sid = operation.text_of("AirSync:ServerId")
    target = parse_server_id(long_id if long_id is not None else (sid or ""))
    echo: list[Element] = []
    if long_id is not None:
        echo.append(E("Search:LongId", long_id))
    else:
        echo += [E("AirSync:CollectionId", collection_id or ""), E("AirSync:ServerId", sid or "")]
    if target is None or (
        long_id is None and collection_id is not None and target[0] != collection_id.strip()
    ):
        return E(
            "ItemOperations:Fetch",
            E("ItemOperations:Status", ItemOpsStatus.DOCUMENT_NOT_FOUND),
            echo,
        )
    options = parse_options(options_el) if options_el is not None else None
    render = RenderOptions(
        version=ctx.version,
        body_preferences=options.body_preferences if options else (),
        mime_support=options.mime_support if options else 0,
        **policy_render_limits(ctx.policy),
    )
    status, data = await services.run(
        fetch_item, services, mailbox_id, target[0], target[1], render, parts, budget
    )
    if status != ItemOpsStatus.SUCCESS:
        return E("ItemOperations:Fetch", E("ItemOperations:Status", status), echo)
    return E(
        "ItemOperations:Fetch",
        E("ItemOperations:Status", status),
        echo,
        E("AirSync:Class", "Email"),
        E("ItemOperations:Properties", data),
    )


def _top(status: int) -> CommandReply:
    return CommandReply.wbxml(
        E("ItemOperations:ItemOperations", E("ItemOperations:Status", status))
    )
