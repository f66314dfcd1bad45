"""The HTTP front end over real TLS: methods and paths, OPTIONS, Basic login in every
form, the status codes clients act on, body limits, gzip, overload, HTTP/2, and that a
failing handler or malformed input never reaches the client as a traceback."""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import subprocess
import threading
from typing import Any

import pytest
import trio
from eas_client import EAS_PATH, WBXML, basic, folder_sync, user_information
from eas_env import ALICE, ALICE_PASSWORD, CAROL, CAROL_PASSWORD, EasEnv, default_settings
from wbxml_tool import check_with_libwbxml

from protocols.activesync.app import make_app
from protocols.activesync.commands import TrustStore, default_commands
from protocols.activesync.context import CommandContext, CommandReply, CommandSpec
from protocols.activesync.devices import MemoryDeviceRegistry
from protocols.activesync.policy import FixedPolicySource
from protocols.activesync.wbxml import E

VERSIONS = "12.1,14.0,14.1,16.0,16.1"


def with_commands(make_env: Any, extra: dict[str, CommandSpec], **settings: Any) -> EasEnv:
    table = {**default_commands(trust=TrustStore.of([])), **extra}
    env: EasEnv = make_env(commands=table, settings=default_settings(**settings))
    return env


async def folder_sync_ok(ctx: CommandContext) -> CommandReply:
    return CommandReply.wbxml(
        E(
            "FolderHierarchy:FolderSync",
            E("FolderHierarchy:Status", 1),
            E("FolderHierarchy:SyncKey", "1"),
            E("FolderHierarchy:Changes", E("FolderHierarchy:Count", 0)),
        )
    )


# --- methods, paths, OPTIONS ---------------------------------------------------------------


def test_options_asks_for_credentials_then_lists_versions_and_working_commands(
    make_env: Any,
) -> None:
    env = with_commands(make_env, {"FolderSync": CommandSpec(folder_sync_ok)})
    client = env.client()
    challenge = client.options(auth=False)
    assert challenge.status == 401
    assert (
        challenge.headers["www-authenticate"] == 'Basic realm="mail.example.org", charset="UTF-8"'
    )
    response = client.options()
    assert response.status == 200 and response.body == b""
    assert response.headers["ms-asprotocolversions"] == VERSIONS
    commands = response.headers["ms-asprotocolcommands"].split(",")
    assert commands == ["FolderSync", "Settings", "Provision", "ValidateCert"]
    assert response.headers["allow"] == response.headers["public"] == "OPTIONS,POST"
    assert response.headers["ms-server-activesync"] == "16.1"
    assert response.headers["strict-transport-security"] == "max-age=63072000"


def test_options_lists_resolve_recipients_only_with_a_directory(eas: EasEnv) -> None:
    commands = eas.client().options().headers["ms-asprotocolcommands"].split(",")
    assert "ResolveRecipients" in commands and "Sync" not in commands


@pytest.mark.parametrize(
    "path",
    [EAS_PATH, EAS_PATH.lower(), EAS_PATH.upper(), EAS_PATH + "/", "/microsoft-server-ActiveSync/"],
)
def test_the_virtual_directory_matches_in_any_case(eas: EasEnv, path: str) -> None:
    assert eas.client().request("OPTIONS", path).status == 200


def test_get_is_a_page_never_wbxml(eas: EasEnv) -> None:
    client = eas.client()
    page = client.request("GET", EAS_PATH, auth=False)
    assert page.status == 501
    assert page.headers["content-type"].startswith("text/html")
    head = client.request("HEAD", EAS_PATH, auth=False)
    assert head.status == 501 and head.body == b""
    other = client.request("PUT", EAS_PATH)
    assert other.status == 405 and other.headers["allow"] == "OPTIONS,POST"
    assert client.request("GET", "/nothing/here").status == 404


# --- logins --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "login",
    [
        "alice@example.org",
        "ALICE@example.org",
        "EXAMPLE\\alice",
        "example\\alice",
        "alice",
        "a.liddell@example.org",
    ],
)
def test_logins_in_every_form(eas: EasEnv, login: str) -> None:
    client = eas.client(login=login)
    assert client.options().status == 200
    assert client.provision()


def test_wrong_netbios_domain_and_password_get_the_challenge(eas: EasEnv) -> None:
    assert eas.client(login="OTHER\\alice").options().status == 401
    assert eas.client(password="wrong").options().status == 401
    assert eas.client(login="nobody@example.org").options().status == 401
    # Without a configured NetBIOS name the domain part is ignored.


def test_netbios_domain_is_ignored_when_not_configured(make_env: Any) -> None:
    env: EasEnv = make_env(settings=default_settings(netbios_domain=None))
    assert env.client(login="ANYTHING\\alice").options().status == 200


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_non_ascii_password_in_utf8_and_latin1(eas: EasEnv, encoding: str) -> None:
    client = eas.client(CAROL, CAROL_PASSWORD, auth_encoding=encoding)
    assert client.options().status == 200


def test_throttled_login_is_503_with_retry_after_not_401(eas: EasEnv) -> None:
    eas.checker.throttled.add("127.0.0.1")
    response = eas.client().options()
    assert response.status == 503
    assert response.headers["retry-after"] == "30"
    assert "www-authenticate" not in response.headers


def test_failing_backend_is_503_not_401(eas: EasEnv, caplog: pytest.LogCaptureFixture) -> None:
    eas.checker.broken = True
    with caplog.at_level(logging.ERROR, "mailhost.activesync"):
        response = eas.client().command("Provision", None)
    assert response.status == 503 and "retry-after" in response.headers
    assert "www-authenticate" not in response.headers
    assert "backend failed" in caplog.text


def test_the_peer_address_reaches_the_checker(eas: EasEnv) -> None:
    eas.client().options()
    assert eas.checker.calls[-1] == ("alice@example.org", "127.0.0.1", "activesync")


# --- request errors ------------------------------------------------------------------------


def test_malformed_query_unknown_command_and_version(eas: EasEnv) -> None:
    client = eas.client()
    bad = client.request(
        "POST", f"{EAS_PATH}?Cmd=Sync&User=a", b"", {"MS-ASProtocolVersion": "14.1"}
    )
    assert bad.status == 400
    unknown = client.request(
        "POST", f"{EAS_PATH}?Cmd=Frobnicate&User=a&DeviceId=d&DeviceType=t", b"",
        {"MS-ASProtocolVersion": "14.1"},
    )  # fmt: skip
    assert unknown.status == 501
    not_served = client.command("Sync", None)
    assert not_served.status == 501
    assert client.command("Provision", None, version="12.0").status == 400
    assert client.command("Provision", None, version="2.5").status == 400
    assert client.command("Provision", None, version="17.0").status == 400


def test_base64_query_with_a_version_we_do_not_speak(eas: EasEnv) -> None:
    client = eas.client(base64_form=True)
    assert client.command("Provision", None, version="12.0").status == 400


def test_missing_version_header_means_the_lowest_version(eas: EasEnv) -> None:
    client = eas.client()
    target = client.target("FolderSync")
    response = client.request("POST", target, b"", {"Content-Type": WBXML})
    assert response.status == 501  # FolderSync is not registered here; the version parsed
    response = client.request("POST", client.target("Settings"), b"", {"Content-Type": WBXML})
    assert response.status == 449  # 12.1 semantics: provisioning needed -> HTTP 449


def test_malformed_wbxml_is_400_and_the_server_carries_on(eas: EasEnv) -> None:
    client = eas.client()
    client.provision()
    for garbage in (
        b"\x03\x01\x6a\x00\x45\x99",
        b"\x03\x01\x6a\x00",
        b"\x03\x01\x6a\x00\x00\x63\x45",
    ):
        assert client.command("Settings", body=garbage).status == 400
    assert client.command("Settings", user_information()).status == 200


def test_body_limit_is_413(make_env: Any) -> None:
    env: EasEnv = make_env(settings=default_settings(max_request_body=4096))
    client = env.client()
    client.provision()
    big = b"\x03\x01\x6a\x00" + b"\x00" * 5000
    assert client.command("Settings", body=big).status == 413
    assert client.command("Settings", user_information()).status == 200
    bomb = gzip.compress(b"\x00" * 10_000_000)
    assert client.command("Settings", body=bomb, headers={"Content-Encoding": "gzip"}).status == 413


def test_gzip_request_bodies(eas: EasEnv) -> None:
    client = eas.client()
    client.provision()
    response = client.command("Settings", user_information(), gzip_body=True)
    assert response.status == 200 and response.status_at("Status") == 1
    bad = client.command("Settings", body=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert bad.status == 400
    odd = client.command("Settings", user_information(), headers={"Content-Encoding": "br"})
    assert odd.status == 415


def test_gzip_responses_when_accepted(make_env: Any) -> None:
    async def big(ctx: CommandContext) -> CommandReply:
        changes = [
            E("FolderHierarchy:Add", E("FolderHierarchy:ServerId", str(i)),
              E("FolderHierarchy:ParentId", "0"), E("FolderHierarchy:DisplayName", f"Folder {i}"),
              E("FolderHierarchy:Type", 12))
            for i in range(200)
        ]  # fmt: skip
        return CommandReply.wbxml(
            E("FolderHierarchy:FolderSync", E("FolderHierarchy:Status", 1),
              E("FolderHierarchy:SyncKey", "1"), E("FolderHierarchy:Changes", changes))
        )  # fmt: skip

    env = with_commands(make_env, {"FolderSync": CommandSpec(big)})
    client = env.client()
    client.provision()
    plain = client.command("FolderSync", folder_sync())
    assert "content-encoding" not in plain.headers
    packed = client.command("FolderSync", folder_sync(), headers={"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert len(packed.body) < len(plain.body)
    assert gzip.decompress(packed.body) == plain.body
    refused = client.command("FolderSync", folder_sync(), headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers


# --- handler failures and overload -------------------------------------------------------


async def explode(ctx: CommandContext) -> CommandReply:
    raise RuntimeError("boom in handler")


@pytest.mark.parametrize(
    ("version", "status", "body_status"),
    [("12.1", 500, None), ("14.1", 200, "110"), ("16.1", 200, "110")],
)
def test_a_failing_handler_is_logged_never_shown(
    make_env: Any,
    caplog: pytest.LogCaptureFixture,
    version: str,
    status: int,
    body_status: str | None,
) -> None:
    env = with_commands(make_env, {"FolderSync": CommandSpec(explode)})
    client = env.client(version=version)
    client.provision()
    with caplog.at_level(logging.ERROR, "mailhost.activesync"):
        response = client.command("FolderSync", folder_sync())
    assert response.status == status
    assert b"boom" not in response.body and b"Traceback" not in response.body
    if body_status is None:
        assert response.body == b""
    else:
        assert response.document is not None
        assert response.document.qname == "FolderHierarchy:FolderSync"
        assert response.text("Status") == body_status
    assert "boom in handler" in caplog.text and "Traceback" in caplog.text
    assert client.command("Settings", user_information()).status == 200


def test_overload_is_503_and_a_waiting_request_gives_its_slot_back(make_env: Any) -> None:
    release = threading.Event()
    entered = threading.Event()

    async def busy(ctx: CommandContext) -> CommandReply:
        entered.set()
        await trio.to_thread.run_sync(release.wait, 10)
        return await folder_sync_ok(ctx)

    async def waiting(ctx: CommandContext) -> CommandReply:
        with ctx.waiting():
            entered.set()
            await trio.to_thread.run_sync(release.wait, 10)
        return await folder_sync_ok(ctx)

    env = with_commands(
        make_env,
        {"FolderSync": CommandSpec(busy), "Ping": CommandSpec(waiting)},
        max_concurrent_requests=1,
    )
    first, second = env.client(), env.client()
    first.provision()
    second.policy_key = first.policy_key
    for command, expected in (("FolderSync", 503), ("Ping", 200)):
        entered.clear()
        release.clear()
        results: list[int] = []
        thread = threading.Thread(
            target=lambda c=command, r=results: r.append(first.command(c, folder_sync()).status)
        )
        thread.start()
        assert entered.wait(10)
        response = second.command("Settings", user_information())
        assert response.status == expected, command
        if expected == 503:
            assert response.headers["retry-after"] == "30"
        release.set()
        thread.join(10)
        assert results == [200]
    assert env.app.statistics().busy == 0


def test_a_client_that_goes_away_is_noticed(make_env: Any, client_context: ssl.SSLContext) -> None:
    noticed = threading.Event()

    async def long_poll(ctx: CommandContext) -> CommandReply:
        with ctx.waiting(), trio.move_on_after(10):
            await ctx.disconnected.wait()
            noticed.set()
        return CommandReply.empty()

    env = with_commands(make_env, {"Ping": CommandSpec(long_poll, needs_provisioning=False)})
    client = env.client()
    target = client.target("Ping")
    raw = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    tls = client_context.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(
        f"POST {target} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {basic(ALICE.address, ALICE_PASSWORD)}\r\n"
        "MS-ASProtocolVersion: 14.1\r\nContent-Length: 0\r\n\r\n".encode()
    )
    tls.close()
    assert noticed.wait(10)


# --- HTTP/2 and plain HTTP -------------------------------------------------------------


def test_http2_with_curl(eas: EasEnv, ca_file: str, tmp_path: Any) -> None:
    client = eas.client()
    key = client.provision()
    body = tmp_path / "settings.wbxml"
    from protocols.activesync.wbxml import encode

    body.write_bytes(encode(user_information()))
    url = f"https://localhost:{eas.port}{client.target('Settings')}"
    result = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", ca_file, "-u", f"{ALICE.address}:{ALICE_PASSWORD}",
         "-H", "MS-ASProtocolVersion: 16.1", "-H", f"X-MS-PolicyKey: {key}",
         "-H", f"Content-Type: {WBXML}", "--data-binary", f"@{body}",
         "-D", str(tmp_path / "headers"), "-o", str(tmp_path / "out"), url],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    headers = (tmp_path / "headers").read_text().lower()
    assert headers.startswith("http/2 200")
    assert "strict-transport-security: max-age=63072000" in headers
    document = check_with_libwbxml((tmp_path / "out").read_bytes())
    assert document.text_of("UserInformation/Status") == "1"


async def test_plain_http_never_asks_for_or_reads_credentials() -> None:
    from eas_server import FakeChecker

    checker = FakeChecker([(ALICE, "alice", ALICE_PASSWORD)])
    app = make_app(
        settings=lambda: default_settings(),
        checker=checker,
        devices=MemoryDeviceRegistry(),
        policies=FixedPolicySource(),
        commands=default_commands(trust=TrustStore.of([])),
    )
    for method, path in (
        ("POST", EAS_PATH),
        ("OPTIONS", EAS_PATH),
        ("POST", "/autodiscover/autodiscover.xml"),
        ("GET", "/mobileconfig"),
    ):
        sent: list[dict[str, Any]] = []
        scope = {
            "type": "http", "method": method, "path": path, "scheme": "http",
            "query_string": b"Cmd=Provision&User=a&DeviceId=d&DeviceType=t",
            "headers": [(b"authorization", basic(ALICE.address, ALICE_PASSWORD).encode())],
            "client": ("192.0.2.1", 1234),
        }  # fmt: skip

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            sent.append(message)

        await app(scope, receive, send)
        assert sent[0]["status"] == 403, (method, path)
        names = [name for name, _ in sent[0]["headers"]]
        assert b"www-authenticate" not in names and b"strict-transport-security" not in names
    assert checker.calls == []


def test_large_bodies_are_inflated_and_decoded_off_the_event_loop(eas: EasEnv) -> None:
    import os

    from eas_client import device_information_set

    client = eas.client()
    client.provision()
    model = os.urandom(150_000).hex()  # 300 KB of text: decoded in a worker thread
    document = E("Settings:Settings", device_information_set(Model=model))
    plain = client.command("Settings", document)
    assert plain.status_at("DeviceInformation/Status") == 1
    packed = client.command("Settings", document, gzip_body=True)  # > 64 KB compressed
    assert packed.status_at("DeviceInformation/Status") == 1
    assert eas.device().info.model == model[:256]


def test_a_body_that_stops_arriving_is_408(make_env: Any, client_context: ssl.SSLContext) -> None:
    env: EasEnv = make_env(settings=default_settings(body_idle_timeout=0.3))
    client = env.client()
    client.provision()
    raw = socket.create_connection(("127.0.0.1", env.port), timeout=10)
    with client_context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(
            f"POST {client.target('Settings')} HTTP/1.1\r\nHost: localhost\r\n"
            f"Authorization: {basic(ALICE.address, ALICE_PASSWORD)}\r\n"
            f"MS-ASProtocolVersion: 16.1\r\nX-MS-PolicyKey: {client.policy_key}\r\n"
            "Content-Length: 100\r\n\r\n0123456789".encode()
        )
        reply = tls.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408")
    assert client.command("Settings", user_information()).status == 200
    assert env.app.statistics().busy == 0


def test_settings_are_checked() -> None:
    assert default_settings().errors() == []
    bad = default_settings(
        external_url="http://mail.example.org/Microsoft-Server-ActiveSync",
        heartbeat_min=600,
        heartbeat_max=60,
        max_concurrent_requests=0,
        netbios_domain=" ",
    )
    assert len(bad.errors()) == 4, bad.errors()
    assert default_settings().public_host == "mail.example.org"
    assert default_settings(realm="Mail").challenge_realm == "Mail"


def test_accept_multipart_from_header_or_base64_option(make_env: Any) -> None:
    seen: list[bool] = []

    async def item_operations(ctx: CommandContext) -> CommandReply:
        seen.append(ctx.accept_multipart)
        return CommandReply.wbxml(E("ItemOperations:ItemOperations", E("ItemOperations:Status", 1)))

    env = with_commands(make_env, {"ItemOperations": CommandSpec(item_operations)})
    client = env.client()
    client.provision()
    client.command("ItemOperations", None)
    client.command("ItemOperations", None, headers={"MS-ASAcceptMultiPart": "T"})
    encoded = env.client(base64_form=True)
    encoded.policy_key = client.policy_key
    encoded.command("ItemOperations", None, params={"Options": "\x02"})
    assert seen == [False, True, True]
