"""Mobile device mailbox policies end to end: every Exchange 2010 setting given through
`mailhost eas-policy`, assigned with `mailhost user set --eas-policy`, reaches the phone in
the EASProvisionDoc of the real server's Provision answer, read back with libwbxml's
`wbxml2xml` (not our decoder); changing the policy while the server runs makes the
device provision again."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from harness import Instance
from test_eas_policy_support import cli_json, client, folder_sync_status
from wbxml_tool import libwbxml_name, wbxml_to_xml

from protocols.activesync.policy import DOCUMENT_ELEMENTS, Policy

SHA1 = "a9993e364706816aba3e25717850c26c9cd0d89d"
# Every setting, away from its default (option, value) and the element value it must give.
STRICT = [
    ("--no-allow-non-provisionable-devices", None),
    ("--refresh-interval-hours", "24"),
    ("--require-password", None),
    ("--require-alphanumeric-password", None),
    ("--min-complex-characters", "3"),
    ("--password-recovery-enabled", None),
    ("--require-device-encryption", None),
    ("--require-storage-card-encryption", None),
    ("--no-allow-simple-password", None),
    ("--max-failed-attempts", "8"),
    ("--min-password-length", "6"),
    ("--max-inactivity-minutes", "15"),
    ("--password-expiration-days", "90"),
    ("--password-history", "5"),
    ("--max-calendar-age", "one-month"),
    ("--max-email-age", "two-weeks"),
    ("--max-email-body-kb", "100"),
    ("--max-email-html-body-kb", "200"),
    ("--no-allow-direct-push-when-roaming", None),
    ("--no-allow-html-email", None),
    ("--no-attachments-enabled", None),
    ("--max-attachment-kb", "1024"),
    ("--no-allow-storage-card", None),
    ("--no-allow-camera", None),
    ("--no-allow-wifi", None),
    ("--no-allow-irda", None),
    ("--no-allow-internet-sharing", None),
    ("--no-allow-remote-desktop", None),
    ("--no-allow-desktop-sync", None),
    ("--allow-bluetooth", "handsfree-only"),
    ("--no-allow-text-messaging", None),
    ("--no-allow-browser", None),
    ("--no-allow-consumer-email", None),
    ("--no-allow-pop-imap-email", None),
    ("--no-allow-unsigned-applications", None),
    ("--no-allow-unsigned-installation-packages", None),
    ("--require-signed-smime-messages", None),
    ("--require-encrypted-smime-messages", None),
    ("--smime-signing-algorithm", "md5"),
    ("--smime-encryption-algorithm", "rc2-128"),
    ("--smime-algorithm-negotiation", "strongest-only"),
    ("--no-allow-smime-soft-certs", None),
    ("--blocked-applications", "Solitaire.exe,Pinball.exe"),
    ("--allowed-applications", SHA1),
]
EXPECTED = {
    "DevicePasswordEnabled": "1",
    "AlphanumericDevicePasswordRequired": "1",
    "PasswordRecoveryEnabled": "1",
    "RequireStorageCardEncryption": "1",
    "AttachmentsEnabled": "0",
    "MinDevicePasswordLength": "6",
    "MaxInactivityTimeDeviceLock": "900",  # 15 minutes, in seconds
    "MaxDevicePasswordFailedAttempts": "8",
    "MaxAttachmentSize": str(1024 * 1024),  # 1024 KB, in bytes
    "AllowSimpleDevicePassword": "0",
    "DevicePasswordExpiration": "90",
    "DevicePasswordHistory": "5",
    "AllowStorageCard": "0",
    "AllowCamera": "0",
    "RequireDeviceEncryption": "1",
    "AllowUnsignedApplications": "0",
    "AllowUnsignedInstallationPackages": "0",
    "MinDevicePasswordComplexCharacters": "3",
    "AllowWiFi": "0",
    "AllowTextMessaging": "0",
    "AllowPOPIMAPEmail": "0",
    "AllowBluetooth": "1",
    "AllowIrDA": "0",
    "RequireManualSyncWhenRoaming": "1",
    "AllowDesktopSync": "0",
    "MaxCalendarAgeFilter": "5",
    "AllowHTMLEmail": "0",
    "MaxEmailAgeFilter": "4",
    "MaxEmailBodyTruncationSize": "100",
    "MaxEmailHTMLBodyTruncationSize": "200",
    "RequireSignedSMIMEMessages": "1",
    "RequireEncryptedSMIMEMessages": "1",
    "RequireSignedSMIMEAlgorithm": "1",
    "RequireEncryptionSMIMEAlgorithm": "2",
    "AllowSMIMEEncryptionAlgorithmNegotiation": "1",
    "AllowSMIMESoftCerts": "0",
    "AllowBrowser": "0",
    "AllowConsumerEmail": "0",
    "AllowRemoteDesktop": "0",
    "AllowInternetSharing": "0",
}


def strict_arguments() -> list[str]:
    out: list[str] = []
    for option, value in STRICT:
        out += [option] if value is None else [option, value]
    return out


def provision_document(body: bytes) -> dict[str, ET.Element]:
    """The EASProvisionDoc children of a Provision response as libwbxml decodes it,
    by our element names."""
    root = ET.fromstring(wbxml_to_xml(body))
    (document,) = [e for e in root.iter() if e.tag.endswith("}EASProvisionDoc")]
    ours = {libwbxml_name("Provision", name): name for name in DOCUMENT_ELEMENTS}
    return {ours[child.tag.split("}")[1]]: child for child in document}


def test_the_cli_offers_every_setting() -> None:
    options = {option.split("-", 3)[-1] if option.startswith("--no-") else option[2:]
               for option, _ in STRICT}  # fmt: skip
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(Policy)} - {"name"}
    assert options == fields
    assert set(EXPECTED) | {"UnapprovedInROMApplicationList", "ApprovedApplicationList"} == set(
        DOCUMENT_ELEMENTS
    )


def test_every_setting_reaches_the_device_and_a_change_forces_reprovisioning(
    instance: Instance,
) -> None:
    instance.cli("eas-policy", "add", "Strict", *strict_arguments())
    instance.cli("user", "set", instance.user, "--eas-policy", "Strict")
    shown = cli_json(instance, "eas-policy", "show", "Strict")
    assert shown["users"] == 1 and shown["max_email_age"] == "two-weeks"
    assert shown["allow_bluetooth"] == "handsfree-only" and shown["max_attachment_kb"] == 1024
    assert cli_json(instance, "user", "show", instance.user)["eas_policy"] == "Strict"
    with instance.start() as server:
        phone = client(server, instance, "16.1")
        try:
            # Unprovisioned: 142 in the body at 14.0+ (449 at 12.1 in test_eas_real_server).
            assert folder_sync_status(phone).status_at() == 142
            first = phone.provision_initial()
            assert first.status == 200 and first.status_at() == 1
            got = provision_document(first.body)
            assert list(got) == list(DOCUMENT_ELEMENTS)  # every element, in XSD order
            for name, value in EXPECTED.items():
                assert (got[name].text or None) == value, name
            blocked = [e.text for e in got["UnapprovedInROMApplicationList"]]
            assert blocked == ["Solitaire.exe", "Pinball.exe"]
            assert [e.text for e in got["ApprovedApplicationList"]] == [SHA1]
            temporary = first.text("Policies/Policy/PolicyKey")
            assert temporary is not None
            phone.policy_key = temporary
            final = phone.acknowledge(temporary)
            assert final.text("Policies/Policy/Status") == "1"
            phone.policy_key = final.text("Policies/Policy/PolicyKey")
            assert folder_sync_status(phone).status_at() == 1
            device = cli_json(instance, "device", "show", phone.device_id)
            assert device["policy_applied"] == "Strict"
            assert device["policy_status"] == "applied in full"
            # The administrator changes the policy while the server runs: 143, then the
            # device fetches the new document.
            instance.cli("eas-policy", "set", "Strict", "--min-password-length", "8")
            assert folder_sync_status(phone).status_at() == 143
            again = phone.provision_initial()
            assert provision_document(again.body)["MinDevicePasswordLength"].text == "8"
            phone.policy_key = again.text("Policies/Policy/PolicyKey")
            acknowledged = phone.acknowledge(phone.policy_key or "")
            phone.policy_key = acknowledged.text("Policies/Policy/PolicyKey")
            assert folder_sync_status(phone).status_at() == 1
            # Back to the default policy: another policy, so provisioning again.
            instance.cli("user", "set", instance.user, "--eas-policy", "default")
            assert folder_sync_status(phone).status_at() == 143
            phone.provision()
            assert folder_sync_status(phone).status_at() == 1
        finally:
            phone.close()


def test_policy_administration_and_its_refusals(instance: Instance) -> None:
    instance.cli("eas-policy", "add", "Sales", "--require-password", "--min-password-length", "4")
    instance.cli("eas-policy", "set", "Sales", "--new-name", "Field", "--max-email-age", "one-day")
    listed = {p["name"]: p for p in cli_json(instance, "eas-policy", "list")}
    assert set(listed) == {"Default", "Field"} and listed["Default"]["default"] is True
    assert listed["Field"]["max_email_age"] == "one-day"
    assert listed["Field"]["min_password_length"] == 4
    instance.cli("user", "set", instance.user, "--eas-policy", "field")
    for args, message in (
        (["eas-policy", "remove", "Field"], "assigned to 1 user"),
        (["eas-policy", "remove", "Default"], "default policy"),
        (["eas-policy", "set", "Field", "--min-password-length", "40"], "outside 1-16"),
        (["eas-policy", "set", "Field", "--max-email-age", "forever"], "expected one of"),
        (["user", "set", instance.user, "--eas-policy", "Nope"], "no mobile device"),
    ):
        result = instance.cli(*args, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1  # one line, no traceback
    instance.cli("eas-policy", "set", "Field", "--default")
    instance.cli("user", "set", instance.user, "--eas-policy", "default")
    instance.cli("eas-policy", "remove", "Default")  # no longer the default, nobody on it
    assert [p["name"] for p in cli_json(instance, "eas-policy", "list")] == ["Field"]
