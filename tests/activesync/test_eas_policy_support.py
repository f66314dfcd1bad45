"""Helpers shared by the device-administration tests against the real server (policies,
devices, wipe, recovery password, out of office, client certificates). No tests here."""

from __future__ import annotations

import json
import smtplib
import time
from collections.abc import Callable
from typing import Any

from eas_client import EasClient, EasResponse, folder_sync
from harness import Instance, Server

from protocols.activesync.wbxml import E, Element

WAIT = 10.0


def client(server: Server, instance: Instance, version: str = "16.1", **options: Any) -> EasClient:
    return EasClient(
        server.port("https"),
        instance.client_context(check_hostname=False),
        options.pop("user", instance.user),
        options.pop("password", instance.password),
        host="127.0.0.1",
        version=version,
        **options,
    )


def cli_json(instance: Instance, *args: str) -> Any:
    return json.loads(instance.cli(*args, "--json").stdout)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def subjects(instance: Instance, address: str) -> list[str]:
    return [str(m["Subject"]) for m in instance.inbox(address)]


def folder_sync_status(phone: EasClient) -> EasResponse:
    return phone.command("FolderSync", folder_sync())


def settings(*blocks: Element) -> Element:
    return E("Settings:Settings", list(blocks))


def smtp_send(
    server: Server,
    instance: Instance,
    *,
    sender: str,
    to: str,
    subject: str,
    extra: str = "",
    login: tuple[str, str] | None = None,
) -> None:
    """One message: through submission (465) with `login`, else anonymously on port 25."""
    message = (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{abs(hash((subject, time.monotonic())))}@test.example>\r\n"
        f"{extra}\r\nHello.\r\n"
    )
    if login is not None:
        context = instance.client_context(check_hostname=False)
        with smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=10) as smtp:
            smtp.login(*login)
            assert smtp.sendmail(sender, [to], message.encode()) == {}
        return
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        assert smtp.sendmail(sender, [to], message.encode()) == {}
