"""Policies, assignments, access rules, audit and out-of-office settings in the directory
database (`mailhost.eas_policies`), and the policy record format they are kept in."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path

import pytest

from mailhost.eas_policies import MAX_RULES, AdministrationError, EasAdministration
from protocols.activesync.access import MAX_RULE_VALUE, Characteristic
from protocols.activesync.devices import DeviceAccess
from protocols.activesync.policy import (
    DEFAULT_POLICY,
    POLICY_SCHEMA_VERSION,
    Bluetooth,
    EmailAgeFilter,
    Policy,
    PolicyValueError,
    parse_setting,
    policy_from_record,
    policy_to_record,
)
from transport.autoreply import OofReply, OofSettings, OofState

STRICT = Policy(
    name="Strict",
    require_password=True,
    min_password_length=8,
    max_email_age=EmailAgeFilter.ONE_WEEK,
    allow_bluetooth=Bluetooth.HANDSFREE_ONLY,
    blocked_applications=("a.exe", "b.exe"),
    refresh_interval_hours=None,
)


@pytest.fixture
def admin(tmp_path: Path) -> EasAdministration:
    return EasAdministration(tmp_path / "directory.sqlite3")


def test_records_round_trip_with_readable_enums() -> None:
    for policy in (DEFAULT_POLICY, STRICT):
        record = policy_to_record(policy)
        assert json.loads(json.dumps(record)) == record
        assert policy_from_record(record) == policy
    record = policy_to_record(STRICT)
    assert record["max_email_age"] == "one-week" and record["allow_bluetooth"] == "handsfree-only"
    assert record["v"] == POLICY_SCHEMA_VERSION
    # Settings a later version adds are ignored; missing ones take their default.
    assert policy_from_record({"v": 1, "name": "X", "shiny_new_setting": 1}) == Policy(name="X")
    with pytest.raises(PolicyValueError):
        policy_from_record({"v": POLICY_SCHEMA_VERSION + 1})


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("require_password", "yes", True),
        ("allow_camera", "false", False),
        ("min_password_length", "6", 6),
        ("max_attachment_kb", "unlimited", None),
        ("max_email_age", "Two-Weeks", EmailAgeFilter.TWO_WEEKS),
        ("blocked_applications", "a.exe, b.exe,", ("a.exe", "b.exe")),
        ("blocked_applications", "", ()),
    ],
)
def test_parse_setting(name: str, text: str, value: object) -> None:
    assert parse_setting(name, text) == value


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("require_password", "perhaps"),
        ("min_password_length", "six"),
        ("password_history", "unlimited"),  # not an optional setting
        ("max_attachment_kb", "1" * 10),
        ("max_email_age", "forever"),
        ("no_such_setting", "1"),
    ],
)
def test_parse_setting_refuses(name: str, text: str) -> None:
    with pytest.raises(PolicyValueError):
        parse_setting(name, text)


def test_default_policy_and_assignments(admin: EasAdministration, tmp_path: Path) -> None:
    assert [r.policy.name for r in admin.policies()] == ["Default"]
    assert admin.policy_for_owner("mbx-1") == DEFAULT_POLICY
    admin.add_policy(STRICT)
    assert admin.assign("mbx-1", "strict") == "Strict"
    assert admin.policy_for_owner("mbx-1") == STRICT
    assert admin.policy_for_owner("mbx-2") == DEFAULT_POLICY
    # Another connection (the CLI) changes it: the server's cached answer follows.
    cli = EasAdministration(tmp_path / "directory.sqlite3")
    cli.update_policy("Strict", {"min_password_length": 10})
    assert admin.policy_for_owner("mbx-1").min_password_length == 10
    cli.update_policy("Strict", {"name": "Stricter"})
    assert admin.policy_for_owner("mbx-1").name == "Stricter"
    assert cli.assignment("mbx-1") == "Stricter"
    cli.update_policy("Stricter", {}, make_default=True)
    assert admin.policy_for_owner("mbx-2").name == "Stricter"
    assert admin.assign("mbx-1", None) == "Stricter"
    assert admin.assignment("mbx-1") is None
    with pytest.raises(AdministrationError, match="outside 1-16"):
        admin.update_policy("Stricter", {"min_password_length": 17})
    with pytest.raises(AdministrationError, match="no mobile device"):
        admin.assign("mbx-1", "nope")
    with pytest.raises(AdministrationError, match="exists already"):
        admin.add_policy(Policy(name="stricter"))
    with pytest.raises(AdministrationError, match="1 to 64"):
        admin.add_policy(Policy(name="x" * 65))
    admin.add_policy(Policy(name="x" * 64))
    cli.close()


def test_access_rules_and_default_level(admin: EasAdministration) -> None:
    assert admin.access_configuration().default is DeviceAccess.ALLOWED
    rule = admin.add_access_rule(Characteristic.DEVICE_ID, "ApplABC", DeviceAccess.ALLOWED)
    assert rule.value == "applabc"  # device ids are normalised
    admin.set_default_access(DeviceAccess.QUARANTINED)
    configuration = admin.access_configuration()
    assert configuration.rules == (rule,) and configuration.default is DeviceAccess.QUARANTINED
    with pytest.raises(AdministrationError, match="already covers"):
        admin.add_access_rule(Characteristic.DEVICE_ID, "APPLABC", DeviceAccess.BLOCKED)
    with pytest.raises(AdministrationError, match="printable"):
        admin.add_access_rule(Characteristic.MODEL, "bad\nvalue", DeviceAccess.BLOCKED)
    with pytest.raises(AdministrationError, match=f"1 to {MAX_RULE_VALUE}"):
        admin.add_access_rule(
            Characteristic.MODEL, "m" * (MAX_RULE_VALUE + 1), DeviceAccess.BLOCKED
        )
    admin.remove_access_rule(
        admin.add_access_rule(Characteristic.MODEL, "m" * MAX_RULE_VALUE, DeviceAccess.BLOCKED).id
    )
    assert admin.remove_access_rule(rule.id) == rule
    with pytest.raises(AdministrationError, match="no device access rule"):
        admin.remove_access_rule(rule.id)


def test_the_number_of_rules_is_bounded(admin: EasAdministration) -> None:
    for i in range(MAX_RULES):
        admin.add_access_rule(Characteristic.MODEL, f"model {i}", DeviceAccess.BLOCKED)
    with pytest.raises(AdministrationError, match=f"at most {MAX_RULES}"):
        admin.add_access_rule(Characteristic.MODEL, "one more", DeviceAccess.BLOCKED)


def test_out_of_office_periods_and_replies(admin: EasAdministration) -> None:
    assert admin.oof_settings("mbx-1") == OofSettings()
    away = OofSettings(state=OofState.ENABLED, internal=OofReply(True, "Away", html=False))
    saved = admin.set_oof_settings("mbx-1", away)
    assert saved.period == 1 and admin.oof_settings("mbx-1") == saved
    assert admin.claim_reply("mbx-1", "Bob@Example.org", saved.period, 1.0) is True
    assert admin.claim_reply("mbx-1", "bob@example.org", saved.period, 2.0) is False
    again = admin.set_oof_settings("mbx-1", away)
    assert again.period == 2
    assert admin.claim_reply("mbx-1", "bob@example.org", again.period, 3.0) is True
    with pytest.raises(AdministrationError, match="after the start"):
        admin.set_oof_settings(
            "mbx-1", dataclasses.replace(away, state=OofState.SCHEDULED, start=5.0, end=5.0)
        )


def test_audit_and_schema_checks(admin: EasAdministration, tmp_path: Path) -> None:
    admin.audit("root", "recovery-password-read", "mbx-1", "dev1")
    (entry,) = admin.audit_entries("mbx-1", "dev1")
    assert (entry.actor, entry.action) == ("root", "recovery-password-read")
    admin.close()
    database = sqlite3.connect(tmp_path / "directory.sqlite3")
    database.execute("UPDATE eas_org SET value='99' WHERE key='schema_version'")
    database.commit()
    database.close()
    with pytest.raises(AdministrationError, match="newer than this program"):
        EasAdministration(tmp_path / "directory.sqlite3")
