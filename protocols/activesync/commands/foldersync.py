"""FolderSync, FolderCreate, FolderUpdate, FolderDelete (MS-ASCMD 2.2.1.5, 2.2.1.2-4).

The device's folder list is a view (folder id -> parent, name, type) kept under a
hierarchy SyncKey; FolderSync reports the difference between the mailbox and that view.
Key 0 sends every folder again under a new key but keeps the item sync states of folders
that still exist (clients send key 0 on pull-to-refresh; a reset would make them download
every message again). The device's own FolderCreate/Update/Delete go into the view at
once, so its next FolderSync does not echo them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from store import (
    FolderExists,
    FolderHasChildren,
    FolderNotFound,
    FolderProtected,
    InvalidFolderName,
    Mailbox,
    StoreError,
)
from store.names import SEPARATOR

from ..context import CommandContext, CommandReply, Handler
from ..numbers import NumberError, parse_uint
from ..syncstate import FolderEntry, HierarchyState, new_generation
from ..wbxml import E, Element
from .common import (
    ROOT_ID,
    TYPE_USER_MAIL,
    MailServices,
    child_name,
    hierarchy_view,
    served_folder,
    served_folders,
)

log = logging.getLogger("mailhost.activesync")

# MS-ASCMD 2.2.3.47.2: DisplayName of a folder, at most 256 characters.
MAX_DISPLAY_NAME: Final = 256


class FolderStatus:
    """MS-ASCMD 2.2.3.177.3-6 (FolderSync/FolderCreate/FolderUpdate/FolderDelete)."""

    SUCCESS = 1
    EXISTS = 2
    SPECIAL_FOLDER = 3
    NOT_FOUND = 4
    PARENT_NOT_FOUND = 5
    SERVER_ERROR = 6
    INVALID_SYNC_KEY = 9
    MALFORMED = 10
    UNKNOWN = 11


@dataclass(frozen=True, slots=True)
class HierarchyAnswer:
    status: int
    key: str = ""
    changes: tuple[Element, ...] = ()


def _changes(old: dict[str, FolderEntry], new: dict[str, FolderEntry]) -> list[Element]:
    """Update, Delete and Add elements turning `old` into `new` (parents before children)."""
    out: list[Element] = []
    for folder_id, entry in new.items():
        if folder_id in old and old[folder_id] != entry:
            out.append(E("FolderHierarchy:Update", _folder_fields(folder_id, entry)))
    for folder_id in old:
        if folder_id not in new:
            out.append(E("FolderHierarchy:Delete", E("FolderHierarchy:ServerId", folder_id)))
    for folder_id, entry in new.items():
        if folder_id not in old:
            out.append(E("FolderHierarchy:Add", _folder_fields(folder_id, entry)))
    return out


def _folder_fields(folder_id: str, entry: FolderEntry) -> list[Element]:
    parent, name, kind = entry
    return [
        E("FolderHierarchy:ServerId", folder_id),
        E("FolderHierarchy:ParentId", parent),
        E("FolderHierarchy:DisplayName", name),
        E("FolderHierarchy:Type", kind),
    ]


def folder_sync(
    services: MailServices, mailbox_id: str, device_id: str, key: str
) -> HierarchyAnswer:
    """Blocking: the FolderSync answer for `key`."""
    states = services.states
    mailbox = services.mailbox(mailbox_id)
    current = hierarchy_view(served_folders(mailbox))
    state = states.load_hierarchy(mailbox_id, device_id)
    if key == "0":
        fresh = HierarchyState(new_generation(), 1, current)
        states.save_hierarchy(mailbox_id, device_id, fresh)
        for collection_id in states.collections(mailbox_id, device_id):
            if collection_id not in current:
                states.delete_collection(mailbox_id, device_id, collection_id)
        return HierarchyAnswer(FolderStatus.SUCCESS, fresh.key, tuple(_changes({}, current)))
    if state is None:
        return HierarchyAnswer(FolderStatus.INVALID_SYNC_KEY)
    if key == state.key:
        base = state.view
    elif key == state.previous_key and state.previous_view is not None:
        base = state.previous_view  # the device lost our last answer: send it again
    else:
        return HierarchyAnswer(FolderStatus.INVALID_SYNC_KEY)
    changes = _changes(base, current)
    if not changes and base is state.view:
        return HierarchyAnswer(FolderStatus.SUCCESS, state.key)
    counter = max(state.counter, state.previous_counter or 0) + 1
    states.save_hierarchy(
        mailbox_id,
        device_id,
        HierarchyState(
            state.generation,
            counter,
            current,
            state.counter if base is state.view else state.previous_counter,
            base,
        ),
    )
    for collection_id in states.collections(mailbox_id, device_id):
        if collection_id not in current:
            states.delete_collection(mailbox_id, device_id, collection_id)
    return HierarchyAnswer(FolderStatus.SUCCESS, f"{{{state.generation}}}{counter}", tuple(changes))


def hierarchy_changed(services: MailServices, mailbox_id: str, device_id: str) -> bool:
    """Whether the mailbox's folders differ from what the device last got (Ping status 7)."""
    state = services.states.load_hierarchy(mailbox_id, device_id)
    if state is None:
        return True
    current = hierarchy_view(served_folders(services.mailbox(mailbox_id)))
    return current != state.view


def folder_sync_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        doc = ctx.document
        key = doc.text_of("SyncKey") if doc is not None else None
        if doc is None or doc.qname != "FolderHierarchy:FolderSync" or key is None:
            return _reply("FolderSync", FolderStatus.MALFORMED)
        async with services.push.device_lock(ctx.account.mailbox_id, ctx.device.device_id):
            answer = await services.run(
                folder_sync, services, ctx.account.mailbox_id, ctx.device.device_id, key.strip()
            )
        if answer.status != FolderStatus.SUCCESS:
            return _reply("FolderSync", answer.status)
        # MS-ASCMD 2.2.3.72: Status, SyncKey, Changes/{Count, Update|Delete|Add...}.
        return CommandReply.wbxml(
            E(
                "FolderHierarchy:FolderSync",
                E("FolderHierarchy:Status", answer.status),
                E("FolderHierarchy:SyncKey", answer.key),
                E(
                    "FolderHierarchy:Changes",
                    E("FolderHierarchy:Count", len(answer.changes)),
                    answer.changes,
                ),
            )
        )

    return handle


def _reply(command: str, status: int, *children: Element | None) -> CommandReply:
    return CommandReply.wbxml(
        E(f"FolderHierarchy:{command}", E("FolderHierarchy:Status", status), children)
    )


# --- FolderCreate / FolderUpdate / FolderDelete ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FolderEdit:
    kind: str  # Create, Update, Delete
    key: str
    server_id: str | None
    parent_id: str | None
    name: str | None
    type: int | None


def _clean_name(name: str | None) -> str | None:
    if name is None:
        return None
    name = name.strip()
    if not name or len(name) > MAX_DISPLAY_NAME or SEPARATOR in name:
        return None
    return name


def edit_folder(
    services: MailServices, mailbox_id: str, device_id: str, edit: FolderEdit
) -> tuple[int, str, str | None]:
    """Blocking: (status, new hierarchy key, new ServerId) of one folder edit."""
    states = services.states
    state = states.load_hierarchy(mailbox_id, device_id)
    if state is None or edit.key != state.key:
        return FolderStatus.INVALID_SYNC_KEY, "", None
    mailbox = services.mailbox(mailbox_id)
    before = hierarchy_view(served_folders(mailbox))
    # Changes made elsewhere since the device's last FolderSync stay unreported: only this
    # device's own edit is written into its view.
    try:
        status, new_id = _apply(mailbox, edit)
    except FolderExists as exc:
        log.info("eas: Folder%s: %s", edit.kind, exc)
        return FolderStatus.EXISTS, "", None
    except FolderProtected:
        return FolderStatus.SPECIAL_FOLDER, "", None
    except FolderNotFound:
        return FolderStatus.NOT_FOUND, "", None
    except (InvalidFolderName, FolderHasChildren):
        return FolderStatus.MALFORMED, "", None
    except StoreError as exc:
        log.warning("eas: Folder%s failed: %s", edit.kind, exc)
        return FolderStatus.SERVER_ERROR, "", None
    if status != FolderStatus.SUCCESS:
        return status, "", None
    after = hierarchy_view(served_folders(mailbox))
    view = dict(state.view)
    for folder_id in set(before) | set(after):
        if folder_id in before and folder_id not in after:
            view.pop(folder_id, None)
            states.delete_collection(mailbox_id, device_id, folder_id)
        elif folder_id in after and (
            folder_id not in before or before[folder_id] != after[folder_id]
        ):
            view[folder_id] = after[folder_id]
    counter = max(state.counter, state.previous_counter or 0) + 1
    states.save_hierarchy(
        mailbox_id,
        device_id,
        HierarchyState(state.generation, counter, view, state.counter, dict(state.view)),
    )
    return FolderStatus.SUCCESS, f"{{{state.generation}}}{counter}", new_id


def _parent_name(mailbox: Mailbox, parent_id: str | None) -> tuple[bool, str | None]:
    if parent_id is None or parent_id == ROOT_ID:
        return True, None
    info = served_folder(mailbox, parent_id)
    if info is None:
        return False, None
    return True, info.name


def _apply(mailbox: Mailbox, edit: FolderEdit) -> tuple[int, str | None]:
    if edit.kind == "Create":
        name = _clean_name(edit.name)
        if name is None or edit.type is None:
            return FolderStatus.MALFORMED, None
        if edit.type not in (TYPE_USER_MAIL, 1):
            # Only mail folders are served; other kinds come with their data classes.
            return FolderStatus.MALFORMED, None
        found, parent = _parent_name(mailbox, edit.parent_id)
        if not found:
            return FolderStatus.PARENT_NOT_FOUND, None
        created = mailbox.create_folder(child_name(parent, name))
        return FolderStatus.SUCCESS, created.id
    info = served_folder(mailbox, edit.server_id or "")
    if info is None:
        return FolderStatus.NOT_FOUND, None
    if info.default:
        return FolderStatus.SPECIAL_FOLDER, None
    if edit.kind == "Delete":
        mailbox.delete_folder(info.name, recursive=True)
        return FolderStatus.SUCCESS, None
    name = _clean_name(edit.name)
    if name is None:
        return FolderStatus.MALFORMED, None
    found, parent = _parent_name(mailbox, edit.parent_id)
    if not found:
        return FolderStatus.PARENT_NOT_FOUND, None
    target = child_name(parent, name)
    if target != info.name:
        mailbox.rename_folder(info.name, target)
    return FolderStatus.SUCCESS, None


def _parse_edit(kind: str, doc: Element | None) -> FolderEdit | None:
    if doc is None or doc.qname != f"FolderHierarchy:Folder{kind}":
        return None
    key = doc.text_of("SyncKey")
    if key is None:
        return None
    type_text = doc.text_of("Type")
    folder_type = None
    if type_text is not None:
        try:
            folder_type = parse_uint(type_text, what="Type")  # MS-ASCMD 2.2.3.186.2
        except NumberError:
            return None  # Status 10: malformed request
    return FolderEdit(
        kind=kind,
        key=key.strip(),
        server_id=doc.text_of("ServerId"),
        parent_id=doc.text_of("ParentId"),
        name=doc.text_of("DisplayName"),
        type=folder_type,
    )


def folder_edit_handler(services: MailServices, kind: str) -> Handler:
    command = f"Folder{kind}"

    async def handle(ctx: CommandContext) -> CommandReply:
        edit = _parse_edit(kind, ctx.document)
        if edit is None or (kind != "Create" and not edit.server_id):
            return _reply(command, FolderStatus.MALFORMED)
        async with services.push.device_lock(ctx.account.mailbox_id, ctx.device.device_id):
            status, key, new_id = await services.run(
                edit_folder, services, ctx.account.mailbox_id, ctx.device.device_id, edit
            )
        if status != FolderStatus.SUCCESS:
            return _reply(command, status)
        # MS-ASCMD 2.2.3.69/70/71: Status, SyncKey (and ServerId for FolderCreate).
        return _reply(
            command,
            status,
            E("FolderHierarchy:SyncKey", key),
            E("FolderHierarchy:ServerId", new_id) if new_id else None,
        )

    return handle
