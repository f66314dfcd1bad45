"""Remote wipe end to end on the real server: `mailhost device wipe` (and
`--account-only` for 16.1), the device told on its next request, the directive repeated
until acknowledged, the acknowledgement recorded with its time, a confirmation mail in
the user's Inbox, the device refused afterwards until `mailhost device remove`."""

from __future__ import annotations

from eas_client import wipe_acknowledgement
from harness import Instance
from test_eas_policy_support import cli_json, client, folder_sync_status, subjects, wait_for


def test_full_wipe_at_14_1_and_account_only_wipe_at_16_1(instance: Instance) -> None:
    with instance.start() as server:
        old = client(server, instance, "14.1", device_id="WIPE14")
        new = client(server, instance, "16.1", device_id="WIPE16")
        try:
            old.provision()
            new.provision()
            refused = instance.cli("device", "wipe", "WIPE14", "--account-only", check=False)
            assert refused.returncode == 1 and "needs 16.1" in refused.stderr
            instance.cli("device", "wipe", "WIPE14")
            assert cli_json(instance, "device", "show", "wipe14")["status"] == "wipe-pending"
            assert folder_sync_status(old).status_at() == 140  # RemoteWipeRequested
            for _ in range(2):  # repeated until acknowledged
                directive = old.provision_initial()
                assert directive.status == 200 and directive.document is not None
                assert directive.document.find("RemoteWipe") is not None
                assert directive.document.find("Policies") is None
            shown = cli_json(instance, "device", "show", "WIPE14")
            assert shown["wipe_requested"] and shown["wipe_sent"]
            assert shown["wipe_acknowledged"] is None and shown["wipe_requested_by"]
            done = old.command("Provision", wipe_acknowledgement(1))
            assert done.status == 200 and done.status_at() == 1
            shown = cli_json(instance, "device", "show", "WIPE14")
            assert shown["wipe"] == "wiped" and shown["status"] == "wipe-wiped"
            assert shown["wipe_acknowledged"] is not None
            wait_for(lambda: "Your device was wiped" in subjects(instance, instance.user),
                     "the wipe confirmation")  # fmt: skip
            (mail,) = [m for m in instance.inbox(instance.user)
                       if m["Subject"] == "Your device was wiped"]  # fmt: skip
            body = mail.get_content()
            assert "reset to its factory settings" in body and "wipe14" in body
            assert mail["Auto-Submitted"] == "auto-generated"
            # Refused from now on, even if it says it provisions again.
            assert folder_sync_status(old).status == 403
            assert old.provision_initial().status == 403
            again = instance.cli("device", "wipe", "WIPE14", check=False)
            assert again.returncode == 1 and "wiped already" in again.stderr

            # 16.1: only this account's data.
            instance.cli("device", "wipe", "WIPE16", "--account-only")
            assert folder_sync_status(new).status_at() == 140
            directive = new.provision_initial()
            assert directive.document is not None
            assert directive.document.find("AccountOnlyRemoteWipe") is not None
            assert directive.document.find("RemoteWipe") is None
            done = new.command("Provision", wipe_acknowledgement(1, account_only=True))
            assert done.status_at() == 1
            assert cli_json(instance, "device", "show", "WIPE16")["wipe"] == "account-only-wiped"
            wait_for(lambda: subjects(instance, instance.user).count("Your device was wiped") == 2,
                     "the account-only wipe confirmation")  # fmt: skip
            assert folder_sync_status(new).status == 403

            # The administrator forgets the wiped phone: it may partner again.
            instance.cli("device", "remove", "WIPE14")
            assert [d["device_id"] for d in cli_json(instance, "device", "list")] == ["wipe16"]
            old.policy_key = None
            old.provision()
            assert folder_sync_status(old).status_at() == 1
            assert cli_json(instance, "device", "show", "WIPE14")["wipe"] == "none"
        finally:
            old.close()
            new.close()
