"""ActiveSync device partnerships in the directory database (`eas_` tables).

The registry opens `directory.sqlite3` with a connection of its own and keeps to its own
tables, so the directory code and this one never step on each other; WAL lets the CLI
and the server use the file at once. Each partnership is one row: the columns an
administrator filters on (user, type, wipe and access state, last sync) plus the whole
record as versioned JSON, so new fields need no migration.

Durability: `synchronous=NORMAL` (WAL). A power cut can lose the last seconds of
last-seen times and policy keys; a device whose key was lost gets 144 and provisions
again, which is the protocol's own recovery path.

Recovery passwords (Settings DevicePassword) are encrypted at rest with AES-256-GCM
under a key kept in its own file (mode 0600) beside the database, bound to the
partnership they belong to, so a copy of the database alone does not reveal them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailhost.database import Database
from protocols.activesync.devices import (
    DEVICE_SCHEMA_VERSION,
    Device,
    DeviceAccess,
    DeviceInformation,
    DeviceNotFound,
    DeviceRegistryError,
    TooManyDevices,
    WipeState,
)

RECOVERY_KEY_BYTES: Final = 32  # AES-256-GCM
NONCE_BYTES: Final = 12  # NIST SP 800-38D 8.2: 96-bit nonces
_DEVICE_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(Device))
_INFO_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(DeviceInformation))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS eas_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS eas_devices(
    owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    user TEXT NOT NULL,
    device_type TEXT NOT NULL,
    access TEXT NOT NULL,
    wipe TEXT NOT NULL,
    first_sync REAL NOT NULL,
    last_sync REAL NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY(owner, device_id)
);
CREATE INDEX IF NOT EXISTS eas_devices_user ON eas_devices(user);
CREATE TABLE IF NOT EXISTS eas_recovery_passwords(
    owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    stored REAL NOT NULL,
    PRIMARY KEY(owner, device_id)
);
"""


class RecoveryKey:
    """The AES-256-GCM key for recovery passwords, created on first use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            if self._key is None:
                self._key = self._load_or_create()
            return self._key

    def _load_or_create(self) -> bytes:
        try:
            key = self.path.read_bytes()
        except FileNotFoundError:
            key = os.urandom(RECOVERY_KEY_BYTES)
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                key = self.path.read_bytes()
            else:
                try:
                    os.write(fd, key)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                directory = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)
        if len(key) != RECOVERY_KEY_BYTES:
            raise DeviceRegistryError(f"{self.path}: not a {RECOVERY_KEY_BYTES}-byte key")
        return key


class SqliteDeviceRegistry:
    """`protocols.activesync.devices.DeviceRegistry` over the directory database.
    Thread-safe (one connection behind a lock; every method is one short transaction)."""

    def __init__(self, path: Path, *, recovery_key_path: Path) -> None:
        self.path = path
        self._recovery_key = RecoveryKey(recovery_key_path)
        self._database = Database(path, synchronous="NORMAL", error=DeviceRegistryError)
        self._migrate()

    @property
    def _db(self) -> sqlite3.Connection:
        return self._database.db

    def close(self) -> None:
        self._database.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._database.transaction()

    def _migrate(self) -> None:
        self._database.create(
            _SCHEMA, meta_table="eas_meta", version=DEVICE_SCHEMA_VERSION, what="device registry"
        )

    # --- partnerships -----------------------------------------------------------------

    def get(self, owner: str, device_id: str) -> Device | None:
        row = self._db.execute(
            "SELECT record FROM eas_devices WHERE owner=? AND device_id=?", (owner, device_id)
        ).fetchone()
        return _load(row[0]) if row else None

    def add(self, device: Device, *, max_per_owner: int) -> Device:
        with self._transaction() as db:
            row = db.execute(
                "SELECT record FROM eas_devices WHERE owner=? AND device_id=?",
                (device.owner, device.device_id),
            ).fetchone()
            if row:
                return _load(row[0])
            count = db.execute(
                "SELECT count(*) FROM eas_devices WHERE owner=?", (device.owner,)
            ).fetchone()[0]
            if count >= max_per_owner:
                raise TooManyDevices(f"{device.user} has {count} devices")
            db.execute(
                "INSERT INTO eas_devices(owner, device_id, user, device_type, access, wipe, "
                "first_sync, last_sync, record) VALUES(?,?,?,?,?,?,?,?,?)",
                (
                    device.owner,
                    device.device_id,
                    *_columns(device),
                    device.first_sync,
                    device.last_sync,
                    _dump(device),
                ),
            )
        return device

    def modify(self, owner: str, device_id: str, change: Callable[[Device], Device]) -> Device:
        with self._transaction() as db:
            row = db.execute(
                "SELECT record FROM eas_devices WHERE owner=? AND device_id=?", (owner, device_id)
            ).fetchone()
            if row is None:
                raise DeviceNotFound(f"no device {device_id}")
            updated = change(_load(row[0]))
            if (updated.owner, updated.device_id) != (owner, device_id):
                raise DeviceRegistryError("a change may not move a partnership")
            db.execute(
                "UPDATE eas_devices SET user=?, device_type=?, access=?, wipe=?, last_sync=?, "
                "record=? WHERE owner=? AND device_id=?",
                (
                    *_columns(updated),
                    updated.last_sync,
                    _dump(updated),
                    owner,
                    device_id,
                ),
            )
        return updated

    def devices_of(self, owner: str) -> list[Device]:
        rows = self._db.execute(
            "SELECT record FROM eas_devices WHERE owner=? ORDER BY device_id", (owner,)
        ).fetchall()
        return [_load(row[0]) for row in rows]

    def devices_of_user(self, address: str) -> list[Device]:
        """By the primary address last seen (what the CLI's --user gives)."""
        rows = self._db.execute(
            "SELECT record FROM eas_devices WHERE user=? ORDER BY device_id",
            (address.strip().lower(),),
        ).fetchall()
        return [_load(row[0]) for row in rows]

    def devices_with_id(self, device_id: str) -> list[Device]:
        """Every partnership of this DeviceId (one per account that used it): the CLI's
        `device show ID` when it is not told the user."""
        rows = self._db.execute(
            "SELECT record FROM eas_devices WHERE device_id=? ORDER BY user",
            (device_id.strip().lower(),),
        ).fetchall()
        return [_load(row[0]) for row in rows]

    def all_devices(self) -> list[Device]:
        rows = self._db.execute(
            "SELECT record FROM eas_devices ORDER BY user, device_id"
        ).fetchall()
        return [_load(row[0]) for row in rows]

    def remove(self, owner: str, device_id: str) -> bool:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM eas_recovery_passwords WHERE owner=? AND device_id=?",
                (owner, device_id),
            )
            cursor = db.execute(
                "DELETE FROM eas_devices WHERE owner=? AND device_id=?", (owner, device_id)
            )
            return cursor.rowcount > 0

    # --- recovery passwords --------------------------------------------------------------

    def set_recovery_password(self, owner: str, device_id: str, password: str) -> None:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._recovery_key.get()).encrypt(
            nonce, password.encode("utf-8"), _associated_data(owner, device_id)
        )
        with self._transaction() as db:
            if not db.execute(
                "SELECT 1 FROM eas_devices WHERE owner=? AND device_id=?", (owner, device_id)
            ).fetchone():
                raise DeviceNotFound(f"no device {device_id}")
            db.execute(
                "INSERT OR REPLACE INTO eas_recovery_passwords(owner, device_id, nonce, "
                "ciphertext, stored) VALUES(?,?,?,?,?)",
                (owner, device_id, nonce, sealed, time.time()),
            )

    def recovery_password(self, owner: str, device_id: str) -> str | None:
        row = self._db.execute(
            "SELECT nonce, ciphertext FROM eas_recovery_passwords WHERE owner=? AND device_id=?",
            (owner, device_id),
        ).fetchone()
        if row is None:
            return None
        try:
            plain = AESGCM(self._recovery_key.get()).decrypt(
                bytes(row[0]), bytes(row[1]), _associated_data(owner, device_id)
            )
        except InvalidTag:
            raise DeviceRegistryError(
                f"recovery password of {device_id} does not decrypt (wrong key file?)"
            ) from None
        return plain.decode("utf-8")


def _associated_data(owner: str, device_id: str) -> bytes:
    # Binds the ciphertext to its partnership: it cannot be copied to another row.
    return f"mailhost-eas-recovery\0{owner}\0{device_id}".encode()


def _columns(device: Device) -> tuple[str, str, str, str]:
    return (device.user, device.device_type, device.access.value, device.wipe.value)


def _dump(device: Device) -> str:
    record: dict[str, Any] = dataclasses.asdict(device)
    record["v"] = DEVICE_SCHEMA_VERSION
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def _load(text: str) -> Device:
    record: dict[str, Any] = json.loads(text)
    version = record.pop("v", 0)
    if version > DEVICE_SCHEMA_VERSION:
        raise DeviceRegistryError(f"device record schema {version} is newer than this program")
    values = {k: v for k, v in record.items() if k in _DEVICE_FIELDS}
    info = values.get("info") or {}
    values["info"] = DeviceInformation(**{k: v for k, v in info.items() if k in _INFO_FIELDS})
    values["access"] = DeviceAccess(values.get("access", DeviceAccess.ALLOWED.value))
    values["wipe"] = WipeState(values.get("wipe", WipeState.NONE.value))
    return Device(**values)
