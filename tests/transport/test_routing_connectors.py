"""Send connectors: address spaces and the choice of the most specific one."""

from __future__ import annotations

import pytest

from transport.dns import FakeResolver
from transport.routing import (
    AddressSpace,
    ConnectorError,
    Router,
    SendConnector,
    SmartHost,
    SmartHostAuth,
    StaticConnectors,
    parse_address_space,
    parse_smart_host,
)


def router(*connectors: SendConnector) -> Router:
    return Router(StaticConnectors(connectors), FakeResolver())


def chosen(r: Router, domain: str) -> str | None:
    route = r.route_for(domain)
    return None if route is None else route.connector.name


def test_address_space_syntax() -> None:
    assert parse_address_space("*") == AddressSpace("", True)
    assert parse_address_space("Example.COM.") == AddressSpace("example.com", False)
    assert parse_address_space("*.example.com") == AddressSpace("example.com", True)
    assert str(parse_address_space("*.bücher.example")) == "*.xn--bcher-kva.example"
    for bad in (
        "ex*ample.com",
        "*example.com",
        "a..b",
        "-a.com",
        "",
        "a" * 64 + ".com",
        "*.",
        "a b.com",
    ):
        with pytest.raises(ConnectorError):
            parse_address_space(bad)


def test_most_specific_match_wins() -> None:
    r = router(
        SendConnector(name="Internet", address_spaces=("*",)),
        SendConnector(name="Contoso", address_spaces=("*.contoso.test",)),
        SendConnector(name="Sales", address_spaces=("*.sales.contoso.test",)),
        SendConnector(name="Exact", address_spaces=("contoso.test",)),
    )
    assert chosen(r, "fabrikam.test") == "Internet"
    assert chosen(r, "contoso.test") == "Exact"  # exact beats "*.contoso.test"
    assert chosen(r, "eu.contoso.test") == "Contoso"
    assert chosen(r, "sales.contoso.test") == "Sales"
    assert chosen(r, "x.sales.contoso.test") == "Sales"
    assert chosen(r, "notcontoso.test") == "Internet"
    assert chosen(r, "CONTOSO.test.") == "Exact"


def test_wildcard_includes_the_domain_itself() -> None:
    r = router(SendConnector(name="Partner", address_spaces=("*.partner.test",)))
    assert chosen(r, "partner.test") == "Partner"
    assert chosen(r, "mail.partner.test") == "Partner"
    assert chosen(r, "other.test") is None


def test_no_connector_means_no_route() -> None:
    assert chosen(router(), "example.test") is None
    only = router(SendConnector(name="Partner", address_spaces=("partner.test",)))
    assert chosen(only, "example.test") is None


def test_disabled_connectors_and_ties() -> None:
    r = router(
        SendConnector(name="B", address_spaces=("*",)),
        SendConnector(name="A", address_spaces=("*",)),
        SendConnector(name="Off", address_spaces=("x.test",), enabled=False),
    )
    assert chosen(r, "x.test") == "A"  # Off is ignored; the tie goes to the smaller name


def test_address_literals_only_match_star() -> None:
    r = router(SendConnector(name="Partner", address_spaces=("partner.test",)))
    assert chosen(r, "[192.0.2.1]") is None
    r = router(SendConnector(name="Internet"))
    route = r.route_for("[192.0.2.1]")
    assert route is not None and route.domain == "[192.0.2.1]"
    assert chosen(r, "bad domain") is None


def test_destinations_group_deliveries() -> None:
    mx = router(SendConnector(name="Internet")).route_for("a.test")
    assert mx is not None and mx.destination == "Internet:a.test"
    smart = router(SendConnector(name="Relay", smart_hosts=(SmartHost("relay.test"),))).route_for(
        "a.test"
    )
    assert smart is not None and smart.destination == "Relay:[smarthost]"


def test_connector_validation() -> None:
    with pytest.raises(ConnectorError):
        SendConnector(name="bad/name")
    with pytest.raises(ConnectorError):
        SendConnector(name="x", address_spaces=())
    with pytest.raises(ConnectorError):
        SendConnector(name="x", auth=SmartHostAuth("u", "p"))  # credentials need smart hosts
    with pytest.raises(ConnectorError):
        SendConnector(name="x", max_message_size=0)
    with pytest.raises(ConnectorError):
        SmartHostAuth("u\r\n", "p")
    assert "p" not in repr(SmartHostAuth("user", "p"))


def test_smart_host_syntax() -> None:
    assert parse_smart_host("relay.test") == SmartHost("relay.test", 25)
    assert parse_smart_host("relay.test:587") == SmartHost("relay.test", 587)
    assert parse_smart_host("192.0.2.1:2525") == SmartHost("192.0.2.1", 2525)
    assert parse_smart_host("[2001:db8::1]:587") == SmartHost("2001:db8::1", 587)
    assert parse_smart_host("2001:db8::1") == SmartHost("2001:db8::1", 25)
    assert str(SmartHost("2001:db8::1", 587)) == "[2001:db8::1]:587"
    for bad in ("relay.test:x", "relay.test:0", "relay.test:70000", "[::1]x", "bad host"):
        with pytest.raises(ConnectorError):
            parse_smart_host(bad)
