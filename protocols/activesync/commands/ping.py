"""Ping: Direct Push (MS-ASCMD 2.2.1.13, 3.1.5.8, 3.2.5.x; checklist 1.5).

A device names folders and a heartbeat; the request is held until a named folder has
something the device lacks (relative to its last SyncKey state of that folder, not to
when the Ping started), the folder hierarchy changes (7), or the heartbeat passes (1).
Both parts are optional after the first Ping: a body-less Ping, or one without folders
or heartbeat, takes the rest from the device's last Ping (3 when there is none).

Statuses (MS-ASCMD 2.2.3.177.10): 1 expired, 2 changes (with the folders), 3 parameters
missing, 4 syntax error, 5 heartbeat out of range (with the allowed HeartbeatInterval),
6 too many folders (with MaxFolders), 7 hierarchy changed, 8 server error.
A newer long poll from the same device ends a held Ping at once with status 1, and so does
the server's shutdown (the client pings again and reaches the restarted server).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import trio

from ..context import CommandContext, CommandReply, Handler
from ..numbers import parse_uint
from ..wbxml import E, Element, WbxmlError
from .common import MailServices, hierarchy_view, served_folders
from .foldersync import hierarchy_changed
from .items import collection_has_changes
from .sync import wait_for_change

log = logging.getLogger("mailhost.activesync")

# Folders one Ping may watch (Exchange's default MaxFolders-like limit; status 6 beyond).
MAX_PING_FOLDERS: Final = 300
# MS-ASCMD 2.2.3.27.4 Ping Class values.
PING_CLASSES: Final = frozenset({"Email", "Calendar", "Contacts", "Tasks", "Notes", "SMS"})


class PingStatus:
    EXPIRED = 1
    CHANGES = 2
    MISSING_PARAMETERS = 3
    SYNTAX_ERROR = 4
    HEARTBEAT_OUT_OF_RANGE = 5
    TOO_MANY_FOLDERS = 6
    HIERARCHY_CHANGED = 7
    SERVER_ERROR = 8


class PingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PingRequest:
    heartbeat: int | None
    folders: tuple[tuple[str, str], ...]  # (id, class)


def parse_ping(document: Element | None) -> PingRequest:
    if document is None:
        return PingRequest(None, ())
    if document.qname != "Ping:Ping":
        raise PingError("not a Ping document")
    heartbeat = None
    text = document.text_of("HeartbeatInterval")
    if text is not None:
        heartbeat = parse_uint(text, error=PingError, what="HeartbeatInterval")  # Status 4
    folders = []
    for folder in document.findall("Folders/Folder"):
        folder_id = (folder.text_of("Id") or "").strip()
        klass = (folder.text_of("Class") or "").strip()
        if not folder_id or (klass and klass not in PING_CLASSES):
            raise PingError("Folder without Id or with an unknown Class")
        folders.append((folder_id, klass or "Email"))
    return PingRequest(heartbeat, tuple(dict.fromkeys(folders)))


def _status(status: int, *children: Element | None) -> CommandReply:
    return CommandReply.wbxml(E("Ping:Ping", E("Ping:Status", status), children))


def _changed_folders(
    services: MailServices, mailbox_id: str, device_id: str, folder_ids: list[str]
) -> list[str]:
    mailbox = services.mailbox(mailbox_id)
    now = time.time()
    return [
        f
        for f in folder_ids
        if collection_has_changes(services.states, mailbox, device_id, f, now, services.tokens)
    ]


def _hierarchy_out_of_date(
    services: MailServices, mailbox_id: str, device_id: str, folder_ids: list[str]
) -> bool:
    """A watched folder is gone, or the folders differ from the device's last FolderSync."""
    view = hierarchy_view(served_folders(services.mailbox(mailbox_id)))
    if any(f not in view for f in folder_ids):
        return True
    state = services.states.load_hierarchy(mailbox_id, device_id)
    return state is not None and state.view != view


def ping_handler(services: MailServices) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        try:
            request = parse_ping(ctx.document)
        except (PingError, WbxmlError) as exc:  # WbxmlError: opaque text not UTF-8
            log.info("eas: Ping from %s: %s", ctx.account.address, exc)
            return _status(PingStatus.SYNTAX_ERROR)
        settings = ctx.settings
        mailbox_id, device_id = ctx.account.mailbox_id, ctx.device.device_id
        states = services.states
        device_state = await services.run(states.load_device, mailbox_id, device_id)
        cached: dict[str, Any] = device_state.ping or {}
        heartbeat = request.heartbeat if request.heartbeat is not None else cached.get("hb")
        folders = list(request.folders) or [tuple(f) for f in cached.get("folders", [])]
        if heartbeat is None or not folders:
            return _status(PingStatus.MISSING_PARAMETERS)  # MS-ASCMD 3.2.5.x: nothing cached
        if heartbeat < settings.heartbeat_min:
            return _status(
                PingStatus.HEARTBEAT_OUT_OF_RANGE,
                E("Ping:HeartbeatInterval", settings.heartbeat_min),
            )
        if heartbeat > settings.heartbeat_max:
            return _status(
                PingStatus.HEARTBEAT_OUT_OF_RANGE,
                E("Ping:HeartbeatInterval", settings.heartbeat_max),
            )
        if len(folders) > MAX_PING_FOLDERS:
            return _status(PingStatus.TOO_MANY_FOLDERS, E("Ping:MaxFolders", MAX_PING_FOLDERS))
        record = {"hb": heartbeat, "folders": [list(f) for f in folders]}
        if record != device_state.ping:
            device_state.ping = record
            await services.run(
                states.save_device, mailbox_id, device_id, device_state, durable=False
            )
        folder_ids = [str(f[0]) for f in folders]
        if await services.run(_hierarchy_out_of_date, services, mailbox_id, device_id, folder_ids):
            return _status(PingStatus.HIERARCHY_CHANGED)
        async with services.push.device_lock(mailbox_id, device_id):
            changed = await services.run(
                _changed_folders, services, mailbox_id, device_id, folder_ids
            )
        if changed:
            return _changes(changed)
        hierarchy_flag = False

        async def hierarchy() -> bool:
            nonlocal hierarchy_flag
            hierarchy_flag = await services.run(hierarchy_changed, services, mailbox_id, device_id)
            return hierarchy_flag

        found: list[str] = []

        def check() -> bool:
            found[:] = _changed_folders(services, mailbox_id, device_id, folder_ids)
            return bool(found)

        deadline = trio.current_time() + heartbeat
        woke = await wait_for_change(
            services, ctx, set(folder_ids), deadline, check, on_hierarchy=hierarchy
        )
        if hierarchy_flag:
            return _status(PingStatus.HIERARCHY_CHANGED)
        if woke and found:
            return _changes(found)
        return _status(PingStatus.EXPIRED)

    return handle


def _changes(folder_ids: list[str]) -> CommandReply:
    return _status(
        PingStatus.CHANGES,
        E("Ping:Folders", (E("Ping:Folder", f) for f in folder_ids)),
    )
