"""What each device knows: the persisted sync state of ActiveSync (MS-ASCMD 3.1.5.3, 3.2.5).

State is kept per (mailbox, device) in its own folder under the state root:

    <root>/<mailbox id>/<device id>/hierarchy.state     FolderSync: the folders the device has
    <root>/<mailbox id>/<device id>/c-<folder id>.state  Sync: the items the device has
    <root>/<mailbox id>/<device id>/device.state         the cached Sync request (empty and
                                                         Partial Sync), the cached Ping, the
                                                         ClientIds of mail already sent
    <root>/<mailbox id>/items.state                      follow-up flag dates and reply/forward
                                                         verbs, which the store has no place for

Rules (the state machine of a SyncKey, in one place):
- A key is `{generation}counter`. Key 0 starts a new generation at counter 1 with an empty
  view; a later key from an older generation or another device is unknown (Sync status 3,
  FolderSync status 9) and the client starts again from 0.
- Each response that reports something moves to a new key, and the state it was derived
  from is kept as `previous`: a client that repeats the previous key (it lost our answer)
  gets its answer again, computed from `previous` (MS-ASCMD 3.1.5.3, checklist 1.6).
- A response that reports nothing keeps the key: no state is written.
- The *view* is the device's copy of the folder (uid -> change token). Server changes are
  the difference between the folder and the view, so windows (MoreAvailable) can never
  lose or repeat a change, and a change the device made itself is put into the view as it
  is applied, so it is never echoed back (checklist 1.10.1).
- FolderSync with key 0 never throws away the item states of folders that still exist
  (some clients send it on every pull-to-refresh): only a collection's own key 0 does.

Every record is a msgpack map with a schema version; a record that cannot be read is
treated as absent (the client resyncs that collection) and logged. Writes are durable:
a temporary file in the same folder, fsync, rename, fsync of the folder.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
import zlib
from array import array
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgpack

log = logging.getLogger("mailhost.activesync")

SCHEMA_VERSION: Final = 1
# MS-ASCMD 2.2.3.181.4: SyncKey is a string of at most 64 characters.
MAX_SYNC_KEY_LENGTH: Final = 64
# ClientIds remembered per collection for idempotent Adds (a device resends at most the
# Adds of its last request) and per device for SendMail 118 MessagePreviouslySent.
MAX_CLIENT_IDS: Final = 500
MAX_SENT_CLIENT_IDS: Final = 500
# Items whose flag dates or reply verbs are kept beside the store, per mailbox; the oldest
# entries are dropped beyond this (the store keeps the flags themselves).
MAX_ITEM_PROPS: Final = 100_000
# A state file larger than this is not read (a 1,000,000-message folder view is ~20 MB).
MAX_STATE_FILE: Final = 64 * 1024 * 1024

_KEY: Final = re.compile(r"\{([0-9a-f]{1,32})\}([0-9]{1,12})")
_SAFE_NAME: Final = re.compile(r"[0-9A-Za-z._-]{1,128}")

# Change-token layout (64 bits): the six store flag bits, 29 bits of the keywords' CRC, 29 of
# the extra properties' CRC. Equal tokens mean the device's copy is current.
TOKEN_FLAG_BITS: Final = 0x3F
_KW_SHIFT: Final = 6
_PROPS_SHIFT: Final = 35
_CRC_MASK: Final = 0x1FFF_FFFF


def change_token(flag_bits: int, keywords: Iterable[str], props_crc: int = 0) -> int:
    """The token of an item's mutable state (flags, categories, flag dates, verbs)."""
    kw = sorted(keywords)
    kw_crc = zlib.crc32("\x00".join(kw).encode("utf-8", "surrogatepass")) if kw else 0
    return (
        (flag_bits & TOKEN_FLAG_BITS)
        | ((kw_crc & _CRC_MASK) << _KW_SHIFT)
        | ((props_crc & _CRC_MASK) << _PROPS_SHIFT)
    )


def new_generation() -> str:
    return secrets.token_hex(8)


def format_key(generation: str, counter: int) -> str:
    return f"{{{generation}}}{counter}"


def parse_key(text: str) -> tuple[str, int] | None:
    """(generation, counter) of a key we issued; None for anything else (also "0")."""
    if len(text) > MAX_SYNC_KEY_LENGTH:
        return None
    match = _KEY.fullmatch(text.strip())
    if match is None:
        return None
    return match.group(1), int(match.group(2))


# --- the states ------------------------------------------------------------------------


@dataclass(slots=True)
class CollectionState:
    """One collection as one device knows it, at one SyncKey."""

    collection_id: str
    generation: str
    counter: int
    uidvalidity: int
    filter_type: int = 0
    # uid -> change token of the device's copy (uids are the store's, in this folder)
    view: dict[int, int] = field(default_factory=dict)
    # the folder's HIGHESTMODSEQ when the view last caught up (Ping's fast check)
    modseq: int = 0
    # MoreAvailable was sent: the device has not caught up yet
    pending: bool = False
    # ClientId -> uid of items the device added (Add is idempotent by ClientId)
    client_ids: dict[str, int] = field(default_factory=dict)
    # real uid -> the uid the device knows the item by (a draft changed in place gets a
    # new uid in the store; the device keeps its ServerId)
    aliases: dict[int, int] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return format_key(self.generation, self.counter)

    def copy(self) -> CollectionState:
        return CollectionState(
            self.collection_id,
            self.generation,
            self.counter,
            self.uidvalidity,
            self.filter_type,
            dict(self.view),
            self.modseq,
            self.pending,
            dict(self.client_ids),
            dict(self.aliases),
        )

    def next(self, counter: int) -> CollectionState:
        state = self.copy()
        state.counter = counter
        return state

    def remember_client_id(self, client_id: str, uid: int) -> None:
        self.client_ids[client_id] = uid
        while len(self.client_ids) > MAX_CLIENT_IDS:
            del self.client_ids[next(iter(self.client_ids))]

    def client_uid(self, real_uid: int) -> int:
        return self.aliases.get(real_uid, real_uid)

    def real_uid(self, client_uid: int) -> int:
        for real, shown in self.aliases.items():
            if shown == client_uid:
                return real
        return client_uid


@dataclass(slots=True)
class CollectionRecord:
    """The current state and the one before it (for a repeated SyncKey)."""

    current: CollectionState
    previous: CollectionState | None = None

    def match(self, key: str) -> CollectionState | None:
        """The state a client key names: the current one, or a copy of the previous one
        (replay); None when the key is neither."""
        if key == self.current.key:
            return self.current
        if self.previous is not None and key == self.previous.key:
            return self.previous.copy()
        return None

    @property
    def top_counter(self) -> int:
        return max(self.current.counter, self.previous.counter if self.previous else 0)


FolderEntry = tuple[str, str, int]  # (parent id, display name, EAS folder type)


@dataclass(slots=True)
class HierarchyState:
    generation: str
    counter: int
    view: dict[str, FolderEntry] = field(default_factory=dict)
    previous_counter: int | None = None
    previous_view: dict[str, FolderEntry] | None = None

    @property
    def key(self) -> str:
        return format_key(self.generation, self.counter)

    @property
    def previous_key(self) -> str | None:
        if self.previous_counter is None:
            return None
        return format_key(self.generation, self.previous_counter)


@dataclass(slots=True)
class DeviceState:
    """Per-device odds and ends: the last full Sync request (MS-ASCMD 3.1.5.3.1: an empty
    or Partial Sync reuses it), the last Ping (3.1.5.8: a body-less Ping reuses it) and
    the ClientIds of mail already sent (status 118)."""

    sync_request: dict[str, Any] | None = None
    ping: dict[str, Any] | None = None
    sent: list[str] = field(default_factory=list)

    def remember_sent(self, client_id: str) -> None:
        if client_id in self.sent:
            return
        self.sent.append(client_id)
        del self.sent[:-MAX_SENT_CLIENT_IDS]


@dataclass(slots=True)
class ItemProps:
    """Per-mailbox item properties EAS has and the store does not: follow-up flag details
    (MS-ASEMAIL 2.2.2.31: start/due/complete dates, reminder) and the last reply/forward
    verb with its time (Email2 LastVerbExecuted). Keyed "folder id:uid"."""

    items: dict[str, dict[str, Any]] = field(default_factory=dict)

    @staticmethod
    def key(folder_id: str, uid: int) -> str:
        return f"{folder_id}:{uid}"

    def get(self, folder_id: str, uid: int) -> dict[str, Any] | None:
        return self.items.get(self.key(folder_id, uid))

    def set(self, folder_id: str, uid: int, values: dict[str, Any] | None) -> None:
        key = self.key(folder_id, uid)
        self.items.pop(key, None)
        if values:
            self.items[key] = values
        while len(self.items) > MAX_ITEM_PROPS:
            del self.items[next(iter(self.items))]

    def move(self, folder_id: str, uid: int, dest_folder: str, dest_uid: int) -> None:
        values = self.items.pop(self.key(folder_id, uid), None)
        if values:
            self.items[self.key(dest_folder, dest_uid)] = values

    def crc(self, folder_id: str, uid: int) -> int:
        values = self.items.get(self.key(folder_id, uid))
        if not values:
            return 0
        return zlib.crc32(msgpack.packb(values, use_bin_type=True))

    def of_folder(self, folder_id: str) -> dict[int, dict[str, Any]]:
        prefix = folder_id + ":"
        out: dict[int, dict[str, Any]] = {}
        for key, values in self.items.items():
            if key.startswith(prefix):
                out[int(key[len(prefix) :])] = values
        return out


# --- the server-side difference (pure) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Difference:
    """What the device lacks, in the order it is sent: deletes, then changes, then adds
    (newest first, so a phone shows today's mail while older mail still arrives)."""

    deletes: tuple[int, ...]
    soft_deletes: tuple[int, ...]  # still in the folder, now outside the FilterType window
    changes: tuple[int, ...]
    adds: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.deletes) + len(self.soft_deletes) + len(self.changes) + len(self.adds)


def difference(
    view: Mapping[int, int], wanted: Mapping[int, int], present: Iterable[int] | None = None
) -> Difference:
    """Compare the device's view with the items it should have (`wanted`: uid -> token,
    already filtered). `present` are all uids in the folder: a viewed item that is present
    but not wanted left the filter window (SoftDelete, MS-ASCMD 2.2.3.172)."""
    present_set = set(present) if present is not None else set()
    deletes: list[int] = []
    soft: list[int] = []
    changes: list[int] = []
    for uid, token in view.items():
        want = wanted.get(uid)
        if want is None:
            (soft if uid in present_set else deletes).append(uid)
        elif want != token:
            changes.append(uid)
    adds = [uid for uid in wanted if uid not in view]
    adds.sort(reverse=True)
    deletes.sort()
    soft.sort()
    changes.sort()
    return Difference(tuple(deletes), tuple(soft), tuple(changes), tuple(adds))


# --- records -----------------------------------------------------------------------------


def _pack_view(view: Mapping[int, int]) -> tuple[bytes, bytes]:
    uids = array("Q", view.keys())
    tokens = array("Q", view.values())
    return uids.tobytes(), tokens.tobytes()


def _unpack_view(uids: bytes, tokens: bytes) -> dict[int, int]:
    a = array("Q")
    a.frombytes(uids)
    b = array("Q")
    b.frombytes(tokens)
    if len(a) != len(b):
        raise ValueError("view arrays differ in length")
    return dict(zip(a, b, strict=True))


def _collection_out(s: CollectionState) -> dict[str, Any]:
    uids, tokens = _pack_view(s.view)
    return {
        "id": s.collection_id,
        "gen": s.generation,
        "n": s.counter,
        "uv": s.uidvalidity,
        "filter": s.filter_type,
        "uids": uids,
        "tokens": tokens,
        "modseq": s.modseq,
        "pending": s.pending,
        "cids": s.client_ids,
        "alias": [[k, v] for k, v in s.aliases.items()],
    }


def _collection_in(d: dict[str, Any]) -> CollectionState:
    return CollectionState(
        collection_id=str(d["id"]),
        generation=str(d["gen"]),
        counter=int(d["n"]),
        uidvalidity=int(d["uv"]),
        filter_type=int(d["filter"]),
        view=_unpack_view(d["uids"], d["tokens"]),
        modseq=int(d["modseq"]),
        pending=bool(d["pending"]),
        client_ids={str(k): int(v) for k, v in d["cids"].items()},
        aliases={int(k): int(v) for k, v in d["alias"]},
    )


def _view_out(view: Mapping[str, FolderEntry]) -> list[list[Any]]:
    return [[fid, parent, name, kind] for fid, (parent, name, kind) in view.items()]


def _view_in(data: list[list[Any]]) -> dict[str, FolderEntry]:
    return {str(f): (str(p), str(n), int(k)) for f, p, n, k in data}


# --- the store of states -----------------------------------------------------------------


class SyncStateStore:
    """Blocking reads and durable writes of the states (run it in worker threads).

    Per device, a `trio`-free lock is not needed: the command handlers serialise a
    device's requests (`device_lock` in the push hub); different devices never share a
    file except the mailbox's item properties, which take `props_lock`.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._props_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # --- paths ---------------------------------------------------------------------------

    def _mailbox_dir(self, mailbox_id: str) -> Path:
        if not _SAFE_NAME.fullmatch(mailbox_id):
            raise ValueError("mailbox id is not a safe file name")
        return self.root / mailbox_id

    def _device_dir(self, mailbox_id: str, device_id: str) -> Path:
        if not _SAFE_NAME.fullmatch(device_id) or device_id.strip(".") == "":
            raise ValueError("device id is not a safe file name")
        return self._mailbox_dir(mailbox_id) / device_id

    def _collection_path(self, mailbox_id: str, device_id: str, collection_id: str) -> Path:
        if not _SAFE_NAME.fullmatch(collection_id):
            raise ValueError("collection id is not a safe file name")
        return self._device_dir(mailbox_id, device_id) / f"c-{collection_id}.state"

    # --- raw records ---------------------------------------------------------------------

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_STATE_FILE + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("eas state: cannot read %s: %s", path.name, exc)
            return None
        if len(data) > MAX_STATE_FILE:
            log.warning("eas state: %s is too large; ignored", path.name)
            return None
        try:
            record = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException) as exc:
            log.warning("eas state: %s is corrupt (%s); ignored", path.name, exc)
            return None
        if not isinstance(record, dict) or record.get("v") != SCHEMA_VERSION:
            log.warning("eas state: %s has an unknown schema; ignored", path.name)
            return None
        return record

    def _write(self, path: Path, record: dict[str, Any], *, durable: bool = True) -> None:
        record = {"v": SCHEMA_VERSION, **record}
        sync = self.fsync and durable
        data = msgpack.packb(record, use_bin_type=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as handle:
                handle.write(data)
                handle.flush()
                if sync:
                    os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        if sync:
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def _decode(self, path: Path, build: Any) -> Any:
        record = self._read(path)
        if record is None:
            return None
        try:
            return build(record)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("eas state: %s does not parse (%s); ignored", path.name, exc)
            return None

    # --- collections ---------------------------------------------------------------------

    def load_collection(
        self, mailbox_id: str, device_id: str, collection_id: str
    ) -> CollectionRecord | None:
        def build(r: dict[str, Any]) -> CollectionRecord:
            previous = _collection_in(r["previous"]) if r.get("previous") else None
            return CollectionRecord(_collection_in(r["current"]), previous)

        path = self._collection_path(mailbox_id, device_id, collection_id)
        record: CollectionRecord | None = self._decode(path, build)
        return record

    def save_collection(self, mailbox_id: str, device_id: str, record: CollectionRecord) -> None:
        path = self._collection_path(mailbox_id, device_id, record.current.collection_id)
        out: dict[str, Any] = {"current": _collection_out(record.current)}
        if record.previous is not None:
            out["previous"] = _collection_out(record.previous)
        self._write(path, out)

    def delete_collection(self, mailbox_id: str, device_id: str, collection_id: str) -> None:
        self._collection_path(mailbox_id, device_id, collection_id).unlink(missing_ok=True)

    def collections(self, mailbox_id: str, device_id: str) -> list[str]:
        folder = self._device_dir(mailbox_id, device_id)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(n[2:-6] for n in names if n.startswith("c-") and n.endswith(".state"))

    # --- hierarchy ------------------------------------------------------------------------

    def load_hierarchy(self, mailbox_id: str, device_id: str) -> HierarchyState | None:
        def build(r: dict[str, Any]) -> HierarchyState:
            return HierarchyState(
                generation=str(r["gen"]),
                counter=int(r["n"]),
                view=_view_in(r["view"]),
                previous_counter=r.get("pn"),
                previous_view=_view_in(r["pview"]) if r.get("pview") is not None else None,
            )

        path = self._device_dir(mailbox_id, device_id) / "hierarchy.state"
        state: HierarchyState | None = self._decode(path, build)
        return state

    def save_hierarchy(self, mailbox_id: str, device_id: str, state: HierarchyState) -> None:
        out: dict[str, Any] = {
            "gen": state.generation,
            "n": state.counter,
            "view": _view_out(state.view),
        }
        if state.previous_counter is not None and state.previous_view is not None:
            out["pn"] = state.previous_counter
            out["pview"] = _view_out(state.previous_view)
        self._write(self._device_dir(mailbox_id, device_id) / "hierarchy.state", out)

    # --- device ---------------------------------------------------------------------------

    def load_device(self, mailbox_id: str, device_id: str) -> DeviceState:
        def build(r: dict[str, Any]) -> DeviceState:
            return DeviceState(
                sync_request=r.get("sync"),
                ping=r.get("ping"),
                sent=[str(x) for x in r.get("sent", [])],
            )

        path = self._device_dir(mailbox_id, device_id) / "device.state"
        state: DeviceState | None = self._decode(path, build)
        return state or DeviceState()

    def save_device(
        self, mailbox_id: str, device_id: str, state: DeviceState, *, durable: bool = True
    ) -> None:
        """`durable=False` for what a lost write costs nothing (the cached Ping: the device
        sends a full Ping when told status 3); the sent ClientIds must survive a crash."""
        out = {"sync": state.sync_request, "ping": state.ping, "sent": state.sent}
        self._write(self._device_dir(mailbox_id, device_id) / "device.state", out, durable=durable)

    # --- item properties ------------------------------------------------------------------

    @contextmanager
    def props_lock(self, mailbox_id: str) -> Iterator[None]:
        with self._guard:
            lock = self._props_locks.setdefault(mailbox_id, threading.Lock())
        with lock:
            yield

    def load_props(self, mailbox_id: str) -> ItemProps:
        def build(r: dict[str, Any]) -> ItemProps:
            return ItemProps({str(k): dict(v) for k, v in r["items"].items()})

        path = self._mailbox_dir(mailbox_id) / "items.state"
        props: ItemProps | None = self._decode(path, build)
        return props or ItemProps()

    def save_props(self, mailbox_id: str, props: ItemProps) -> None:
        self._write(self._mailbox_dir(mailbox_id) / "items.state", {"items": props.items})

    @contextmanager
    def editing_props(self, mailbox_id: str) -> Iterator[ItemProps]:
        """Load, let the caller change, and save the mailbox's item properties (locked)."""
        with self.props_lock(mailbox_id):
            props = self.load_props(mailbox_id)
            before = dict(props.items)
            yield props
            if props.items != before:
                self.save_props(mailbox_id, props)

    # --- cleanup --------------------------------------------------------------------------

    def forget_device(self, mailbox_id: str, device_id: str) -> None:
        folder = self._device_dir(mailbox_id, device_id)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return
        for name in names:
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()
