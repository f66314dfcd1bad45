"""SendMail: once the message is submitted, failing to record its ClientId is logged but
answered as success; an error would make the device send the message again."""

from __future__ import annotations

import email.policy
import logging
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from eas_client import MailEnv, send_mail, start_mail_env
from eas_env import ALICE, BOB, CAROL

ACCOUNTS = (ALICE, BOB, CAROL)


@pytest.fixture
def mail(make_env: Any, tmp_path: Path) -> MailEnv:
    return start_mail_env(make_env, tmp_path, accounts=ACCOUNTS)


def _mime(subject: str) -> bytes:
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = "bob@example.org"
    message["Subject"] = subject
    message.set_content("typed on the phone")
    return message.as_bytes(policy=email.policy.SMTP)


def test_a_failed_client_id_record_after_sending_is_still_success(
    mail: MailEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = mail.client(device_id="sender")
    client.provision()
    attempts: list[str] = []

    def broken_save(mailbox_id: str, device_id: str, *args: Any, **kwargs: Any) -> None:
        attempts.append(device_id)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mail.services.states, "save_device", broken_save)
    with caplog.at_level(logging.ERROR, logger="mailhost.activesync"):
        reply = client.command("SendMail", send_mail(_mime("sent once"), "cid-1"))
    assert reply.status == 200 and reply.body == b""  # success: the device does not resend
    assert attempts == ["sender"]
    assert any("was not recorded" in r.getMessage() for r in caplog.records)
    bob = mail.store.open_mailbox(BOB.mailbox_id).inbox.snapshot()
    assert len(bob) == 1
