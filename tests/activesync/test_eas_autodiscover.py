"""Account discovery on the HTTPS listener: POX Autodiscover (mobilesync), its JSON v2
form, Thunderbird autoconfig and Apple configuration profiles."""

from __future__ import annotations

import json
import plistlib
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from eas_client import MOBILESYNC_REQUEST, MOBILESYNC_RESPONSE, OUTLOOK_RESPONSE
from eas_env import ALICE, BOB, BOB_PASSWORD, EasEnv

from protocols.activesync.autodiscover import (
    MAX_AUTODISCOVER_REQUEST,
    AutodiscoverRequestError,
    parse_request,
)

RESPONSE = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
MOBILE = "{" + MOBILESYNC_RESPONSE + "}"


def error_code(body: bytes) -> str | None:
    root = ET.fromstring(body)
    return root.findtext(f"{RESPONSE}Response/{RESPONSE}Error/{RESPONSE}ErrorCode")


@pytest.mark.parametrize(
    "path",
    [
        "/autodiscover/autodiscover.xml",
        "/Autodiscover/Autodiscover.xml",
        "/AUTODISCOVER/AUTODISCOVER.XML",
    ],
)
def test_mobilesync_autodiscover(eas: EasEnv, path: str) -> None:
    client = eas.client()
    challenge = client.request("POST", path, b"", auth=False)
    assert challenge.status == 401 and "www-authenticate" in challenge.headers
    response = client.autodiscover(ALICE.address, path=path)
    assert response.status == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(response.body)
    assert root.tag == f"{RESPONSE}Autodiscover"
    answer = root.find(f"{MOBILE}Response")
    assert answer is not None
    assert [child.tag.rpartition("}")[2] for child in answer] == ["Culture", "User", "Action"]
    assert answer.findtext(f"{MOBILE}User/{MOBILE}DisplayName") == "Alice Liddell"
    assert answer.findtext(f"{MOBILE}User/{MOBILE}EMailAddress") == ALICE.address
    server = answer.find(f"{MOBILE}Action/{MOBILE}Settings/{MOBILE}Server")
    assert server is not None
    assert server.findtext(f"{MOBILE}Type") == "MobileSync"
    assert server.findtext(f"{MOBILE}Url") == "https://mail.example.org/Microsoft-Server-ActiveSync"
    assert server.findtext(f"{MOBILE}Name") == server.findtext(f"{MOBILE}Url")
    assert response.headers["strict-transport-security"] == "max-age=63072000"


def test_other_addresses_of_the_user_are_discovered(eas: EasEnv) -> None:
    response = eas.client().autodiscover("A.Liddell@example.org")
    assert error_code(response.body) is None
    assert b"<EMailAddress>a.liddell@example.org</EMailAddress>" in response.body


def test_outlook_schema_is_601(eas: EasEnv) -> None:
    response = eas.client().autodiscover(ALICE.address, OUTLOOK_RESPONSE)
    assert response.status == 200 and error_code(response.body) == "601"


def test_someone_elses_address_is_600(eas: EasEnv) -> None:
    response = eas.client(BOB, BOB_PASSWORD).autodiscover(ALICE.address)
    assert error_code(response.body) == "600"
    assert b"MobileSync" not in response.body


@pytest.mark.parametrize(
    "body",
    [
        b"not xml at all",
        b"<Autodiscover><Request><EMailAddress>not-an-address</EMailAddress></Request></Autodiscover>",
        b"<Other/>",
        # Entity expansion (billion laughs) and external entities are refused unparsed.
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
        b"<Autodiscover><Request><EMailAddress>&y;</EMailAddress></Request></Autodiscover>",
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<Autodiscover><Request><EMailAddress>&e;</EMailAddress></Request></Autodiscover>",
        "<Autodiscover/>".encode("utf-16"),
    ],
)
def test_bad_requests_are_600_and_nothing_is_expanded(eas: EasEnv, body: bytes) -> None:
    response = eas.client().request(
        "POST", "/autodiscover/autodiscover.xml", body, {"Content-Type": "text/xml"}
    )
    assert response.status == 200 and error_code(response.body) == "600"
    assert b"root:" not in response.body


def test_get_on_the_pox_path_and_size_limit(eas: EasEnv) -> None:
    client = eas.client()
    assert error_code(client.request("GET", "/autodiscover/autodiscover.xml").body) == "600"
    big = b"<a>" + b"x" * MAX_AUTODISCOVER_REQUEST + b"</a>"
    assert client.request("POST", "/autodiscover/autodiscover.xml", big).status == 413
    assert client.request("PUT", "/autodiscover/autodiscover.xml").status == 405


def test_parser_reads_the_request_schema() -> None:
    body = (
        f'<Autodiscover xmlns="{MOBILESYNC_REQUEST}"><Request>'
        "<EMailAddress> Alice@Example.org </EMailAddress>"
        f"<AcceptableResponseSchema>{MOBILESYNC_RESPONSE}</AcceptableResponseSchema>"
        "</Request></Autodiscover>"
    ).encode()
    request = parse_request(body)
    assert (request.email, request.schema) == ("alice@example.org", MOBILESYNC_RESPONSE)
    with pytest.raises(AutodiscoverRequestError):
        parse_request(b"<!-- fine --><!DOCTYPE x><Autodiscover/>")


# --- JSON v2 -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/autodiscover/autodiscover.json?Email=alice@example.org&Protocol=ActiveSync",
        "/autodiscover/autodiscover.json/v1.0/alice@example.org?Protocol=ActiveSync",
        "/Autodiscover/Autodiscover.json/v1.0/alice%40example.org?protocol=activesync",
        "/autodiscover/autodiscover.json?Email=nobody@elsewhere.test&Protocol=ActiveSync",
    ],
)
def test_json_autodiscover(eas: EasEnv, target: str) -> None:
    response = eas.client().request("GET", target, auth=False)
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/json")
    assert json.loads(response.body) == {
        "Protocol": "ActiveSync",
        "Url": "https://mail.example.org/Microsoft-Server-ActiveSync",
    }


def test_json_autodiscover_v1_and_errors(eas: EasEnv) -> None:
    client = eas.client()
    v1 = client.request(
        "GET",
        "/autodiscover/autodiscover.json/v1.0/a@example.org?Protocol=AutodiscoverV1",
        auth=False,
    )
    assert json.loads(v1.body) == {
        "Protocol": "AutodiscoverV1",
        "Url": "https://mail.example.org/autodiscover/autodiscover.xml",
    }
    bad = client.request(
        "GET", "/autodiscover/autodiscover.json/v1.0/a@example.org?Protocol=Rest", auth=False
    )
    assert bad.status == 400 and json.loads(bad.body)["ErrorCode"] == "InvalidProtocol"
    none = client.request("GET", "/autodiscover/autodiscover.json?Email=a@example.org", auth=False)
    assert none.status == 400 and json.loads(none.body)["ErrorCode"] == "InvalidProtocol"
    no_user = client.request(
        "GET", "/autodiscover/autodiscover.json?Protocol=ActiveSync", auth=False
    )
    assert no_user.status == 400 and json.loads(no_user.body)["ErrorCode"] == "InvalidUser"
    assert (
        client.request(
            "GET", "/autodiscover/autodiscover.json/v2.0/a@example.org", auth=False
        ).status
        == 404
    )
    assert client.request("POST", "/autodiscover/autodiscover.json", auth=False).status == 405


# --- Thunderbird autoconfig ---------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"]
)
def test_autoconfig(make_env: Any, path: str) -> None:
    env: EasEnv = make_env(accepted_domain=lambda domain: domain == "example.org")
    client = env.client()
    response = client.request("GET", f"{path}?emailaddress=alice%40example.org", auth=False)
    assert response.status == 200
    root = ET.fromstring(response.body)
    provider = root.find("emailProvider")
    assert root.get("version") == "1.1" and provider is not None
    assert provider.get("id") == "example.org" and provider.findtext("domain") == "example.org"
    servers = [
        (s.tag, s.get("type"), s.findtext("hostname"), s.findtext("port"), s.findtext("socketType"),
         s.findtext("username"), s.findtext("authentication"))
        for s in provider if s.tag.endswith("Server")
    ]  # fmt: skip
    common = ("%EMAILADDRESS%", "password-cleartext")
    assert servers == [
        ("incomingServer", "imap", "mail.example.org", "993", "SSL", *common),
        ("incomingServer", "pop3", "mail.example.org", "995", "SSL", *common),
        ("outgoingServer", "smtp", "mail.example.org", "465", "SSL", *common),
        ("outgoingServer", "smtp", "mail.example.org", "587", "STARTTLS", *common),
    ]
    other = client.request("GET", f"{path}?emailaddress=eve@elsewhere.test", auth=False)
    assert other.status == 404
    assert client.request("GET", path, auth=False).status == 400


def test_autoconfig_uses_the_configured_public_ports(make_env: Any) -> None:
    from eas_env import default_settings

    from protocols.activesync.context import MailPorts

    env: EasEnv = make_env(
        settings=default_settings(
            mail_host="imap.example.org", mail_ports=MailPorts(10993, None, 10465, None)
        )
    )
    body = (
        env.client()
        .request("GET", "/mail/config-v1.1.xml?emailaddress=a@example.org", auth=False)
        .body
    )
    root = ET.fromstring(body)
    ports = [
        (s.get("type"), s.findtext("hostname"), s.findtext("port"))
        for s in root.iter()
        if s.tag.endswith("Server")
    ]
    assert ports == [("imap", "imap.example.org", "10993"), ("smtp", "imap.example.org", "10465")]


# --- Apple configuration profiles --------------------------------------------------------


def test_mobileconfig_profiles(eas: EasEnv) -> None:
    client = eas.client()
    assert client.request("GET", "/mobileconfig?type=eas", auth=False).status == 401
    eas_profile = client.request("GET", "/mobileconfig?type=eas")
    assert eas_profile.status == 200
    assert eas_profile.headers["content-type"] == "application/x-apple-aspen-config"
    assert "attachment" in eas_profile.headers["content-disposition"]
    profile = plistlib.loads(eas_profile.body)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (payload,) = profile["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.eas.account"
    assert payload["Host"] == "mail.example.org" and payload["SSL"] is True
    assert payload["EmailAddress"] == payload["UserName"] == ALICE.address
    assert "Password" not in payload and "Port" not in payload
    assert profile["PayloadOrganization"] == "Example Org"
    imap = plistlib.loads(
        client.request("GET", "/mobileconfig?type=imap&email=a.liddell@example.org").body
    )
    (mail,) = imap["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert mail["EmailAddress"] == "a.liddell@example.org"
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == (
        "mail.example.org",
        993,
    )
    assert (mail["OutgoingMailServerPortNumber"], mail["OutgoingMailServerUseSSL"]) == (465, True)
    uuids = {
        profile["PayloadUUID"],
        payload["PayloadUUID"],
        imap["PayloadUUID"],
        mail["PayloadUUID"],
    }
    again = plistlib.loads(client.request("GET", "/mobileconfig").body)
    uuids |= {again["PayloadUUID"], again["PayloadContent"][0]["PayloadUUID"]}
    assert len(uuids) == 6  # every profile and payload has its own UUID
    assert client.request("GET", "/mobileconfig?email=bob@example.org").status == 403
    assert client.request("GET", "/mobileconfig?type=pop").status == 400
