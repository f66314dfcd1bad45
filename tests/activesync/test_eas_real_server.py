"""ActiveSync on the real server: the same walk an iPhone does on setup, over the https
listener of `mailhost serve`, against the real directory and device registry."""

from __future__ import annotations

import json

import pytest
from eas_client import EasClient, user_information
from harness import Instance, Server

from protocols.activesync.wbxml import E


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
