"""ActiveSync on the real server: the same walk an iPhone does on setup, over the https
listener of `mailhost serve`, against the real directory and device registry."""

from __future__ import annotations

import json
import smtplib
import socket
import threading
import time

import pytest
from eas_client import (
    EasClient,
    body_preference,
    folder_list,
    folder_sync,
    ping_request,
    sync_collection,
    sync_request,
    sync_result,
    user_information,
)
from harness import Instance, Server

from protocols.activesync.wbxml import E, encode


def _client(server: Server, instance: Instance, version: str = "16.1") -> EasClient:
    return EasClient(
        server.port("https"),
        instance.client_context(check_hostname=False),
        instance.user,
        instance.password,
        host="127.0.0.1",
        version=version,
    )


@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_setup_walk_on_the_real_server(server: Server, instance: Instance, version: str) -> None:
    client = _client(server, instance, version)
    try:
        discovered = client.autodiscover("demo@example.test")
        assert discovered.status == 200
        url = f"https://mail.example.test:{server.port('https')}/Microsoft-Server-ActiveSync"
        assert f"<Url>{url}</Url>" in discovered.body.decode()
        options = client.options()
        assert options.status == 200
        assert "16.1" in options.headers["ms-asprotocolversions"]
        assert "Provision" in options.headers["ms-asprotocolcommands"]
        unprovisioned = client.command("Settings", user_information(), policy_key=None)
        assert unprovisioned.status == 200 and unprovisioned.status_at("Status") == 142
        client.provision()
        settings = client.command("Settings", user_information())
        assert settings.status == 200
        assert settings.status_at("Status") == 1
        assert "demo@example.test" in settings.body.decode("utf-8", "replace")
    finally:
        client.close()


def test_twelve_one_gets_449_and_wrong_passwords_get_401(
    server: Server, instance: Instance
) -> None:
    client = _client(server, instance, "12.1")
    try:
        assert client.command("Settings", user_information(), policy_key=None).status == 449
        client.password = "wrong"
        denied = client.options()
        assert denied.status == 401 and denied.headers["www-authenticate"].startswith("Basic")
    finally:
        client.close()


def test_resolve_recipients_searches_the_directory(server: Server, instance: Instance) -> None:
    instance.cli(
        "user",
        "add",
        "zoe@example.test",
        "--name",
        "Zoë Ångström",
        "--password-stdin",
        input="pw\n",
    )
    client = _client(server, instance)
    try:
        client.provision()
        reply = client.command(
            "ResolveRecipients",
            E("ResolveRecipients:ResolveRecipients", E("ResolveRecipients:To", "zo")),
        )
        assert reply.status == 200 and reply.status_at("Status") == 1
        assert "zoe@example.test" in reply.body.decode("utf-8", "replace")
    finally:
        client.close()


def test_autodiscover_json_and_autoconfig_on_the_real_server(
    server: Server, instance: Instance
) -> None:
    client = _client(server, instance)
    try:
        reply = client.request(
            "GET",
            "/autodiscover/autodiscover.json/v1.0/demo@example.test?Protocol=ActiveSync",
            auth=False,
        )
        assert reply.status == 200
        assert json.loads(reply.body)["Url"].endswith("/Microsoft-Server-ActiveSync")
        config = client.request(
            "GET",
            "/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=demo@example.test",
            auth=False,
        )
        assert config.status == 200
        assert f"<port>{server.port('imaps')}</port>" in config.body.decode()
    finally:
        client.close()


def test_sigterm_closes_a_response_the_phone_stopped_reading(instance: Instance) -> None:
    """A phone that stops reading a large ItemOperations response must not hold the
    shutdown past the grace period: at the deadline its connection is closed under the
    blocked send."""
    instance.set_config("service", "shutdown_grace", "2.0")
    with instance.start() as server:
        body = ("x" * 998 + "\r\n") * 4000  # ~4 MB, more than the socket buffers hold
        with smtplib.SMTP(*server.address("smtp"), timeout=30) as smtp:
            smtp.sendmail("sender@remote.test", ["demo@example.test"], (
                "From: sender@remote.test\r\nTo: demo@example.test\r\nSubject: big\r\n\r\n"
                + body).encode())  # fmt: skip
        client = _client(server, instance)
        try:
            client.provision()
            folders = folder_list(client.command("FolderSync", folder_sync()))
            inbox = folders.by_type[2]
        finally:
            client.close()
        fetch = E("ItemOperations:Fetch", E("ItemOperations:Store", "Mailbox"),
                  E("AirSync:CollectionId", inbox), E("AirSync:ServerId", f"{inbox}:1"),
                  E("ItemOperations:Options", body_preference(4)))  # fmt: skip
        payload = encode(E("ItemOperations:ItemOperations", [fetch] * 3))
        head = (
            f"POST {client.target('ItemOperations')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {client.authorization()}\r\nMS-ASProtocolVersion: 16.1\r\n"
            f"X-MS-PolicyKey: {client.policy_key}\r\n"
            f"Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect(server.address("https"))
        with instance.client_context(check_hostname=False).wrap_socket(raw) as stalled:
            stalled.sendall(head.encode() + payload)
            assert stalled.recv(1).startswith(b"H")  # the response has started; stop reading
            time.sleep(1.0)
            started = time.monotonic()
            code = server.terminate(timeout=20)
            elapsed = time.monotonic() - started
        assert code == 0, server.log()
        assert elapsed < 2.0 + 3.0, server.log()
        assert "closed 1 session" in server.log()


def test_sigterm_answers_a_held_ping_at_once(instance: Instance) -> None:
    """A Ping held for its heartbeat answers Status 1 as soon as the server starts to
    drain (the phone pings again and reaches the restarted server), so a shutdown with a
    long grace period still ends in moments instead of waiting out the heartbeat."""
    instance.set_config("service", "shutdown_grace", "60.0")
    with instance.start() as server:
        client = _client(server, instance)
        answers: list[int | None] = []
        try:
            client.provision()
            inbox = folder_list(client.command("FolderSync", folder_sync())).by_type[2]
            first = sync_result(client.command("Sync", sync_request(sync_collection(inbox, "0"))))
            client.command("Sync", sync_request(sync_collection(inbox, first.key)))
            ping = threading.Thread(
                target=lambda: answers.append(
                    client.command("Ping", ping_request(900, inbox)).status_at("Status")
                )
            )
            ping.start()
            time.sleep(1.0)  # the Ping is held (a delivery would answer it, none comes)
            assert not answers
            started = time.monotonic()
            code = server.terminate(timeout=30)
            elapsed = time.monotonic() - started
            ping.join(10)
        finally:
            client.close()
        assert code == 0, server.log()
        assert answers == [1], server.log()
        assert elapsed < 10.0, server.log()
