"""MX resolution (RFC 5321 5.1, RFC 7505) against a table resolver, and dnspython's async
resolver on trio against a DNS stub answering on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import random

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import trio

from transport.dns import DnsNoRecords, DnsResolver, DnsTemporaryError, FakeResolver
from transport.routing import (
    MAX_MX_ADDRESSES,
    Router,
    RoutingError,
    SendConnector,
    SmartHost,
    StaticConnectors,
)

INTERNET = SendConnector(name="Internet")


def router(
    resolver: FakeResolver,
    *,
    local: bool = False,
    seed: int = 1,
    connector: SendConnector = INTERNET,
) -> Router:
    return Router(
        StaticConnectors((connector,)),
        resolver,
        rng=random.Random(seed),
        allow_local_addresses=local,
    )


async def hops(
    resolver: FakeResolver, domain: str = "remote.test", **kw: object
) -> list[tuple[str, list[str], int | None]]:
    r = router(resolver, **kw)  # type: ignore[arg-type]
    route = r.route_for(domain)
    assert route is not None
    return [(h.host, [str(a) for a in h.addresses], h.preference) for h in await r.resolve(route)]


async def failure(
    resolver: FakeResolver, domain: str = "remote.test", **kw: object
) -> RoutingError:
    with pytest.raises(RoutingError) as caught:
        await hops(resolver, domain, **kw)
    return caught.value


async def test_preference_order_with_equal_preferences_shuffled() -> None:
    resolver = FakeResolver(
        mx={"remote.test": [(20, "c.test"), (10, "a.test"), (10, "b.test"), (30, "d.test")]},
        a={
            "a.test": ["192.0.2.1"],
            "b.test": ["192.0.2.2"],
            "c.test": ["192.0.2.3"],
            "d.test": ["192.0.2.4"],
        },
    )
    orders = set()
    for seed in range(20):
        names = [h[0] for h in await hops(resolver, seed=seed)]
        assert set(names[:2]) == {"a.test", "b.test"}
        assert names[2:] == ["c.test", "d.test"]
        orders.add(tuple(names[:2]))
    assert orders == {("a.test", "b.test"), ("b.test", "a.test")}


async def test_address_budget() -> None:
    resolver = FakeResolver(
        mx={"remote.test": [(10, "a.test"), (20, "b.test")]},
        a={
            "a.test": [f"192.0.2.{i}" for i in range(1, 5)],
            "b.test": ["198.51.100.1", "198.51.100.2"],
        },
    )
    result = await hops(resolver)
    assert sum(len(addresses) for _h, addresses, _p in result) == MAX_MX_ADDRESSES


async def test_no_mx_uses_the_domain_itself() -> None:
    resolver = FakeResolver(a={"remote.test": ["192.0.2.7"]}, aaaa={"remote.test": ["2001:db8::7"]})
    assert await hops(resolver) == [("remote.test", ["192.0.2.7", "2001:db8::7"], None)]


async def test_nxdomain_is_permanent() -> None:
    error = await failure(FakeResolver())
    assert error.status == "5.1.2" and error.permanent


async def test_null_mx() -> None:
    error = await failure(FakeResolver(mx={"remote.test": [(0, ".")]}))
    assert error.status == "5.1.10" and error.permanent
    mixed = FakeResolver(
        mx={"remote.test": [(0, "."), (10, "mx.test")]}, a={"mx.test": ["192.0.2.1"]}
    )
    assert [h[0] for h in await hops(mixed)] == ["mx.test"]  # RFC 7505 3: stray "." ignored


async def test_servfail_is_temporary_and_never_falls_back_to_a() -> None:
    resolver = FakeResolver(a={"remote.test": ["192.0.2.1"]}, fail={"remote.test": "MX"})
    error = await failure(resolver)
    assert error.status == "4.4.3" and not error.permanent
    assert resolver.queries == [("remote.test", "MX")]


async def test_mx_host_lookup_failures() -> None:
    resolver = FakeResolver(
        mx={"remote.test": [(10, "broken.test"), (20, "ok.test")]},
        a={"ok.test": ["192.0.2.9"], "broken.test": []},
        fail={"broken.test": "*"},
    )
    assert [h[0] for h in await hops(resolver)] == ["ok.test"]
    only_broken = FakeResolver(mx={"remote.test": [(10, "broken.test")]}, fail={"broken.test": "*"})
    assert (await failure(only_broken)).status == "4.4.3"


async def test_cnames_are_followed() -> None:
    resolver = FakeResolver(
        cname={"remote.test": "real.test", "mx.real.test": "box.test"},
        mx={"real.test": [(10, "mx.real.test")]},
        a={"box.test": ["192.0.2.5"]},
    )
    assert await hops(resolver) == [("mx.real.test", ["192.0.2.5"], 10)]
    looping = FakeResolver(cname={"remote.test": "loop.test", "loop.test": "remote.test"})
    assert (await failure(looping)).status == "4.4.3"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "0.0.0.0",
        "169.254.1.1",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "::",
    ],
)
async def test_local_addresses_are_never_used(address: str) -> None:
    kind = "aaaa" if ":" in address else "a"
    resolver = FakeResolver(mx={"remote.test": [(10, "mx.test")]}, **{kind: {"mx.test": [address]}})
    error = await failure(resolver)
    assert error.status == "4.4.4"
    assert await hops(resolver, local=True) == [
        ("mx.test", [str(ipaddress.ip_address(address))], 10)
    ]


async def test_local_addresses_are_dropped_from_a_mixed_answer() -> None:
    resolver = FakeResolver(
        mx={"remote.test": [(10, "mx.test")]}, a={"mx.test": ["127.0.0.1", "192.0.2.1"]}
    )
    assert await hops(resolver) == [("mx.test", ["192.0.2.1"], 10)]


async def test_smart_hosts_resolve_names_and_keep_literals() -> None:
    connector = SendConnector(
        name="Relay", smart_hosts=(SmartHost("relay.test", 587), SmartHost("127.0.0.1", 2525))
    )
    resolver = FakeResolver(a={"relay.test": ["192.0.2.3"]})
    result = await hops(resolver, connector=connector)
    assert result == [("relay.test", ["192.0.2.3"], None), ("127.0.0.1", ["127.0.0.1"], None)]
    r = router(resolver, connector=connector)
    route = r.route_for("x.test")
    assert route is not None
    assert [h.port for h in await r.resolve(route)] == [587, 2525]


async def test_address_literal_domain() -> None:
    assert await hops(FakeResolver(), "[192.0.2.8]") == [("[192.0.2.8]", ["192.0.2.8"], None)]


# -- dnspython on trio, against a stub server ---------------------------------------------


ZONE = {
    ("remote.test.", "MX"): ["10 mx1.remote.test.", "20 mx2.remote.test."],
    ("mx1.remote.test.", "A"): ["192.0.2.1"],
    ("mx1.remote.test.", "AAAA"): ["2001:db8::1"],
    ("nullmx.test.", "MX"): ["0 ."],
}
CNAMES = {"alias.test.": "remote.test."}
BROKEN = {"broken.test."}
KNOWN = {name for name, _t in ZONE} | set(CNAMES)


def answer(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    question = query.question[0]
    name, rdtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
    if name in BROKEN:
        response.set_rcode(dns.rcode.SERVFAIL)
        return response
    if name in CNAMES:
        response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", CNAMES[name]))
        name = CNAMES[name]
    records = ZONE.get((name, rdtype))
    if records:
        response.answer.append(dns.rrset.from_text(name, 60, "IN", rdtype, *records))
    elif name not in KNOWN:
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response


async def serve_dns(sock: trio.socket.SocketType) -> None:
    while True:
        data, peer = await sock.recvfrom(4096)
        await sock.sendto(answer(dns.message.from_wire(data)).to_wire(), peer)


async def test_dnspython_resolver_on_trio() -> None:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    resolver = DnsResolver(["127.0.0.1"], port=port, timeout=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_dns, sock)
        records = await resolver.mx("remote.test")
        assert sorted((r.preference, r.exchange) for r in records) == [
            (10, "mx1.remote.test"),
            (20, "mx2.remote.test"),
        ]
        assert [str(a) for a in await resolver.a("mx1.remote.test")] == ["192.0.2.1"]
        assert [str(a) for a in await resolver.aaaa("mx1.remote.test")] == ["2001:db8::1"]
        assert [r.exchange for r in await resolver.mx("nullmx.test")] == [""]
        aliased = await resolver.mx("alias.test")  # the CNAME is followed
        assert sorted(r.exchange for r in aliased) == ["mx1.remote.test", "mx2.remote.test"]
        with pytest.raises(DnsNoRecords) as no_answer:
            await resolver.mx("mx1.remote.test")
        assert not no_answer.value.nxdomain
        with pytest.raises(DnsNoRecords) as nx:
            await resolver.mx("nothing.test")
        assert nx.value.nxdomain
        with pytest.raises(DnsTemporaryError):
            await resolver.mx("broken.test")
        r = Router(StaticConnectors((INTERNET,)), resolver)
        route = r.route_for("remote.test")
        assert route is not None
        # mx2 has no address: skipped; mx1 gives its IPv4 then IPv6 address.
        [hop] = await r.resolve(route)
        assert (hop.host, [str(a) for a in hop.addresses]) == (
            "mx1.remote.test",
            ["192.0.2.1", "2001:db8::1"],
        )
        nursery.cancel_scope.cancel()
    sock.close()
