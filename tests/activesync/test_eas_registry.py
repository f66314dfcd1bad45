"""The partnership registry: the SQLite implementation (mailhost.devices) and the memory
one honour the same contract; the SQLite one shares the directory's database file
without touching its tables, and is atomic across connections."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailhost.devices import RECOVERY_KEY_BYTES, SqliteDeviceRegistry
from mailhost.directory import Directory
from protocols.activesync.devices import (
    Device,
    DeviceAccess,
    DeviceInformation,
    DeviceNotFound,
    DeviceRegistry,
    DeviceRegistryError,
    MemoryDeviceRegistry,
    TooManyDevices,
    WipeState,
)

DEVICE = Device(
    owner="guid-a",
    device_id="dev1",
    user="alice@example.org",
    device_type="iPhone",
    first_sync=100.0,
    last_sync=100.0,
    user_agent="Apple-iPhone/1",
    protocol_version="16.1",
    info=DeviceInformation(model="iPhone15C2", imei="35", enable_outbound_sms=False),
    policy_key=42,
    policy_key_issued=101.0,
    policy_name="Default",
    policy_stamp="abc",
    access=DeviceAccess.QUARANTINED,
    wipe=WipeState.ACCOUNT_ONLY_PENDING,
    wipe_requested=102.0,
    wipe_requested_by="admin",
)


@pytest.fixture(params=["sqlite", "memory"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeviceRegistry]:
    if request.param == "memory":
        yield MemoryDeviceRegistry()
        return
    sqlite_registry = SqliteDeviceRegistry(
        tmp_path / "directory.sqlite3", recovery_key_path=tmp_path / "eas-recovery.key"
    )
    yield sqlite_registry
    sqlite_registry.close()


def test_round_trip(registry: DeviceRegistry) -> None:
    assert registry.add(DEVICE, max_per_owner=5) == DEVICE
    assert registry.get("guid-a", "dev1") == DEVICE
    assert registry.get("guid-b", "dev1") is None
    changed = registry.modify(
        "guid-a", "dev1", lambda d: dataclasses.replace(d, wipe=WipeState.WIPED)
    )
    assert changed.wipe is WipeState.WIPED and registry.get("guid-a", "dev1") == changed
    assert registry.devices_of("guid-a") == [changed] and registry.all_devices() == [changed]
    assert registry.remove("guid-a", "dev1") and not registry.remove("guid-a", "dev1")
    assert registry.get("guid-a", "dev1") is None


def test_add_is_idempotent_and_bounded(registry: DeviceRegistry) -> None:
    registry.add(DEVICE, max_per_owner=2)
    newer = dataclasses.replace(DEVICE, device_type="Other")
    assert registry.add(newer, max_per_owner=2) == DEVICE  # the existing one wins
    registry.add(dataclasses.replace(DEVICE, device_id="dev2"), max_per_owner=2)
    with pytest.raises(TooManyDevices):
        registry.add(dataclasses.replace(DEVICE, device_id="dev3"), max_per_owner=2)
    registry.add(dataclasses.replace(DEVICE, owner="guid-b", device_id="dev3"), max_per_owner=2)


def test_modify_and_recovery_need_the_device(registry: DeviceRegistry) -> None:
    with pytest.raises(DeviceNotFound):
        registry.modify("guid-a", "nope", lambda d: d)
    with pytest.raises(DeviceNotFound):
        registry.set_recovery_password("guid-a", "nope", "x")
    registry.add(DEVICE, max_per_owner=5)
    assert registry.recovery_password("guid-a", "dev1") is None
    registry.set_recovery_password("guid-a", "dev1", "first")
    registry.set_recovery_password("guid-a", "dev1", "second ✓")
    assert registry.recovery_password("guid-a", "dev1") == "second ✓"
    registry.remove("guid-a", "dev1")
    registry.add(DEVICE, max_per_owner=5)
    assert registry.recovery_password("guid-a", "dev1") is None


def test_concurrent_modifies_lose_nothing(registry: DeviceRegistry) -> None:
    registry.add(dataclasses.replace(DEVICE, last_sync=0.0), max_per_owner=5)

    def bump() -> None:
        for _ in range(50):
            registry.modify(
                "guid-a", "dev1", lambda d: dataclasses.replace(d, last_sync=d.last_sync + 1)
            )

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    device = registry.get("guid-a", "dev1")
    assert device is not None and device.last_sync == 300


def open_pair(tmp_path: Path) -> tuple[SqliteDeviceRegistry, SqliteDeviceRegistry]:
    key = tmp_path / "eas-recovery.key"
    path = tmp_path / "directory.sqlite3"
    return SqliteDeviceRegistry(path, recovery_key_path=key), SqliteDeviceRegistry(
        path, recovery_key_path=key
    )


def test_atomic_across_connections(tmp_path: Path) -> None:
    server, cli = open_pair(tmp_path)
    server.add(dataclasses.replace(DEVICE, last_sync=0.0, wipe=WipeState.NONE), max_per_owner=5)
    done = threading.Event()

    def server_loop() -> None:
        for _ in range(100):
            server.modify(
                "guid-a", "dev1", lambda d: dataclasses.replace(d, last_sync=d.last_sync + 1)
            )
        done.set()

    thread = threading.Thread(target=server_loop)
    thread.start()
    cli.modify("guid-a", "dev1", lambda d: dataclasses.replace(d, wipe=WipeState.PENDING))
    thread.join()
    final = server.get("guid-a", "dev1")
    assert final is not None and final.last_sync == 100 and final.wipe is WipeState.PENDING
    assert cli.recovery_password("guid-a", "dev1") is None
    server.set_recovery_password("guid-a", "dev1", "shared")
    assert cli.recovery_password("guid-a", "dev1") == "shared"
    server.close()
    cli.close()


def test_shares_the_directory_file_without_touching_its_tables(tmp_path: Path) -> None:
    path = tmp_path / "directory.sqlite3"
    directory = Directory(path)
    directory.add_domain("example.org")
    directory.add_user("alice@example.org", "correct horse battery")

    def snapshot() -> list[tuple[str, ...]]:
        with sqlite3.connect(path) as db:
            return db.execute(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name NOT LIKE 'eas\\_%' ESCAPE '\\' "
                "ORDER BY name"
            ).fetchall()

    before = snapshot()
    registry = SqliteDeviceRegistry(path, recovery_key_path=tmp_path / "k")
    registry.add(DEVICE, max_per_owner=5)
    assert snapshot() == before
    with sqlite3.connect(path) as db:
        names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"eas_meta", "eas_devices", "eas_recovery_passwords"} <= names
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert directory.user("alice@example.org").primary_address == "alice@example.org"
    assert registry.devices_of_user("ALICE@example.org") == [DEVICE]
    other = dataclasses.replace(DEVICE, owner="guid-b", user="bob@example.org")
    registry.add(other, max_per_owner=5)
    assert registry.devices_with_id("DEV1") == [DEVICE, other]
    registry.close()
    directory.close()


def test_newer_schema_and_records_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    registry = SqliteDeviceRegistry(path, recovery_key_path=tmp_path / "k")
    registry.add(DEVICE, max_per_owner=5)
    registry.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE eas_devices SET record=json_set(record, '$.v', 99, '$.future', 1)")
    registry = SqliteDeviceRegistry(path, recovery_key_path=tmp_path / "k")
    with pytest.raises(DeviceRegistryError):
        registry.get("guid-a", "dev1")
    registry.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE eas_devices SET record=json_set(record, '$.v', 1)")
    registry = SqliteDeviceRegistry(path, recovery_key_path=tmp_path / "k")
    assert registry.get("guid-a", "dev1") == DEVICE  # unknown fields are ignored
    registry.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE eas_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(DeviceRegistryError):
        SqliteDeviceRegistry(path, recovery_key_path=tmp_path / "k")


def test_recovery_key_file(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    key = tmp_path / "k"
    registry = SqliteDeviceRegistry(path, recovery_key_path=key)
    registry.add(DEVICE, max_per_owner=5)
    registry.set_recovery_password("guid-a", "dev1", "s3cret")
    assert len(key.read_bytes()) == RECOVERY_KEY_BYTES and key.stat().st_mode & 0o777 == 0o600
    registry.close()
    key.write_bytes(b"\x00" * RECOVERY_KEY_BYTES)  # another key: the password does not open
    other = SqliteDeviceRegistry(path, recovery_key_path=key)
    with pytest.raises(DeviceRegistryError):
        other.recovery_password("guid-a", "dev1")
    other.close()
    key.write_bytes(b"short")
    broken = SqliteDeviceRegistry(path, recovery_key_path=key)
    with pytest.raises(DeviceRegistryError):
        broken.recovery_password("guid-a", "dev1")
    broken.close()


def test_a_ciphertext_does_not_move_to_another_device(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite3"
    registry = SqliteDeviceRegistry(path, recovery_key_path=tmp_path / "k")
    registry.add(DEVICE, max_per_owner=5)
    registry.add(dataclasses.replace(DEVICE, device_id="dev2"), max_per_owner=5)
    registry.set_recovery_password("guid-a", "dev1", "mine")
    registry.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE eas_recovery_passwords SET device_id='dev2'")
    registry = SqliteDeviceRegistry(path, recovery_key_path=tmp_path / "k")
    with pytest.raises(DeviceRegistryError):
        registry.recovery_password("guid-a", "dev2")
    registry.close()


Factory = Callable[[], DeviceRegistry]
