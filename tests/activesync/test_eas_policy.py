"""The policy model and its EASProvisionDoc (MS-ASPROV 2.2.2.28): every Exchange 2010
setting maps to its element, in the XSD's order, and libwbxml reads the document."""

from __future__ import annotations

import dataclasses

from wbxml_tool import check_with_libwbxml

from protocols.activesync.policy import (
    DEFAULT_POLICY,
    DOCUMENT_ELEMENTS,
    Bluetooth,
    CalendarAgeFilter,
    EmailAgeFilter,
    Policy,
    SmimeAlgorithmNegotiation,
    SmimeEncryptionAlgorithm,
    SmimeSigningAlgorithm,
    policy_errors,
    provision_document,
)
from protocols.activesync.wbxml import E, encode, tag_named

# MS-ASPROV 6.1 Provision.xsd: the EASProvisionDoc sequence.
XSD_ORDER = [
    "DevicePasswordEnabled",
    "AlphanumericDevicePasswordRequired",
    "PasswordRecoveryEnabled",
    "RequireStorageCardEncryption",
    "AttachmentsEnabled",
    "MinDevicePasswordLength",
    "MaxInactivityTimeDeviceLock",
    "MaxDevicePasswordFailedAttempts",
    "MaxAttachmentSize",
    "AllowSimpleDevicePassword",
    "DevicePasswordExpiration",
    "DevicePasswordHistory",
    "AllowStorageCard",
    "AllowCamera",
    "RequireDeviceEncryption",
    "AllowUnsignedApplications",
    "AllowUnsignedInstallationPackages",
    "MinDevicePasswordComplexCharacters",
    "AllowWiFi",
    "AllowTextMessaging",
    "AllowPOPIMAPEmail",
    "AllowBluetooth",
    "AllowIrDA",
    "RequireManualSyncWhenRoaming",
    "AllowDesktopSync",
    "MaxCalendarAgeFilter",
    "AllowHTMLEmail",
    "MaxEmailAgeFilter",
    "MaxEmailBodyTruncationSize",
    "MaxEmailHTMLBodyTruncationSize",
    "RequireSignedSMIMEMessages",
    "RequireEncryptedSMIMEMessages",
    "RequireSignedSMIMEAlgorithm",
    "RequireEncryptionSMIMEAlgorithm",
    "AllowSMIMEEncryptionAlgorithmNegotiation",
    "AllowSMIMESoftCerts",
    "AllowBrowser",
    "AllowConsumerEmail",
    "AllowRemoteDesktop",
    "AllowInternetSharing",
    "UnapprovedInROMApplicationList",
    "ApprovedApplicationList",
]


def values(policy: Policy) -> dict[str, str | None]:
    document = provision_document(policy)
    return {child.tag: child.value for child in document.children if not child.children}


def test_document_has_every_element_in_xsd_order() -> None:
    document = provision_document(DEFAULT_POLICY)
    assert [c.tag for c in document.children] == XSD_ORDER == list(DOCUMENT_ELEMENTS)
    parsed = check_with_libwbxml(encode(E("Provision:Provision", E("Provision:Data", document))))
    found = parsed.find("Data/EASProvisionDoc")
    assert found is not None
    assert [c.tag for c in found.children] == XSD_ORDER


def test_default_policy_requires_nothing_and_allows_everything() -> None:
    got = values(DEFAULT_POLICY)
    assert got["DevicePasswordEnabled"] == "0"
    for name in XSD_ORDER:
        if name.startswith("Allow") and name not in (
            "AllowBluetooth",
            "AllowSMIMEEncryptionAlgorithmNegotiation",
        ):
            assert got.get(name) == "1", name
        if name.startswith("Require"):
            assert got[name] == "0", name
    assert got["AllowBluetooth"] == got["AllowSMIMEEncryptionAlgorithmNegotiation"] == "2"
    assert got["AttachmentsEnabled"] == "1"
    # Unset limits are empty elements (MS-ASPROV unsigned*OrEmpty), truncation -1.
    for name in (
        "MinDevicePasswordLength",
        "MaxInactivityTimeDeviceLock",
        "MaxDevicePasswordFailedAttempts",
        "MaxAttachmentSize",
        "DevicePasswordExpiration",
    ):
        assert got[name] is None, name
    assert got["MaxEmailBodyTruncationSize"] == got["MaxEmailHTMLBodyTruncationSize"] == "-1"
    assert got["MaxCalendarAgeFilter"] == got["MaxEmailAgeFilter"] == "0"
    assert not policy_errors(DEFAULT_POLICY)


def test_every_setting_maps_to_its_element_with_units() -> None:
    strict = Policy(
        name="Strict",
        allow_non_provisionable_devices=False,
        refresh_interval_hours=24,
        require_password=True,
        require_alphanumeric_password=True,
        min_complex_characters=3,
        password_recovery_enabled=True,
        require_device_encryption=True,
        require_storage_card_encryption=True,
        allow_simple_password=False,
        max_failed_attempts=8,
        min_password_length=6,
        max_inactivity_minutes=15,
        password_expiration_days=90,
        password_history=5,
        max_calendar_age=CalendarAgeFilter.ONE_MONTH,
        max_email_age=EmailAgeFilter.TWO_WEEKS,
        max_email_body_kb=100,
        max_email_html_body_kb=200,
        allow_direct_push_when_roaming=False,
        allow_html_email=False,
        attachments_enabled=False,
        max_attachment_kb=1024,
        allow_storage_card=False,
        allow_camera=False,
        allow_wifi=False,
        allow_irda=False,
        allow_internet_sharing=False,
        allow_remote_desktop=False,
        allow_desktop_sync=False,
        allow_bluetooth=Bluetooth.HANDSFREE_ONLY,
        allow_text_messaging=False,
        allow_browser=False,
        allow_consumer_email=False,
        allow_pop_imap_email=False,
        allow_unsigned_applications=False,
        allow_unsigned_installation_packages=False,
        require_signed_smime_messages=True,
        require_encrypted_smime_messages=True,
        smime_signing_algorithm=SmimeSigningAlgorithm.MD5,
        smime_encryption_algorithm=SmimeEncryptionAlgorithm.RC2_128,
        smime_algorithm_negotiation=SmimeAlgorithmNegotiation.STRONGEST_ONLY,
        allow_smime_soft_certs=False,
        blocked_applications=("Solitaire.exe",),
        allowed_applications=("a9993e364706816aba3e25717850c26c9cd0d89d",),
    )
    assert not policy_errors(strict)
    got = values(strict)
    assert got["DevicePasswordEnabled"] == got["AlphanumericDevicePasswordRequired"] == "1"
    assert got["MinDevicePasswordComplexCharacters"] == "3"
    assert got["MaxInactivityTimeDeviceLock"] == "900"  # minutes -> seconds
    assert got["MaxAttachmentSize"] == str(1024 * 1024)  # KB -> bytes
    assert got["MaxDevicePasswordFailedAttempts"] == "8"
    assert got["MinDevicePasswordLength"] == "6"
    assert got["DevicePasswordExpiration"] == "90"
    assert got["DevicePasswordHistory"] == "5"
    assert got["MaxCalendarAgeFilter"] == "5" and got["MaxEmailAgeFilter"] == "4"
    assert got["MaxEmailBodyTruncationSize"] == "100"
    assert got["MaxEmailHTMLBodyTruncationSize"] == "200"
    assert got["RequireManualSyncWhenRoaming"] == "1"  # the inverse of the option
    assert got["AllowBluetooth"] == "1"
    assert got["RequireSignedSMIMEAlgorithm"] == "1"
    assert got["RequireEncryptionSMIMEAlgorithm"] == "2"
    assert got["AllowSMIMEEncryptionAlgorithmNegotiation"] == "1"
    for name in XSD_ORDER:
        if name.startswith("Allow") and name not in (
            "AllowBluetooth",
            "AllowSMIMEEncryptionAlgorithmNegotiation",
        ):
            assert got[name] == "0", name
    document = provision_document(strict)
    assert document.text_of("UnapprovedInROMApplicationList/ApplicationName") == "Solitaire.exe"
    assert document.text_of("ApprovedApplicationList/Hash") == strict.allowed_applications[0]
    check_with_libwbxml(encode(E("Provision:Provision", E("Provision:Data", document))))


def test_every_field_names_a_real_element_or_is_server_side() -> None:
    for f in dataclasses.fields(Policy):
        element = f.metadata["element"]
        assert f.metadata["doc"]
        if element is not None:
            assert tag_named("Provision", element) is not None, element
            assert element in XSD_ORDER


def test_stamp_changes_with_any_setting() -> None:
    base = DEFAULT_POLICY.stamp
    assert Policy().stamp == base
    for f in dataclasses.fields(Policy):
        value = getattr(DEFAULT_POLICY, f.name)
        if isinstance(value, bool):
            changed = dataclasses.replace(DEFAULT_POLICY, **{f.name: not value})
        elif isinstance(value, str):
            changed = dataclasses.replace(DEFAULT_POLICY, **{f.name: value + "x"})
        elif isinstance(value, tuple):
            changed = dataclasses.replace(DEFAULT_POLICY, **{f.name: ("x",)})
        else:
            changed = dataclasses.replace(DEFAULT_POLICY, **{f.name: (value or 0) + 3})
        assert changed.stamp != base, f.name


def test_out_of_range_settings_are_reported() -> None:
    bad = Policy(
        min_password_length=17,
        max_failed_attempts=3,
        min_complex_characters=5,
        password_history=51,
        max_inactivity_minutes=61,
        password_expiration_days=731,
        refresh_interval_hours=0,
        max_attachment_kb=-1,
    )
    errors = policy_errors(bad)
    assert len(errors) == 8, errors
