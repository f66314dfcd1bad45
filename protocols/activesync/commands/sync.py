"""The Sync command for e-mail (MS-ASCMD 2.2.1.21, 3.1.5.3, 3.2.5.x; checklist 1.6).

Request handling, in order:
1. The body is parsed into a `SyncRequest` (a malformed one is top-level Status 4). An
   empty body reuses the device's cached request (MS-ASCMD 3.1.5.3.1); `Partial` lists
   only the collections that changed, the others come from the cache; either with
   nothing cached is Status 13. Options a collection does not repeat are the cached ones.
2. Wait (minutes) and HeartbeatInterval (seconds) are exclusive (Status 4) and bounded by
   the configured heartbeat limits (Status 14 with Limit).
3. Under the device's lock, each collection: key 0 starts a new state and returns no
   items; the current key proceeds; the previous key replays (the device lost our answer);
   any other key is Status 3. Client commands (Add for 16.0 drafts, Change, Delete,
   Fetch) are applied, then server changes are sent in windows (WindowSize per collection
   and overall, and a byte budget) with MoreAvailable when more remain.
4. If nothing is to be reported and the request asked to wait, the request is held on the
   change bus (one long poll per device) and answered the moment a collection changes;
   a wait that runs out is answered with an empty 200 (MS-ASCMD 3.2.5.3).

The per-collection work blocks on the store and runs in a worker thread.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import trio

from store import Folder, Mailbox, MessageNotFound, SpecialUse, StoreError
from store.bus import FolderCreated, FolderDeleted, FolderRenamed, ResyncNeeded

from ..context import CommandContext, CommandReply, Handler
from ..mail import (
    SEEN_BIT,
    BodyPreference,
    ItemFacts,
    RenderOptions,
    categories_of,
    email_application_data,
    flag_element,
    last_verb,
    parse_server_id,
    policy_render_limits,
    server_id,
)
from ..numbers import parse_uint
from ..request import ProtocolVersion
from ..syncstate import CollectionRecord, CollectionState, ItemProps, new_generation
from ..wbxml import E, Element, WbxmlError
from .common import MailServices, served_folder
from .items import (
    ChangeRefused,
    apply_email_change,
    collection_has_changes,
    delete_item,
    effective_filter,
    facts_for,
    pending_changes,
    reader,
)

log = logging.getLogger("mailhost.activesync")

# MS-ASCMD 2.2.3.199: WindowSize 1-512; 0 or more is read as 512 (grommunio does the same).
DEFAULT_WINDOW: Final = 100
MAX_WINDOW: Final = 512
# Collections in one Sync (Exchange's default MaxSyncCollections-like cap).
MAX_COLLECTIONS: Final = 1000
# Client commands per collection in one request (MS-ASCMD 3.1.5.4 lets the server refuse
# more than the window size; we allow a generous fixed number).
MAX_CLIENT_COMMANDS: Final = 1000
# MS-ASCMD 2.2.3.198: Wait is 1-59 minutes.
MIN_WAIT_MINUTES: Final = 1
MAX_WAIT_MINUTES: Final = 59
# Rendered body bytes in one response before the rest waits for the next window:
# devices give up on a response after 30-240 s (checklist 1.10.3).
MAX_RESPONSE_BYTES: Final = 8 * 1024 * 1024


class SyncStatus:
    """MS-ASCMD 2.2.3.177.17 Sync Status."""

    SUCCESS = 1
    INVALID_SYNC_KEY = 3
    PROTOCOL_ERROR = 4
    SERVER_ERROR = 5
    CONVERSION_ERROR = 6
    CONFLICT = 7
    OBJECT_NOT_FOUND = 8
    CANNOT_COMPLETE = 9
    HIERARCHY_CHANGED = 12
    INCOMPLETE_REQUEST = 13
    INVALID_WAIT = 14
    TOO_MANY_COLLECTIONS = 15
    RETRY = 16


class SyncRequestError(ValueError):
    """A Sync body that cannot be used: top-level Status 4."""


# --- the request ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CollectionOptions:
    filter_type: int = 0
    body_preferences: tuple[BodyPreference, ...] = ()
    mime_support: int = 0
    mime_truncation: int | None = None
    conflict: int = 1

    def to_record(self) -> dict[str, Any]:
        return {
            "filter": self.filter_type,
            "prefs": [
                [p.type, p.truncation, p.all_or_none, p.preview] for p in self.body_preferences
            ],
            "mime": self.mime_support,
            "mimetrunc": self.mime_truncation,
            "conflict": self.conflict,
        }

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> CollectionOptions:
        return cls(
            filter_type=int(d["filter"]),
            body_preferences=tuple(
                BodyPreference(int(t), tr, bool(a), int(p)) for t, tr, a, p in d["prefs"]
            ),
            mime_support=int(d["mime"]),
            mime_truncation=d["mimetrunc"],
            conflict=int(d["conflict"]),
        )


@dataclass(frozen=True, slots=True)
class ClientCommand:
    kind: str  # "Add", "Change", "Delete", "Fetch"
    server_id: str | None = None
    client_id: str | None = None
    data: Element | None = None


@dataclass(frozen=True, slots=True)
class CollectionRequest:
    collection_id: str
    sync_key: str
    get_changes: bool | None = None  # None: absent (true unless key 0)
    window_size: int | None = None
    deletes_as_moves: bool = True
    options: CollectionOptions | None = None
    commands: tuple[ClientCommand, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.collection_id,
            "gc": self.get_changes,
            "ws": self.window_size,
            "dam": self.deletes_as_moves,
            "opt": self.options.to_record() if self.options else None,
        }

    @classmethod
    def from_record(cls, d: dict[str, Any], key: str) -> CollectionRequest:
        return cls(
            collection_id=str(d["id"]),
            sync_key=key,
            get_changes=d["gc"],
            window_size=d["ws"],
            deletes_as_moves=bool(d["dam"]),
            options=CollectionOptions.from_record(d["opt"]) if d["opt"] else None,
        )


@dataclass(frozen=True, slots=True)
class SyncRequest:
    collections: tuple[CollectionRequest, ...] = ()
    wait: int | None = None  # seconds (from Wait minutes or HeartbeatInterval)
    wait_minutes: int | None = None
    heartbeat: int | None = None
    window_size: int | None = None
    partial: bool = False


def _int(element: Element | None, name: str) -> int | None:
    if element is None:
        return None
    return parse_uint(element.text, error=SyncRequestError, what=name)  # MS-ASCMD 2.2.3.177.17: 4


def _window(value: int | None) -> int | None:
    if value is None:
        return None
    return MAX_WINDOW if value == 0 or value > MAX_WINDOW else value


def parse_options(options: Element) -> CollectionOptions:
    prefs = []
    for pref in options.findall("AirSyncBase:BodyPreference"):
        kind = _int(pref.find("Type"), "BodyPreference/Type")
        if kind is None or kind not in (1, 2, 3, 4):
            raise SyncRequestError("BodyPreference/Type must be 1-4")
        truncation = _int(pref.find("TruncationSize"), "TruncationSize")
        all_or_none = pref.text_of("AllOrNone", "0") == "1"
        preview = _int(pref.find("Preview"), "Preview") or 0
        prefs.append(BodyPreference(kind, truncation, all_or_none, min(preview, 255)))
    filter_type = _int(options.find("AirSync:FilterType"), "FilterType") or 0
    if filter_type > 8:
        raise SyncRequestError("FilterType is 0-8")
    mime = _int(options.find("AirSync:MIMESupport"), "MIMESupport") or 0
    mime_trunc = _int(options.find("AirSync:MIMETruncation"), "MIMETruncation")
    conflict = _int(options.find("AirSync:Conflict"), "Conflict")
    return CollectionOptions(
        filter_type=filter_type,
        body_preferences=tuple(prefs),
        mime_support=min(mime, 2),
        mime_truncation=mime_trunc if mime_trunc is not None and mime_trunc <= 8 else None,
        conflict=1 if conflict is None else conflict,
    )


def parse_sync(document: Element | None) -> SyncRequest | None:
    """The request; None for an empty body (MS-ASCMD 3.1.5.3.1)."""
    if document is None:
        return None
    if document.qname != "AirSync:Sync":
        raise SyncRequestError("not a Sync document")
    wait_minutes = _int(document.find("Wait"), "Wait")
    heartbeat = _int(document.find("HeartbeatInterval"), "HeartbeatInterval")
    if wait_minutes is not None and heartbeat is not None:
        raise SyncRequestError("Wait and HeartbeatInterval together")  # MS-ASCMD 2.2.3.198
    collections = []
    listed = document.findall("Collections/Collection")
    if len(listed) > MAX_COLLECTIONS:
        raise _TooMany()
    for element in listed:
        collection_id = element.text_of("CollectionId")
        key = element.text_of("SyncKey")
        if not collection_id or key is None:
            raise SyncRequestError("Collection without CollectionId or SyncKey")
        get_changes_el = element.find("GetChanges")
        get_changes = None
        if get_changes_el is not None:
            get_changes = get_changes_el.is_empty or get_changes_el.text.strip() != "0"
        dam = element.find("DeletesAsMoves")
        commands: list[ClientCommand] = []
        block = element.find("Commands")
        if block is not None:
            if len(block.children) > MAX_CLIENT_COMMANDS:
                raise SyncRequestError("too many client commands")
            for command in block.children:
                if command.tag not in ("Add", "Change", "Delete", "Fetch"):
                    raise SyncRequestError(f"unknown client command {command.tag}")
                commands.append(
                    ClientCommand(
                        command.tag,
                        server_id=command.text_of("ServerId"),
                        client_id=command.text_of("ClientId"),
                        data=command.find("ApplicationData"),
                    )
                )
        options = element.find("Options")
        collections.append(
            CollectionRequest(
                collection_id=collection_id.strip(),
                sync_key=key.strip(),
                get_changes=get_changes,
                window_size=_window(_int(element.find("WindowSize"), "WindowSize")),
                deletes_as_moves=dam is None or dam.is_empty or dam.text.strip() != "0",
                options=parse_options(options) if options is not None else None,
                commands=tuple(commands),
            )
        )
    partial = document.find("Partial")
    return SyncRequest(
        collections=tuple(collections),
        wait=wait_minutes * 60 if wait_minutes is not None else heartbeat,
        wait_minutes=wait_minutes,
        heartbeat=heartbeat,
        window_size=_window(_int(document.find("WindowSize"), "WindowSize")),
        partial=partial is not None and (partial.is_empty or partial.text.strip() != "0"),
    )


class _TooMany(SyncRequestError):
    pass


# --- one collection (blocking) -----------------------------------------------------------


@dataclass(slots=True)
class CollectionResult:
    collection_id: str
    key: str
    status: int = SyncStatus.SUCCESS
    commands: list[Element] = field(default_factory=list)
    responses: list[Element] = field(default_factory=list)
    more: bool = False
    sent: int = 0  # server changes sent (counts against the global window)
    new_key: bool = False  # a key the device does not have yet (key 0, replays)

    @property
    def reports(self) -> bool:
        return (
            bool(self.commands or self.responses or self.more or self.new_key) or self.status != 1
        )

    def element(self) -> Element:
        # MS-ASCMD 2.2.3.29.2: SyncKey, CollectionId, Status, MoreAvailable, Commands,
        # Responses.
        return E(
            "AirSync:Collection",
            E("AirSync:SyncKey", self.key),
            E("AirSync:CollectionId", self.collection_id),
            E("AirSync:Status", self.status),
            E("AirSync:MoreAvailable") if self.more else None,
            E("AirSync:Commands", self.commands) if self.commands else None,
            E("AirSync:Responses", self.responses) if self.responses else None,
        )


@dataclass(frozen=True, slots=True)
class SyncScope:
    """Who is syncing and what they may see."""

    mailbox_id: str
    device_id: str
    version: ProtocolVersion
    addresses: tuple[str, ...]
    allow_html: bool
    max_body_bytes: int | None
    max_email_age: Any  # the Policy, for effective_filter
    peer: str
    now: float
    max_html_bytes: int | None = None
    mime_allowed: bool = True


@dataclass(frozen=True, slots=True)
class DraftOutcome:
    uid: int  # the draft's uid now (a changed draft is a new message in the store)
    sent: bool = False  # Email2:Send: the draft went out and left the Drafts folder


class DraftSaver(Protocol):
    """Saves (and sends) 16.0 drafts from Sync Add/Change (implemented in `drafts`).
    Blocking; raises ChangeRefused for a draft it cannot build."""

    def __call__(
        self, scope: SyncScope, mailbox: Mailbox, folder: Folder, uid: int | None, data: Element
    ) -> DraftOutcome: ...


class _Budget:
    def __init__(self, items: int) -> None:
        self.items = items
        self.bytes = MAX_RESPONSE_BYTES


def _render_options(scope: SyncScope, options: CollectionOptions) -> RenderOptions:
    return RenderOptions(
        version=scope.version,
        body_preferences=options.body_preferences,
        mime_support=options.mime_support,
        mime_truncation=options.mime_truncation,
        allow_html=scope.allow_html,
        max_body_bytes=scope.max_body_bytes,
        max_html_bytes=scope.max_html_bytes,
        mime_allowed=scope.mime_allowed,
    )


def _capped(limit: int | None, left: int) -> int:
    return left if limit is None else min(limit, left)


def _size_of(elements: list[Element]) -> int:
    size = 0
    for element in elements:
        for node in element.iter():
            if node.value is not None:
                size += len(node.value)
    return size


class CollectionSync:
    """One collection of one Sync request, against the store (blocking)."""

    def __init__(
        self,
        services: MailServices,
        scope: SyncScope,
        request: CollectionRequest,
        options: CollectionOptions,
        budget: _Budget,
        drafts: DraftSaver | None = None,
    ) -> None:
        self.services = services
        self.scope = scope
        self.request = request
        self.options = options
        self.budget = budget
        self.states = services.states
        self.drafts = drafts

    def run(self) -> CollectionResult:
        request = self.request
        scope = self.scope
        result = CollectionResult(request.collection_id, request.sync_key)
        mailbox = self.services.mailbox(scope.mailbox_id)
        info = served_folder(mailbox, request.collection_id)
        if info is None:
            result.status = SyncStatus.HIERARCHY_CHANGED  # MS-ASCMD: FolderSync, then Sync
            return result
        folder = mailbox.folder_by_id(info.id)
        filter_type = effective_filter(self.options.filter_type, scope.max_email_age)
        if request.sync_key == "0":
            fresh = CollectionState(
                collection_id=info.id,
                generation=new_generation(),
                counter=1,
                uidvalidity=folder.status().uidvalidity,
                filter_type=filter_type,
            )
            self.states.save_collection(scope.mailbox_id, scope.device_id, CollectionRecord(fresh))
            result.key = fresh.key
            result.new_key = True
            return result
        record = self.states.load_collection(scope.mailbox_id, scope.device_id, info.id)
        matched = record.match(request.sync_key) if record is not None else None
        if record is None or matched is None:
            result.status = SyncStatus.INVALID_SYNC_KEY
            return result
        state = matched
        if state.uidvalidity != folder.status().uidvalidity:
            # The folder was re-created under the same id: everything the device has is
            # stale; it starts again from 0 (MS-ASCMD 3.2.5.1).
            self.states.delete_collection(scope.mailbox_id, scope.device_id, info.id)
            result.status = SyncStatus.INVALID_SYNC_KEY
            return result
        replay = state is not record.current
        base = state.copy()  # what the device had before this request
        if replay:
            # ClientIds of Adds already made survive the replay (no duplicates).
            for client_id, uid in record.current.client_ids.items():
                state.remember_client_id(client_id, uid)
        state.filter_type = filter_type
        touched = self._client_commands(mailbox, folder, state, result)
        get_changes = request.get_changes is not False
        props = self.states.load_props(scope.mailbox_id)
        pending = pending_changes(folder, state, props, scope.now, self.services.tokens)
        for uid in touched:
            token = pending.wanted.get(uid)
            if token is None:
                state.view.pop(uid, None)
            else:
                state.view[uid] = token
        if touched:
            pending = pending_changes(folder, state, props, scope.now, self.services.tokens)
        if get_changes:
            self._server_changes(folder, state, pending, props, result)
        else:
            result.more = pending.difference.count > 0
        state.pending = result.more
        if not result.more:
            state.modseq = pending.snapshot.highestmodseq
        if result.commands or result.responses or result.more or replay or request.commands:
            new = state.next(record.top_counter + 1)
            self.states.save_collection(
                scope.mailbox_id, scope.device_id, CollectionRecord(new, base)
            )
            result.key = new.key
            result.new_key = True
        elif state.modseq != base.modseq or state.filter_type != base.filter_type:
            # Nothing to report, but the state caught up with the folder: remember it so
            # a Ping does not look again (same key, same view; `state` is the current one).
            self.states.save_collection(scope.mailbox_id, scope.device_id, record)
        return result

    # --- client commands -----------------------------------------------------------------

    def _client_commands(
        self, mailbox: Mailbox, folder: Any, state: CollectionState, result: CollectionResult
    ) -> set[int]:
        touched: set[int] = set()
        scope = self.scope
        for command in self.request.commands:
            if command.kind == "Fetch":
                result.responses.append(self._fetch(folder, state, command))
                continue
            if command.kind == "Add":
                result.responses.append(self._add(mailbox, folder, state, command, touched))
                continue
            target = self._uid(folder.id, state, command.server_id)
            if command.kind == "Delete":
                if target is None:
                    continue
                state.view.pop(target, None)
                try:
                    moved = delete_item(
                        mailbox, folder, target, as_move=self.request.deletes_as_moves
                    )
                except MessageNotFound:
                    continue
                except StoreError as exc:
                    log.warning("eas: delete of %s failed: %s", command.server_id, exc)
                    continue
                if moved is not None:
                    trash = mailbox.folder_by_role(SpecialUse.TRASH)
                    with self.states.editing_props(scope.mailbox_id) as props:
                        props.move(folder.id, target, trash.id, moved)
                continue
            # Change
            status = self._change(mailbox, folder, state, command, target, touched)
            if status != SyncStatus.SUCCESS:
                result.responses.append(
                    E(
                        "AirSync:Change",
                        E("AirSync:ServerId", command.server_id or ""),
                        E("AirSync:Status", status),
                    )
                )
        return touched

    def _uid(self, folder_id: str, state: CollectionState, text: str | None) -> int | None:
        parsed = parse_server_id(text or "")
        if parsed is None or parsed[0] != folder_id:
            return None
        return state.real_uid(parsed[1])

    def _change(
        self,
        mailbox: Mailbox,
        folder: Any,
        state: CollectionState,
        command: ClientCommand,
        uid: int | None,
        touched: set[int],
    ) -> int:
        if uid is None or command.data is None:
            return SyncStatus.OBJECT_NOT_FOUND if uid is None else SyncStatus.PROTOCOL_ERROR
        draft_change = (
            self.scope.version >= ProtocolVersion.V16_0
            and folder.role is SpecialUse.DRAFTS
            and self.drafts is not None
        )
        try:
            if draft_change:
                assert self.drafts is not None
                outcome = self.drafts(self.scope, mailbox, folder, uid, command.data)
                if outcome.uid != uid:
                    shown = state.client_uid(uid)
                    state.aliases.pop(uid, None)
                    state.aliases[outcome.uid] = shown
                    state.view.pop(uid, None)
                    uid = outcome.uid
                if outcome.sent:
                    state.view[uid] = 0  # gone from Drafts: the next Sync deletes it
                    return SyncStatus.SUCCESS
            apply_email_change(
                self.services.states,
                mailbox,
                folder,
                uid,
                command.data,
                categories_allowed=self.scope.version >= ProtocolVersion.V14_0,
            )
        except MessageNotFound:
            state.view.pop(uid, None)
            return SyncStatus.OBJECT_NOT_FOUND
        except ChangeRefused as exc:
            log.info("eas: change of %s refused: %s", command.server_id, exc)
            return SyncStatus.CONVERSION_ERROR
        touched.add(uid)
        return SyncStatus.SUCCESS

    def _add(
        self,
        mailbox: Mailbox,
        folder: Any,
        state: CollectionState,
        command: ClientCommand,
        touched: set[int],
    ) -> Element:
        client_id = (command.client_id or "").strip()
        if not client_id or len(client_id) > 64:  # MS-ASCMD 2.2.3.28.4: at most 64 chars
            return _add_response(client_id, None, SyncStatus.PROTOCOL_ERROR)
        known = state.client_ids.get(client_id)
        if known is not None:
            touched.add(known)
            return _add_response(client_id, server_id(folder.id, state.client_uid(known)), 1)
        allowed = (
            self.scope.version >= ProtocolVersion.V16_0
            and folder.role is SpecialUse.DRAFTS
            and self.drafts is not None
            and command.data is not None
        )
        if not allowed:
            # MS-ASEMAIL: e-mail is added by the client only as a 16.0 draft.
            return _add_response(client_id, None, SyncStatus.CONVERSION_ERROR)
        assert self.drafts is not None
        assert command.data is not None
        try:
            outcome = self.drafts(self.scope, mailbox, folder, None, command.data)
        except ChangeRefused as exc:
            log.info("eas: draft add refused: %s", exc)
            return _add_response(client_id, None, SyncStatus.CONVERSION_ERROR)
        state.remember_client_id(client_id, outcome.uid)
        if outcome.sent:
            state.view[outcome.uid] = 0  # sent at once: the next Sync deletes it
        else:
            touched.add(outcome.uid)
        return _add_response(client_id, server_id(folder.id, outcome.uid), SyncStatus.SUCCESS)

    def _fetch(self, folder: Any, state: CollectionState, command: ClientCommand) -> Element:
        uid = self._uid(folder.id, state, command.server_id)
        shown_id = command.server_id or ""
        if uid is not None:
            snapshot = folder.snapshot()
            props = self.states.load_props(self.scope.mailbox_id)
            facts = facts_for(folder, snapshot, [uid], props).get(uid)
            if facts is not None:
                # The response's byte budget bounds fetched bodies too: a body past what is
                # left is sent truncated (Truncated=1, MS-ASAIRS 2.2.2.52), and the device
                # gets the rest with ItemOperations, as for any truncated body. Without
                # this, MAX_CLIENT_COMMANDS fetches of a large message would all be held.
                options = _render_options(self.scope, self.options)
                left = max(0, self.budget.bytes)
                options = replace(
                    options,
                    max_body_bytes=_capped(options.max_body_bytes, left),
                    max_html_bytes=_capped(options.max_html_bytes, left),
                )
                data = email_application_data(facts, options, reader(folder, uid))
                self.budget.bytes -= _size_of(data)
                return E(
                    "AirSync:Fetch",
                    E("AirSync:ServerId", shown_id),
                    E("AirSync:Status", SyncStatus.SUCCESS),
                    E("AirSync:ApplicationData", data),
                )
        return E(
            "AirSync:Fetch",
            E("AirSync:ServerId", shown_id),
            E("AirSync:Status", SyncStatus.OBJECT_NOT_FOUND),
        )

    # --- server changes ------------------------------------------------------------------

    def _server_changes(
        self,
        folder: Any,
        state: CollectionState,
        pending: Any,
        props: ItemProps,
        result: CollectionResult,
    ) -> None:
        diff = pending.difference
        window = min(self.request.window_size or DEFAULT_WINDOW, self.budget.items)
        if window <= 0:
            result.more = diff.count > 0
            return
        commands = result.commands
        sent = 0

        def room() -> bool:
            return sent < window and (self.budget.bytes > 0 or sent == 0)

        for uid in diff.deletes:
            if not room():
                break
            commands.append(
                E(
                    "AirSync:Delete",
                    E("AirSync:ServerId", server_id(folder.id, state.client_uid(uid))),
                )
            )
            state.view.pop(uid, None)
            state.aliases.pop(uid, None)
            sent += 1
        for uid in diff.soft_deletes:
            if not room():
                break
            commands.append(
                E(
                    "AirSync:SoftDelete",
                    E("AirSync:ServerId", server_id(folder.id, state.client_uid(uid))),
                )
            )
            state.view.pop(uid, None)
            sent += 1
        remaining = [*diff.changes, *diff.adds]
        changes = set(diff.changes)
        render = _render_options(self.scope, self.options)
        index = 0
        while index < len(remaining) and room():
            batch = remaining[index : index + max(1, min(25, window - sent))]
            facts = facts_for(folder, pending.snapshot, batch, props)
            for uid in batch:
                if not room():
                    break
                index += 1
                item = facts.get(uid)
                if item is None:
                    continue  # expunged meanwhile: the next Sync reports it
                if uid in changes:
                    element = E(
                        "AirSync:Change",
                        E("AirSync:ServerId", server_id(folder.id, state.client_uid(uid))),
                        E("AirSync:ApplicationData", self._change_data(item)),
                    )
                else:
                    data = email_application_data(item, render, reader(folder, uid))
                    element = E(
                        "AirSync:Add",
                        E("AirSync:ServerId", server_id(folder.id, state.client_uid(uid))),
                        E("AirSync:ApplicationData", data),
                    )
                    self.budget.bytes -= _size_of(data)
                commands.append(element)
                state.view[uid] = pending.wanted[uid]
                sent += 1
        self.budget.items -= sent
        result.sent = sent
        result.more = diff.count > sent

    def _change_data(self, item: ItemFacts) -> list[Element]:
        """A server Change of an e-mail carries what can change: read, flag, categories,
        the reply/forward verb (MS-ASEMAIL 3.2.5.x)."""
        version = self.scope.version
        out = [
            E("Email:Read", 1 if item.flag_bits & SEEN_BIT else 0),
            flag_element(item),
        ]
        if version >= ProtocolVersion.V14_0:
            out.append(
                E(
                    "Email:Categories",
                    (E("Email:Category", c) for c in categories_of(item.keywords)),
                )
            )
            verb = last_verb(item)
            if verb is not None:
                out.append(E("Email2:LastVerbExecuted", verb[0]))
                if verb[1]:
                    out.append(E("Email2:LastVerbExecutionTime", verb[1]))
        return out


def _add_response(client_id: str, sid: str | None, status: int) -> Element:
    return E(
        "AirSync:Add",
        E("AirSync:ClientId", client_id),
        E("AirSync:ServerId", sid) if sid else None,
        E("AirSync:Status", status),
    )


# --- the handler --------------------------------------------------------------------------


def _status_only(status: int, limit: int | None = None) -> CommandReply:
    return CommandReply.wbxml(
        E(
            "AirSync:Sync",
            E("AirSync:Status", status),
            E("AirSync:Limit", limit) if limit is not None else None,
        )
    )


@dataclass(slots=True)
class _Plan:
    """The collections this request syncs (after the cache is applied), and its wait."""

    collections: list[CollectionRequest]
    options: dict[str, CollectionOptions]
    wait: int | None
    window: int | None


def _resolve(
    request: SyncRequest | None, cached: dict[str, Any] | None, current_keys: dict[str, str]
) -> _Plan | None:
    """Apply the device's cached request (MS-ASCMD 3.1.5.3.1 / 3.2.5.x Partial)."""
    cached_collections: dict[str, CollectionRequest] = {}
    cached_options: dict[str, CollectionOptions] = {}
    if cached:
        for record in cached.get("collections", []):
            key = current_keys.get(str(record["id"]))
            if key is None:
                continue
            req = CollectionRequest.from_record(record, key)
            cached_collections[req.collection_id] = req
            if req.options is not None:
                cached_options[req.collection_id] = req.options
    if request is None:
        if not cached_collections:
            return None
        return _Plan(
            list(cached_collections.values()),
            cached_options,
            cached.get("wait") if cached else None,
            cached.get("window") if cached else None,
        )
    if request.partial and not request.collections and not cached_collections:
        return None
    collections = list(request.collections)
    if request.partial:
        listed = {c.collection_id for c in collections}
        collections += [c for cid, c in cached_collections.items() if cid not in listed]
    options = dict(cached_options)
    for c in request.collections:
        if c.options is not None:
            options[c.collection_id] = c.options
    wait = request.wait
    if wait is None and request.partial and cached:
        wait = cached.get("wait")
    window = request.window_size
    if window is None and request.partial and cached:
        window = cached.get("window")
    return _Plan(collections, options, wait, window)


def sync_handler(services: MailServices, drafts: DraftSaver | None = None) -> Handler:
    async def handle(ctx: CommandContext) -> CommandReply:
        try:
            request = parse_sync(ctx.document)
        except _TooMany:
            return _status_only(SyncStatus.TOO_MANY_COLLECTIONS)
        except (SyncRequestError, WbxmlError) as exc:  # WbxmlError: opaque text not UTF-8
            log.info("eas: Sync from %s: %s", ctx.account.address, exc)
            return _status_only(SyncStatus.PROTOCOL_ERROR)
        settings = ctx.settings
        if request is not None:
            if request.wait_minutes is not None:
                low = max(MIN_WAIT_MINUTES, -(-settings.heartbeat_min // 60))
                high = min(MAX_WAIT_MINUTES, settings.heartbeat_max // 60)
                if request.wait_minutes < low:
                    return _status_only(SyncStatus.INVALID_WAIT, low)
                if request.wait_minutes > high:
                    return _status_only(SyncStatus.INVALID_WAIT, high)
            if request.heartbeat is not None:
                if request.heartbeat < settings.heartbeat_min:
                    return _status_only(SyncStatus.INVALID_WAIT, settings.heartbeat_min)
                if request.heartbeat > settings.heartbeat_max:
                    return _status_only(SyncStatus.INVALID_WAIT, settings.heartbeat_max)
        mailbox_id, device_id = ctx.account.mailbox_id, ctx.device.device_id
        scope = SyncScope(
            mailbox_id=mailbox_id,
            device_id=device_id,
            version=ctx.version,
            addresses=(ctx.account.address, *ctx.account.addresses),
            max_email_age=ctx.policy,
            peer=ctx.peer,
            now=time.time(),
            **policy_render_limits(ctx.policy),
        )
        async with services.push.device_lock(mailbox_id, device_id):
            device_state = await services.run(services.states.load_device, mailbox_id, device_id)
            keys: dict[str, str] = {}
            if request is None or request.partial:
                keys = await services.run(_current_keys, services, mailbox_id, device_id, None)
            plan = _resolve(request, device_state.sync_request, keys)
            if plan is None:
                return _status_only(SyncStatus.INCOMPLETE_REQUEST)
            if request is not None and (request.collections or request.wait is not None):
                cache = {
                    "collections": [
                        replace(c, options=plan.options.get(c.collection_id)).to_record()
                        for c in plan.collections
                    ],
                    "wait": plan.wait,
                    "window": plan.window,
                }
                if cache != device_state.sync_request:
                    device_state.sync_request = cache
                    await services.run(
                        services.states.save_device, mailbox_id, device_id, device_state
                    )
            results = await _run_plan(services, scope, plan, drafts)
        if plan.wait is None or any(r.reports for r in results):
            return _reply(results)
        # Nothing to report: hold the request until a collection changes (Direct Push).
        folder_ids = {c.collection_id for c in plan.collections}
        deadline = trio.current_time() + plan.wait
        while True:
            checked = functools.partial(_any_changes, services, scope, plan)
            changed = await wait_for_change(services, ctx, folder_ids, deadline, checked)
            if not changed:
                return CommandReply.empty()  # MS-ASCMD 3.2.5.3: empty 200 when nothing came
            async with services.push.device_lock(mailbox_id, device_id):
                keys = await services.run(
                    _current_keys, services, mailbox_id, device_id, folder_ids
                )
                plan.collections = [
                    replace(c, sync_key=keys.get(c.collection_id, c.sync_key))
                    for c in plan.collections
                ]
                scope = replace(scope, now=time.time())
                results = await _run_plan(services, scope, plan, drafts)
            if any(r.reports for r in results):
                return _reply(results)

    return handle


def _current_keys(
    services: MailServices, mailbox_id: str, device_id: str, only: set[str] | None
) -> dict[str, str]:
    """The latest key of each collection state of the device (of `only`, if given)."""
    out = {}
    ids = services.states.collections(mailbox_id, device_id) if only is None else sorted(only)
    for collection_id in ids:
        record = services.states.load_collection(mailbox_id, device_id, collection_id)
        if record is not None:
            out[collection_id] = record.current.key
    return out


async def _run_plan(
    services: MailServices,
    scope: SyncScope,
    plan: _Plan,
    drafts: DraftSaver | None,
) -> list[CollectionResult]:
    budget = _Budget(plan.window or MAX_WINDOW * max(1, len(plan.collections)))
    results = []
    for request in plan.collections:
        options = plan.options.get(request.collection_id) or CollectionOptions()
        runner = CollectionSync(services, scope, request, options, budget, drafts)
        try:
            result = await services.run(runner.run)
        except (StoreError, OSError) as exc:
            log.warning("eas: Sync of %s failed: %s", request.collection_id, exc)
            result = CollectionResult(
                request.collection_id, request.sync_key, SyncStatus.SERVER_ERROR
            )
        results.append(result)
    return results


def _any_changes(services: MailServices, scope: SyncScope, plan: _Plan) -> bool:
    mailbox = services.mailbox(scope.mailbox_id)
    return any(
        collection_has_changes(
            services.states,
            mailbox,
            scope.device_id,
            c.collection_id,
            time.time(),
            services.tokens,
        )
        for c in plan.collections
    )


def _reply(results: list[CollectionResult]) -> CommandReply:
    return CommandReply.wbxml(
        E("AirSync:Sync", E("AirSync:Collections", (r.element() for r in results)))
    )


async def wait_for_change(
    services: MailServices,
    ctx: CommandContext,
    folder_ids: set[str],
    deadline: float,
    check: Callable[[], bool],
    *,
    on_hierarchy: Callable[[], Awaitable[bool]] | None = None,
) -> bool:
    """Hold a long poll until one of `folder_ids` has changes for this device (`check`,
    blocking, confirms it), the deadline passes, a newer long poll of the device arrives,
    the client goes away or the server starts draining. True when there are changes (or,
    with `on_hierarchy`, when it says the hierarchy changed)."""
    mailbox_id = ctx.account.mailbox_id
    found = False
    with (
        services.push.hold(mailbox_id, ctx.device.device_id) as superseded,
        services.store.bus.subscribe(mailbox_id) as subscription,
        ctx.waiting(),
    ):
        async with trio.open_nursery() as nursery:

            async def stop_when(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_when, superseded)
            nursery.start_soon(stop_when, ctx.disconnected)
            if ctx.draining is not None:
                # The server is shutting down: answer "nothing new" now; the client asks
                # again and reaches the restarted server.
                nursery.start_soon(stop_when, ctx.draining)
            with trio.move_on_at(deadline):
                while True:
                    event = await subscription.receive()
                    if isinstance(event, (FolderCreated, FolderRenamed, FolderDeleted)):
                        if on_hierarchy is not None and await on_hierarchy():
                            found = True
                            break
                        continue
                    if not (isinstance(event, ResyncNeeded) or event.folder_id in folder_ids):
                        continue
                    # The device's own Sync may be applying this very change: look once it
                    # has saved its state, or the change would be echoed as new.
                    async with services.push.device_lock(mailbox_id, ctx.device.device_id):
                        changed = await services.run(check)
                    if changed:
                        found = True
                        break
            nursery.cancel_scope.cancel()
    return found


__all__ = [
    "CollectionOptions",
    "CollectionRequest",
    "SyncRequest",
    "SyncRequestError",
    "SyncStatus",
    "parse_sync",
    "sync_handler",
    "wait_for_change",
]
