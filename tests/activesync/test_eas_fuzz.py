"""Parsers of client input never fail with anything but their own error: the command
request parsers over arbitrary element trees, the provisioning logic over what they
accept, and the Autodiscover XML parser over arbitrary bytes (reliability-security 43)."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wbxml_strategies import trees

from protocols.activesync.autodiscover import AutodiscoverRequestError, parse_request
from protocols.activesync.commands.resolverecipients import (
    ResolveRecipientsError,
    parse_resolve_recipients,
)
from protocols.activesync.commands.validatecert import (
    ValidateCertError,
    parse_validate_cert,
    validate_certificate,
)
from protocols.activesync.devices import Device, WipeState, parse_device_information
from protocols.activesync.policy import DEFAULT_POLICY
from protocols.activesync.provision import ProvisionParseError, parse_provision, provision
from protocols.activesync.request import ProtocolVersion
from protocols.activesync.wbxml import Element, tags_of

TEXT = st.text(max_size=12) | st.sampled_from(
    ["1", "2", "0", "123456", "MS-EAS-Provisioning-WBXML"]
)


def page(*namespaces: str) -> list[tuple[str, str]]:
    return [(ns, tag.name) for ns in namespaces for tag in tags_of(ns)]


def rooted(ns: str, tag: str, *namespaces: str) -> st.SearchStrategy[Element]:
    children = st.lists(trees(page(*namespaces), TEXT, max_leaves=12), max_size=4)
    return children.map(lambda kids: Element(ns, tag, tuple(kids)))


DEVICE = Device("o", "d", "u@x.org", "t", 1.0, 1.0, temporary_key=5, temporary_policy_stamp="s")
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    rooted("Provision", "Provision", "Provision", "Settings"),
    st.sampled_from(list(ProtocolVersion)),
    st.booleans(),
)
def test_provision_requests(document: Element, version: ProtocolVersion, wiping: bool) -> None:
    try:
        request = parse_provision(document)
    except ProvisionParseError:
        return
    device = DEVICE if not wiping else Device("o", "d", "u", "t", 1.0, 1.0, wipe=WipeState.PENDING)
    outcome = provision(device, request, DEFAULT_POLICY, version=version, now=2.0)
    assert outcome.response.qname == "Provision:Provision"
    set_element = document.find("Settings:DeviceInformation/Set")
    if set_element is not None:
        parse_device_information(set_element)


@FUZZ
@given(rooted("ValidateCert", "ValidateCert", "ValidateCert"))
def test_validate_cert_requests(document: Element) -> None:
    try:
        request = parse_validate_cert(document)
    except ValidateCertError:
        return
    now = dt.datetime.now(dt.UTC)
    for der in request.certificates:
        validate_certificate(der, request.chain, (), now=now, check_crl=request.check_crl)


@FUZZ
@given(rooted("ResolveRecipients", "ResolveRecipients", "ResolveRecipients"))
def test_resolve_recipients_requests(document: Element) -> None:
    try:
        parse_resolve_recipients(document)
    except ResolveRecipientsError:
        pass


@FUZZ
@given(st.binary(max_size=300))
def test_autodiscover_bytes(body: bytes) -> None:
    try:
        parse_request(body)
    except AutodiscoverRequestError:
        pass


XMLISH = st.lists(
    st.sampled_from(
        ["<Autodiscover>", "</Autodiscover>", "<Request>", "</Request>", "<EMailAddress>",
         "</EMailAddress>", "a@b.org", "<!DOCTYPE x>", "<!--c-->", "&amp;", "&x;", "<a ", "\x00", "é"]
    ),
    max_size=12,
).map("".join)  # fmt: skip


@FUZZ
@given(XMLISH)
def test_autodiscover_xmlish(text: str) -> None:
    try:
        parse_request(text.encode())
    except AutodiscoverRequestError:
        pass
