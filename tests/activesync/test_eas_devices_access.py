"""Devices on the real server: `mailhost device list/show` with the figures of Exchange's
Get-ActiveSyncDeviceStatistics, and device access rules (Exchange 2010 SP1): block or
quarantine by device type or model, a default access level, a per-device exemption, and
the notice mail the user gets in their Inbox."""

from __future__ import annotations

from eas_client import (
    POLICY_TYPE,
    EasClient,
    device_information_set,
    sync_collection,
    sync_request,
    sync_result,
)
from harness import Instance
from test_eas_policy_support import (
    cli_json,
    client,
    folder_sync_status,
    subjects,
    wait_for,
)

from protocols.activesync.wbxml import E, Element


def provision_request(**information: str) -> Element:
    return E(
        "Provision:Provision",
        device_information_set(**information),
        E("Provision:Policies", E("Provision:Policy", E("Provision:PolicyType", POLICY_TYPE))),
    )


def provision_as(phone: EasClient, **information: str) -> None:
    """Both phases, the device describing itself with `information`."""
    first = phone.command("Provision", provision_request(**information), policy_key=None)
    assert first.status == 200 and first.status_at() == 1, first
    temporary = first.text("Policies/Policy/PolicyKey") or ""
    phone.policy_key = temporary
    final = phone.acknowledge(temporary)
    assert final.status == 200 and final.text("Policies/Policy/Status") == "1", final
    phone.policy_key = final.text("Policies/Policy/PolicyKey")


def test_device_statistics_and_access_rules(instance: Instance) -> None:
    instance.cli("device-access-rule", "add", "device-type", "BadPhone", "block")
    instance.cli("device-access-rule", "add", "model", "Nokia*", "quarantine")
    with instance.start() as server:
        phone = client(server, instance)
        blocked = client(server, instance, device_id="BLOCKED1", device_type="BadPhone")
        nokia = client(server, instance, device_id="NOKIA1", device_type="Android")
        try:
            # An allowed iPhone: provisioned, one folder synced.
            phone.provision()
            inbox = "1"
            hierarchy = phone.command("FolderSync", E("FolderHierarchy:FolderSync",
                                                      E("FolderHierarchy:SyncKey", "0")))  # fmt: skip
            for add in hierarchy.document.findall("Changes/Add"):
                if add.text_of("Type") == "2":
                    inbox = add.text_of("ServerId") or inbox
            key = sync_result(phone.command("Sync", sync_request(sync_collection(inbox, "0"))))
            assert key.status == 1
            shown = cli_json(instance, "device", "show", phone.device_id)
            assert shown["device_type"] == "iPhone" and shown["model"] == "iPhone15C2"
            assert shown["imei"] == "356938035643809"
            assert shown["phone_number"] == "+15555550100"
            assert shown["os"] == "iOS 17.4 21E219"
            assert shown["user_agent"] == "Apple-iPhone15C2/2101.1"
            assert shown["friendly_name"] == "Alice's iPhone"
            assert shown["protocol_version"] == "16.1"
            assert shown["first_sync"] and shown["last_sync"] and shown["last_policy_update"]
            assert shown["policy_applied"] == "Default" and shown["status"] == "ok"
            assert shown["folders_synced"] == 1 and shown["access"] == "allowed"

            # Blocked by type at first sight: 403, and the user is told once.
            assert folder_sync_status(blocked).status == 403
            assert blocked.provision_initial().status == 403
            wait_for(lambda: "Your device BadPhone is blocked" in subjects(instance, instance.user),
                     "the blocked-device notice")  # fmt: skip

            # A model rule applies once the device has said its model (in Provision).
            first = nokia.command("Provision", provision_request(Model="Nokia X20", FriendlyName="Work Nokia"),
                                  policy_key=None)  # fmt: skip
            assert first.status == 200 and first.status_at() == 1
            nokia.policy_key = first.text("Policies/Policy/PolicyKey")
            assert nokia.acknowledge(nokia.policy_key or "").status == 403
            notices = wait_for(
                lambda: [s for s in subjects(instance, instance.user) if "quarantined" in s],
                "the quarantine notice",
            )
            assert notices == ["Your device Work Nokia is quarantined"]
            listed = {d["device_id"]: d for d in cli_json(instance, "device", "list")}
            assert listed["nokia1"]["status"] == "quarantined"
            assert listed["blocked1"]["status"] == "blocked"
            assert listed[phone.device_id.lower()]["status"] == "ok"
            nokia_shown = cli_json(instance, "device", "show", "NOKIA1")
            assert nokia_shown["access_reason"] == "rule 2 (model Nokia*)"

            # The administrator lets this one phone in: a device-id rule beats the model.
            instance.cli("device-access-rule", "add", "device-id", "NOKIA1", "allow")
            provision_as(nokia, Model="Nokia X20", FriendlyName="Work Nokia")
            assert folder_sync_status(nokia).status_at() == 1
            assert folder_sync_status(blocked).status == 403
            assert folder_sync_status(phone).status_at() == 1

            # Quarantine by default: a new phone is refused, its model is still learnt
            # from the refused Provision, and a model rule lets it in.
            instance.cli("device-access-rule", "default", "quarantine")
            newcomer = client(server, instance, device_id="NEW1", device_type="Android")
            refused = newcomer.command("Provision", provision_request(Model="Pixel 8"),
                                       policy_key=None)  # fmt: skip
            assert refused.status == 403
            assert cli_json(instance, "device", "show", "NEW1")["model"] == "Pixel 8"
            instance.cli("device-access-rule", "add", "model", "pixel 8", "allow")
            provision_as(newcomer, Model="Pixel 8")
            assert folder_sync_status(newcomer).status_at() == 1
            assert folder_sync_status(phone).status == 403  # no rule for the iPhone now
            newcomer.close()
        finally:
            for each in (phone, blocked, nokia):
                each.close()
    rules = cli_json(instance, "device-access-rule", "list")
    assert [(r["characteristic"], r["access"]) for r in rules] == [
        ("device-type", "blocked"),
        ("model", "quarantined"),
        ("device-id", "allowed"),
        ("model", "allowed"),
    ]
    instance.cli("device-access-rule", "remove", "2")
    duplicate = instance.cli("device-access-rule", "add", "device-id", "nokia1", "block",
                             check=False)  # fmt: skip
    assert duplicate.returncode == 1 and "already covers" in duplicate.stderr
    assert len(cli_json(instance, "device", "list", "--user", instance.user)) == 4
