"""16.0+ drafts in Sync (MS-ASEMAIL 3.1.5.3, 2.2.2.x Email2:Send, MS-ASAIRS attachments):
a device adds or changes a draft in the Drafts folder with To, Cc, Bcc, Subject,
Importance, a Body and attachment Adds/Deletes, and may send it with `Email2:Send`.

Message files are immutable, so a changed draft is a new message replacing the old one;
the Sync layer keeps the device's ServerId for it. A sent draft goes out through the
submission path and leaves Drafts (its copy lands in Sent Items).
"""

from __future__ import annotations

import logging
import time
from typing import Final

from store import Flag, Folder, Mailbox, MessageNotFound, SpecialUse, StoreError
from transport.submission import Outcome

from ..mail import parse_file_reference
from ..wbxml import Element
from .common import MailServices
from .compose import ComposeError, DraftFields, NewAttachment, build_draft
from .items import ChangeRefused
from .sync import DraftOutcome, SyncScope

log = logging.getLogger("mailhost.activesync")

MAX_DRAFT_ATTACHMENTS: Final = 100


def draft_fields(
    data: Element, base_attachments: list[tuple[int, ...]]
) -> tuple[DraftFields, bool]:
    """(the fields the device set, whether it asked to send)."""
    fields = DraftFields(
        to=data.text_of("Email:To"),
        cc=data.text_of("Email:Cc"),
        bcc=data.text_of("Email2:Bcc"),
        subject=data.text_of("Email:Subject"),
    )
    importance = data.text_of("Email:Importance")
    if importance is not None:
        if importance.strip() not in ("0", "1", "2"):
            raise ChangeRefused("Importance is 0, 1 or 2")
        fields.importance = int(importance)
    body = data.find("AirSyncBase:Body")
    if body is not None:
        kind = body.text_of("Type", "1")
        fields.body_type = 2 if kind == "2" else 1
        fields.body = body.text_of("Data", "")
    attachments = data.find("AirSyncBase:Attachments")
    if attachments is not None:
        for add in attachments.findall("Add")[:MAX_DRAFT_ATTACHMENTS]:
            content = add.bytes_of("Content")
            if content is None:
                raise ChangeRefused("attachment Add without Content")
            fields.add.append(
                NewAttachment(
                    client_id=add.text_of("ClientId", "") or "",
                    name=(add.text_of("DisplayName") or "attachment").strip()[:255],
                    content_type=(add.text_of("ContentType") or "application/octet-stream"),
                    data=content,
                    content_id=add.text_of("ContentId"),
                    inline=add.text_of("IsInline", "0") == "1",
                )
            )
        for delete in attachments.findall("Delete"):
            parsed = parse_file_reference(delete.text_of("FileReference") or "")
            if parsed is not None and parsed[2] in base_attachments:
                fields.delete.append(base_attachments.index(parsed[2]))
    send = data.find("Email2:Send") is not None
    return fields, send


class DraftStore:
    """The `DraftSaver` of the Sync command."""

    def __init__(self, services: MailServices, hostname: str) -> None:
        self.services = services
        self.hostname = hostname

    def __call__(
        self, scope: SyncScope, mailbox: Mailbox, folder: Folder, uid: int | None, data: Element
    ) -> DraftOutcome:
        base = None
        attachment_parts: list[tuple[int, ...]] = []
        if uid is not None:
            base = folder.read_message(uid)  # MessageNotFound: the Sync answers 8
            meta = folder.metadata([uid]).get(uid)
            if meta is not None:
                attachment_parts = [a.part for a in meta.attachments]
        fields, send = draft_fields(data, attachment_parts)
        try:
            message = build_draft(
                fields, base, sender=scope.addresses[0], hostname=self.hostname, now=time.time()
            )
        except ComposeError as exc:
            raise ChangeRefused(str(exc)) from None
        try:
            new_uid = folder.append(message, flags=[Flag.DRAFT, Flag.SEEN]).uid
            if uid is not None:
                folder.expunge([uid])
                with self.services.states.editing_props(mailbox.id) as props:
                    props.move(folder.id, uid, folder.id, new_uid)
        except StoreError as exc:
            raise ChangeRefused(f"cannot store the draft: {exc}") from None
        if not send:
            return DraftOutcome(new_uid)
        submitter = self.services.submitter
        if submitter is None:
            raise ChangeRefused("sending is not configured")
        result = submitter.submit(
            message, addresses=scope.addresses, peer=scope.peer, protocol="ActiveSync"
        )
        if result.outcome is not Outcome.SENT or result.prepared is None:
            raise ChangeRefused(f"draft not sent: {result.reason}")
        try:
            sent = mailbox.folder_by_role(SpecialUse.SENT)
            sent.append(result.prepared.saved, flags=[Flag.SEEN])
            folder.expunge([new_uid])
        except (StoreError, MessageNotFound) as exc:
            log.warning("eas: draft sent, but moving it to Sent Items failed: %s", exc)
        return DraftOutcome(new_uid, sent=True)
