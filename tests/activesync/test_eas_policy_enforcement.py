"""What the server enforces itself, whatever a device does with its EASProvisionDoc
(in-process front end over a real store): devices that cannot provision, allowed or
refused per policy and protocol version; the past-items window capping FilterType; the
e-mail size limits truncating bodies; attachments refused when not allowed or too
large; HTML turned into plain text when HTML is not allowed."""

from __future__ import annotations

import base64
import datetime as dt
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from eas_client import (
    EasClient,
    MailEnv,
    acknowledgement,
    body_preference,
    fetch_attachment,
    folder_list,
    folder_sync,
    simple_message,
    start_mail_env,
    sync_collection,
    sync_options,
    sync_request,
    sync_result,
)
from eas_env import ALICE, BOB, CAROL, default_settings

from protocols.activesync.policy import EmailAgeFilter, Policy
from protocols.activesync.wbxml import E

MBX = ALICE.mailbox_id
LEGACY_REQUEST = E(
    "Provision:Provision",
    E(
        "Provision:Policies",
        E("Provision:Policy", E("Provision:PolicyType", "MS-WAP-Provisioning-XML")),
    ),
)
HTML = "<html><body><p>Quarterly <b>numbers</b> &amp; plans</p></body></html>"


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    return start_mail_env(make_env, tmp_path, accounts=(ALICE, BOB, CAROL),
                          settings=default_settings(heartbeat_min=1))  # fmt: skip


def use(mail: MailEnv, policy: Policy) -> None:
    mail.env.policies.policy = policy


def ready(mail: MailEnv, version: str = "16.1", device: str = "phone1") -> tuple[EasClient, str]:
    client = mail.client(version=version, device_id=device)
    client.provision()
    folders = folder_list(client.command("FolderSync", folder_sync("0")))
    return client, folders.by_type[2]


def first_items(client: EasClient, inbox: str, options: Any = None) -> dict[str, Any]:
    start = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0"))))
    items = sync_result(
        client.command("Sync", sync_request(sync_collection(inbox, start.key, options=options)))
    )
    return {d.text_of("Email:Subject"): d for d in items.adds.values()}


# --- provisioning ----------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "code"), [("12.1", 449), ("14.0", 142), ("16.1", 142)])
def test_unprovisioned_and_outdated_devices_per_version(
    mail: MailEnv, version: str, code: int
) -> None:
    phone = mail.client(version=version, device_id=f"v{version}")

    def refused_with(expected: int) -> None:
        answer = phone.command("FolderSync", folder_sync())
        if version == "12.1":
            assert answer.status == 449 and answer.body == b""  # MS-ASHTTP 3.1.5.2
        else:
            assert answer.status == 200 and answer.status_at() == expected

    refused_with(code)
    phone.provision()
    assert phone.command("FolderSync", folder_sync()).status_at() == 1
    use(mail, Policy(name="Changed", require_password=True))
    refused_with(143)  # PolicyRefresh
    phone.provision()
    assert phone.command("FolderSync", folder_sync()).status_at() == 1


# --- devices that cannot provision ---------------------------------------------------------


@pytest.mark.parametrize("version", ["12.1", "14.1"])
def test_a_device_that_says_it_cannot_provision(mail: MailEnv, version: str) -> None:
    legacy = mail.client(version=version, device_id="oldphone")
    answer = legacy.command("Provision", LEGACY_REQUEST, policy_key=None)
    assert answer.text("Policies/Policy/Status") == "3"  # it cannot have our policy
    # The Default policy allows non-provisionable devices: it syncs without a key.
    assert legacy.command("FolderSync", folder_sync(), policy_key=None).status_at() == 1
    use(mail, Policy(name="Strict", allow_non_provisionable_devices=False))
    refused = legacy.command("FolderSync", folder_sync(), policy_key=None)
    if version == "12.1":
        assert refused.status == 403  # no status code at 12.1, and 449 would loop
    else:
        assert refused.status == 200 and refused.status_at() == 141
    # A device that does provision is unaffected by the setting.
    modern, _ = ready(mail, version, "modern")
    assert modern.command("FolderSync", folder_sync()).status_at() == 1


def test_a_device_that_did_not_apply_the_policy(mail: MailEnv) -> None:
    use(mail, Policy(name="Strict", allow_non_provisionable_devices=False, require_password=True))
    phone = mail.client(version="16.1", device_id="partial")
    temporary = phone.provision_initial().text("Policies/Policy/PolicyKey") or ""
    phone.policy_key = temporary
    refused = phone.command("Provision", acknowledgement(temporary, status=2))
    assert refused.status_at() == 139  # DeviceNotFullyProvisionable
    managed = phone.command("Provision", acknowledgement(temporary, status=4))
    assert managed.status_at() == 145  # ExternallyManagedDevicesNotAllowed
    use(mail, Policy(require_password=True))
    temporary = phone.provision_initial().text("Policies/Policy/PolicyKey") or ""
    phone.policy_key = temporary
    allowed = phone.command("Provision", acknowledgement(temporary, status=2))
    assert allowed.text("Policies/Policy/Status") == "1"
    phone.policy_key = allowed.text("Policies/Policy/PolicyKey")
    assert phone.command("FolderSync", folder_sync()).status_at() == 1
    assert mail.env.device(device_id="partial").client_policy_status == 2


# --- sync settings -------------------------------------------------------------------------


def test_past_items_window_caps_filter_type(mail: MailEnv) -> None:
    now = dt.datetime.now(dt.UTC)
    mail.deliver(MBX, simple_message("two days old"), internal_date=now - dt.timedelta(days=2))
    mail.deliver(MBX, simple_message("an hour old"), internal_date=now - dt.timedelta(hours=1))
    use(mail, Policy(max_email_age=EmailAgeFilter.ONE_DAY))
    client, inbox = ready(mail)
    # The device asks for everything (FilterType 0) and for three days: both capped.
    for filter_type in (0, 2):
        got = first_items(client, inbox, sync_options(filter_type=filter_type))
        assert list(got) == ["an hour old"], filter_type
        client.close()
    use(mail, Policy())
    client, inbox = ready(mail, device="phone2")
    assert set(first_items(client, inbox, sync_options(filter_type=0))) == {
        "two days old",
        "an hour old",
    }


def test_size_limits_truncate_plain_and_html_bodies(mail: MailEnv) -> None:
    text = "x" * 5000
    mail.deliver(MBX, simple_message("long", body=text + "\r\n"))
    use(mail, Policy(max_email_body_kb=1, max_email_html_body_kb=2))
    client, inbox = ready(mail)
    plain = first_items(client, inbox, sync_options(body_preference(1)))["long"]
    assert plain.text_of("AirSyncBase:Body/AirSyncBase:Truncated") == "1"
    assert len(plain.text_of("AirSyncBase:Body/AirSyncBase:Data") or "") == 1024
    client.close()
    client, inbox = ready(mail, device="phone2")
    # The device's own, larger truncation does not lift the policy's HTML cap.
    html = first_items(client, inbox, sync_options(body_preference(2, 100_000)))["long"]
    assert html.text_of("AirSyncBase:Body/AirSyncBase:Type") == "2"
    assert html.text_of("AirSyncBase:Body/AirSyncBase:Truncated") == "1"
    assert len((html.text_of("AirSyncBase:Body/AirSyncBase:Data") or "").encode()) <= 2048


def test_html_becomes_plain_text_when_html_is_not_allowed(mail: MailEnv) -> None:
    message = EmailMessage()
    message["From"] = "carol@example.org"
    message["To"] = "alice@example.org"
    message["Subject"] = "report"
    message.set_content(HTML, subtype="html")
    mail.deliver(MBX, message.as_bytes(policy=email.policy.SMTP))
    use(mail, Policy(allow_html_email=False))
    client, inbox = ready(mail)
    # Asked for HTML, and for MIME (which would carry the HTML): plain text either way.
    for options in (
        sync_options(body_preference(2)),
        sync_options(body_preference(4), mime_support=2),
    ):
        item = first_items(client, inbox, options)["report"]
        assert item.text_of("AirSyncBase:Body/AirSyncBase:Type") == "1"
        data = item.text_of("AirSyncBase:Body/AirSyncBase:Data") or ""
        assert "Quarterly numbers & plans" in data and "<b>" not in data
        client.close()
        client, inbox = ready(mail, device=f"phone-{len(options.children)}")
    use(mail, Policy())
    client, inbox = ready(mail, device="allowed")
    item = first_items(client, inbox, sync_options(body_preference(2)))["report"]
    assert item.text_of("AirSyncBase:Body/AirSyncBase:Type") == "2"


def test_attachments_refused_when_not_allowed_or_too_large(mail: MailEnv) -> None:
    message = EmailMessage()
    message["From"] = "carol@example.org"
    message["To"] = "alice@example.org"
    message["Subject"] = "files"
    message.set_content("See attached.")
    message.add_attachment(b"s" * 1000, maintype="application", subtype="octet-stream",
                           filename="small.bin")  # fmt: skip
    message.add_attachment(b"L" * 3000, maintype="application", subtype="octet-stream",
                           filename="large.bin")  # fmt: skip
    uid = mail.deliver(MBX, message.as_bytes(policy=email.policy.SMTP))
    client, inbox = ready(mail)
    small, large = f"{inbox}:{uid}:2", f"{inbox}:{uid}:3"

    def fetch(reference: str) -> Any:
        return client.command("ItemOperations", fetch_attachment(reference))

    use(mail, Policy(max_attachment_kb=2))
    client.provision()
    got = fetch(small)
    assert got.status_at("Response/Fetch/Status") == 1
    assert base64.b64decode(got.text("Response/Fetch/Properties/Data") or "") == b"s" * 1000
    assert fetch(large).status_at("Response/Fetch/Status") == 11  # larger than allowed
    use(mail, Policy(attachments_enabled=False))
    client.provision()
    for reference in (small, large):
        assert fetch(reference).status_at("Response/Fetch/Status") == 16  # access denied
    use(mail, Policy())
    client.provision()
    assert fetch(large).status_at("Response/Fetch/Status") == 1

    # 12.1's GetAttachment (MS-ASCMD 2.2.1.7) under the same policy; its failures are 500.
    old, _ = ready(mail, version="12.1", device="old-phone")

    def get(reference: str) -> Any:
        return old.command("GetAttachment", params={"AttachmentName": reference})

    assert get(large).body == b"L" * 3000
    use(mail, Policy(max_attachment_kb=2))
    old.provision()
    assert get(small).body == b"s" * 1000
    assert get(large).status == 500  # larger than allowed
    use(mail, Policy(attachments_enabled=False))
    old.provision()
    assert get(small).status == 500
