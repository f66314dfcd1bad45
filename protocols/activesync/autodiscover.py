"""Account discovery: Exchange's Autodiscover (the POX mobilesync schema, MS-ASCMD
2.2.1.1, and the JSON v2 form), Thunderbird's autoconfig and Apple configuration profiles.

Sans-IO: each function takes what was asked and returns an `HttpResponse`; the front end
authenticates and routes. The POX request is XML from the network: it is parsed only
after refusing any DOCTYPE, which is where entity declarations (billion laughs, XXE,
reliability-security item 47) would have to live; expat then has no entity to expand.
"""

from __future__ import annotations

import datetime as dt
import json
import plistlib
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

from protocols.auth import Account

from .context import ActiveSyncSettings
from .http import HttpResponse
from .status import AutodiscoverError

MOBILESYNC_REQUEST_SCHEMA: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
)
MOBILESYNC_RESPONSE_SCHEMA: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)
OUTLOOK_RESPONSE_SCHEMA: Final = (
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
)
RESPONSE_SCHEMA: Final = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
XML_CONTENT_TYPE: Final = "text/xml; charset=utf-8"  # MS-ASCMD 2.2.1.1.2
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
MOBILECONFIG_CONTENT_TYPE: Final = "application/x-apple-aspen-config"

MAX_AUTODISCOVER_REQUEST: Final = 16 * 1024  # real requests are ~400 bytes
MAX_ADDRESS_LENGTH: Final = 254  # RFC 5321 4.5.3.1.3 path minus the brackets
_ADDRESS: Final = re.compile(r"[^@\s<>\"(),;:\\\[\]]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+")
_DECLARATION: Final = re.compile(rb"<!(?!--)", re.IGNORECASE)  # DOCTYPE, ENTITY, CDATA, ...


class AutodiscoverRequestError(ValueError):
    """The POX request cannot be used (answered with ErrorCode 600)."""


@dataclass(frozen=True, slots=True)
class AutodiscoverRequest:
    email: str
    schema: str


def valid_address(text: str) -> str | None:
    """`text` as a lower-cased address if it looks like one, else None."""
    text = text.strip()
    if len(text) > MAX_ADDRESS_LENGTH or not _ADDRESS.fullmatch(text):
        return None
    return text.lower()


def parse_request(body: bytes) -> AutodiscoverRequest:
    """The mobilesync (or outlook) request schema: Request/EMailAddress and
    Request/AcceptableResponseSchema, matched by local name."""
    if len(body) > MAX_AUTODISCOVER_REQUEST:
        raise AutodiscoverRequestError("request too large")
    if body.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in body:
        raise AutodiscoverRequestError("only UTF-8 requests are accepted")
    if _DECLARATION.search(body):
        raise AutodiscoverRequestError("DOCTYPE, ENTITY and CDATA are not accepted")
    try:
        # Safe: no DOCTYPE (refused above) means no entity can be declared, so expat has
        # nothing to expand and no external resource to fetch.
        root = ET.fromstring(body)  # noqa: S314
    except ET.ParseError as exc:
        raise AutodiscoverRequestError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "Autodiscover":
        raise AutodiscoverRequestError("root element is not Autodiscover")
    email = schema = ""
    for request in root:
        if _local(request.tag) != "Request":
            continue
        for child in request:
            name = _local(child.tag)
            if name == "EMailAddress":
                email = (child.text or "").strip()
            elif name == "AcceptableResponseSchema":
                schema = (child.text or "").strip()
    address = valid_address(email)
    if address is None:
        raise AutodiscoverRequestError("EMailAddress missing or not an address")
    return AutodiscoverRequest(address, schema)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def error_response(code: AutodiscoverError, message: str, *, now: dt.datetime) -> HttpResponse:
    """MS-ASCMD 2.2.3.57 / AutodiscoverResponse.xsd: Response/Error with an ErrorCode."""
    stamp = now.strftime("%H:%M:%S.%f")
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{RESPONSE_SCHEMA}">'
        "<Response>"
        f'<Error Time="{stamp}" Id="{uuid.uuid4().int % 4294967295}">'
        f"<ErrorCode>{int(code)}</ErrorCode>"
        f"<Message>{escape(message)}</Message>"
        "<DebugData />"
        "</Error>"
        "</Response>"
        "</Autodiscover>"
    )
    return HttpResponse(200, body.encode(), XML_CONTENT_TYPE)


def mobilesync_response(
    request: AutodiscoverRequest,
    account: Account,
    settings: ActiveSyncSettings,
    *,
    now: dt.datetime,
) -> HttpResponse:
    """The answer to an authenticated POX request (MS-ASCMD 2.2.1.1.2)."""
    if request.schema and request.schema != MOBILESYNC_RESPONSE_SCHEMA:
        # MS-ASCMD 2.2.3.57: 601 when the requested response schema is not served (the
        # outlook one asks for EWS/RPC settings this server does not have).
        return error_response(
            AutodiscoverError.SCHEMA_NOT_AVAILABLE,
            "The requested response schema is not available; use the mobilesync schema",
            now=now,
        )
    owned = {a.lower() for a in (account.address, *account.addresses)}
    if request.email not in owned:
        return error_response(
            AutodiscoverError.INVALID_REQUEST,
            "The e-mail address is not one of the signed-in user's addresses",
            now=now,
        )
    url = escape(settings.external_url)
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{RESPONSE_SCHEMA}">'
        f'<Response xmlns="{MOBILESYNC_RESPONSE_SCHEMA}">'
        "<Culture>en:us</Culture>"
        "<User>"
        f"<DisplayName>{escape(account.display_name or request.email)}</DisplayName>"
        f"<EMailAddress>{escape(request.email)}</EMailAddress>"
        "</User>"
        "<Action><Settings><Server>"
        "<Type>MobileSync</Type>"
        f"<Url>{url}</Url>"
        f"<Name>{url}</Name>"
        "</Server></Settings></Action>"
        "</Response>"
        "</Autodiscover>"
    )
    return HttpResponse(200, body.encode(), XML_CONTENT_TYPE)


# --- Autodiscover v2 (JSON) -----------------------------------------------------------------

JSON_PROTOCOLS: Final = ("ActiveSync", "AutodiscoverV1")


def json_response(
    email: str | None, protocol: str | None, settings: ActiveSyncSettings
) -> HttpResponse:
    """GET /autodiscover/autodiscover.json?Email=..&Protocol=.. (and /v1.0/<email>), as
    Exchange Online answers it. The answer does not depend on whether the address exists
    (no user enumeration without a password)."""
    chosen = next((p for p in JSON_PROTOCOLS if p.lower() == (protocol or "").lower()), None)
    if chosen is None:
        return _json(
            400,
            {
                "ErrorCode": "InvalidProtocol",
                "ErrorMessage": f"The given protocol value '{protocol or ''}' is invalid. "
                f"Supported values are '{','.join(JSON_PROTOCOLS)}'",
            },
        )
    if email is None or valid_address(email) is None:
        return _json(
            400, {"ErrorCode": "InvalidUser", "ErrorMessage": "A valid email address is required"}
        )
    if chosen == "ActiveSync":
        url = settings.external_url
    else:
        url = f"https://{settings.public_host}/autodiscover/autodiscover.xml"
    return _json(200, {"Protocol": chosen, "Url": url})


def _json(status: int, value: dict[str, str]) -> HttpResponse:
    return HttpResponse(status, json.dumps(value).encode(), JSON_CONTENT_TYPE)


# --- Thunderbird autoconfig -----------------------------------------------------------------


def autoconfig_response(address: str, settings: ActiveSyncSettings) -> HttpResponse:
    """Thunderbird's config-v1.1.xml for the address's domain: IMAP and POP3 over TLS,
    SMTP submission on 465 (TLS) and 587 (STARTTLS), with the public ports."""
    domain = address.rpartition("@")[2]
    host = escape(settings.mail_server)
    ports = settings.mail_ports
    servers: list[str] = []

    def server(kind: str, direction: str, port: int | None, socket: str) -> None:
        if port is None:
            return
        servers.append(
            f'<{direction}Server type="{kind}">'
            f"<hostname>{host}</hostname>"
            f"<port>{port}</port>"
            f"<socketType>{socket}</socketType>"
            "<authentication>password-cleartext</authentication>"
            "<username>%EMAILADDRESS%</username>"
            f"</{direction}Server>"
        )

    server("imap", "incoming", ports.imaps, "SSL")
    server("pop3", "incoming", ports.pop3s, "SSL")
    server("smtp", "outgoing", ports.submissions, "SSL")
    server("smtp", "outgoing", ports.submission, "STARTTLS")
    name = escape(settings.organization or domain)
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">'
        f'<emailProvider id="{escape(domain)}">'
        f"<domain>{escape(domain)}</domain>"
        f"<displayName>{name}</displayName>"
        f"<displayShortName>{name}</displayShortName>"
        f"{''.join(servers)}"
        "</emailProvider>"
        "</clientConfig>"
    )
    return HttpResponse(200, body.encode(), "application/xml; charset=utf-8")


# --- Apple configuration profiles ------------------------------------------------------------

PROFILE_KINDS: Final = ("eas", "imap")


def mobileconfig_response(
    kind: str, address: str, account: Account, settings: ActiveSyncSettings
) -> HttpResponse:
    """A configuration profile (plist) with one account payload: com.apple.eas.account for
    ActiveSync, com.apple.mail.managed for IMAP + SMTP. No password is put in it: the
    device asks for it on install. Every payload UUID is fresh."""
    host = settings.public_host
    identifier = ".".join(reversed(host.split("."))) + f".mailhost.{kind}"
    display = account.display_name or address
    if kind == "eas":
        payload: dict[str, object] = {
            "PayloadType": "com.apple.eas.account",
            "PayloadDisplayName": "Exchange ActiveSync",
            "EmailAddress": address,
            "UserName": address,
            "Host": host,
            "SSL": True,
        }
        port = _port_of(settings.external_url)
        if port is not None and port != 443:
            payload["Port"] = port
    else:
        ports = settings.mail_ports
        submission = ports.submissions or ports.submission or 465
        payload = {
            "PayloadType": "com.apple.mail.managed",
            "PayloadDisplayName": "IMAP",
            "EmailAccountType": "EmailTypeIMAP",
            "EmailAccountDescription": address,
            "EmailAccountName": display,
            "EmailAddress": address,
            "IncomingMailServerHostName": settings.mail_server,
            "IncomingMailServerPortNumber": ports.imaps or 993,
            "IncomingMailServerUseSSL": True,
            "IncomingMailServerAuthentication": "EmailAuthPassword",
            "IncomingMailServerUsername": address,
            "OutgoingMailServerHostName": settings.mail_server,
            "OutgoingMailServerPortNumber": submission,
            "OutgoingMailServerUseSSL": True,
            "OutgoingMailServerAuthentication": "EmailAuthPassword",
            "OutgoingMailServerUsername": address,
            "OutgoingPasswordSameAsIncomingPassword": True,
        }
    payload.update(
        {
            "PayloadIdentifier": f"{identifier}.account",
            "PayloadUUID": str(uuid.uuid4()).upper(),
            "PayloadVersion": 1,
        }
    )
    profile: dict[str, object] = {
        "PayloadContent": [payload],
        "PayloadDisplayName": f"{display} ({host})",
        "PayloadIdentifier": identifier,
        "PayloadType": "Configuration",
        "PayloadUUID": str(uuid.uuid4()).upper(),
        "PayloadVersion": 1,
        "PayloadRemovalDisallowed": False,
    }
    if settings.organization:
        profile["PayloadOrganization"] = settings.organization
    body = plistlib.dumps(profile, fmt=plistlib.FMT_XML)
    filename = f"{kind}-{host}.mobileconfig"
    return HttpResponse(
        200,
        body,
        MOBILECONFIG_CONTENT_TYPE,
        (("content-disposition", f'attachment; filename="{filename}"'),),
    )


def _port_of(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None
