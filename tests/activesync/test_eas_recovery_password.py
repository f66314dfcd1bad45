"""The device recovery password on the real server: refused (status 7) unless the user's
policy enables password recovery; stored by Settings DevicePassword encrypted, so no
file in the data folder holds it in plain text; shown by `mailhost device
recovery-password`, each read recorded."""

from __future__ import annotations

import json
from pathlib import Path

from harness import Instance
from test_eas_policy_support import cli_json, client, folder_sync_status, settings

from protocols.activesync.wbxml import E, Element

PASSWORD = "4711-0815-Zebra!"


def device_password(password: str) -> Element:
    return settings(
        E("Settings:DevicePassword", E("Settings:Set", E("Settings:Password", password)))
    )


def files_containing(folder: Path, needle: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_recovery_password_stored_encrypted_and_shown_by_the_cli(instance: Instance) -> None:
    instance.cli("eas-policy", "add", "Recovery", "--require-password",
                 "--password-recovery-enabled")  # fmt: skip
    with instance.start() as server:
        phone = client(server, instance, "16.1")
        other = client(server, instance, "16.1", device_id="OTHER1")
        try:
            phone.provision()
            other.provision()
            denied = phone.command("Settings", device_password(PASSWORD))
            assert denied.status_at("DevicePassword/Status") == 7  # the policy does not allow
            instance.cli("user", "set", instance.user, "--eas-policy", "Recovery")
            assert folder_sync_status(phone).status_at() == 143
            phone.provision()
            stored = phone.command("Settings", device_password(PASSWORD))
            assert stored.status_at("Status") == 1
            assert stored.status_at("DevicePassword/Status") == 1
        finally:
            phone.close()
            other.close()
        log = server.log()
    assert PASSWORD.encode() not in log.encode()
    assert files_containing(instance.folder, PASSWORD.encode()) == []
    shown = instance.cli("device", "recovery-password", phone.device_id)
    assert PASSWORD in shown.stdout and "audit" in shown.stderr
    rows = json.loads(
        instance.cli("device", "recovery-password", "--user", instance.user, "--json").stdout
    )
    assert {r["device_id"]: r["password"] for r in rows} == {
        phone.device_id.lower(): PASSWORD,
        "other1": None,
    }
    reads = cli_json(instance, "device", "show", phone.device_id)["recovery_password_reads"]
    assert len(reads) == 2 and all(" by " in r for r in reads)
    assert cli_json(instance, "device", "show", "OTHER1")["recovery_password_reads"] == []
    none = instance.cli("device", "recovery-password", "OTHER1", check=False)
    assert none.returncode == 1 and "no recovery password" in none.stderr
    # Reading it back is the CLI's job only: the key file is the owner's alone.
    assert (instance.folder / "eas-recovery.key").stat().st_mode & 0o077 == 0
