"""Send connectors and the choice of next hop (Exchange's send connectors, RFC 5321 5.1).

Address-space syntax (one connector has one or more; most specific match wins):

    *                 every domain (the least specific match)
    example.com       exactly example.com
    *.example.com     example.com and every domain below it (Exchange's "include subdomains")

Specificity: an exact domain beats a wildcard; between wildcards the longer suffix wins;
`*` loses to everything. Two enabled connectors with the same best match are ordered by
name, so the choice never depends on the order the directory returns them in. Disabled
connectors are ignored. No match means no route: the hub refuses the recipient at RCPT
time rather than queueing mail it can never send.

A connector routes either by DNS MX (no smart hosts) or through its smart hosts, tried in
the order given. MX routing never connects to loopback, unspecified, link-local or
multicast addresses unless `allow_local_addresses` is set (tests): a hostile DNS answer
must not make us deliver to ourselves or to a service on the local machine.
"""

from __future__ import annotations

import enum
import ipaddress
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .dns import DnsNoRecords, DnsTemporaryError, IPAddress, MxRecord, Resolver

__all__ = [
    "MAX_MX_ADDRESSES",
    "AddressSpace",
    "ConnectorError",
    "ConnectorSource",
    "Hop",
    "Route",
    "Router",
    "RoutingError",
    "SendConnector",
    "SmartHost",
    "SmartHostAuth",
    "StaticConnectors",
    "TlsMode",
    "parse_address_space",
    "parse_smart_host",
]

# Postfix smtp_mx_address_limit = 5: how many addresses one delivery attempt may try.
MAX_MX_ADDRESSES = 5
# RFC 1035 2.3.4: a domain name is at most 255 octets (253 characters in text).
MAX_DOMAIN = 253
# Connector names: a short identifier the CLI and the logs show.
MAX_CONNECTOR_NAME = 64

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]*")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class ConnectorError(ValueError):
    """A connector setting that cannot be used; the message says which and why."""


class TlsMode(enum.StrEnum):
    """STARTTLS policy of a connector (RFC 3207; RFC 7435 opportunistic security)."""

    OPPORTUNISTIC = "opportunistic"  # use it when offered; fall back to plaintext
    REQUIRED = "required"  # no delivery without TLS (defer instead)
    DISABLED = "disabled"  # never STARTTLS (for peers with broken TLS)


def _normalise_domain(text: str) -> str:
    domain = text.strip().rstrip(".").lower()
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        raise ConnectorError(f"{text!r} is not a valid domain") from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > MAX_DOMAIN or not all(_LABEL.fullmatch(x) for x in labels):
        raise ConnectorError(f"{text!r} is not a valid domain")
    return ascii_domain


@dataclass(frozen=True, slots=True)
class AddressSpace:
    """One parsed address space; `suffix` is "" for `*`."""

    suffix: str
    subdomains: bool

    def __str__(self) -> str:
        if not self.suffix:
            return "*"
        return f"*.{self.suffix}" if self.subdomains else self.suffix

    def match(self, domain: str) -> tuple[int, int] | None:
        """A sort key (higher is more specific) when `domain` is in this space, else None."""
        if not self.suffix:
            return (0, 0)
        depth = self.suffix.count(".") + 1
        if domain == self.suffix:
            return (2 if not self.subdomains else 1, depth)
        if self.subdomains and domain.endswith("." + self.suffix):
            return (1, depth)
        return None


def parse_address_space(text: str) -> AddressSpace:
    text = text.strip()
    if text == "*":
        return AddressSpace("", True)
    if text.startswith("*."):
        return AddressSpace(_normalise_domain(text[2:]), True)
    if "*" in text:
        raise ConnectorError(f"address space {text!r}: '*' only as '*' or '*.domain'")
    return AddressSpace(_normalise_domain(text), False)


@dataclass(frozen=True, slots=True)
class SmartHost:
    host: str  # a name or an IP address
    port: int = 25

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConnectorError(f"smart host port {self.port} out of range")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            object.__setattr__(self, "host", _normalise_domain(self.host))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_smart_host(text: str) -> SmartHost:
    """`host`, `host:port`, `1.2.3.4:587`, `[2001:db8::1]:587` or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ConnectorError(f"smart host {text!r}: expected [address]:port")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    try:
        port = int(port_text) if port_text else 25
    except ValueError:
        raise ConnectorError(f"smart host {text!r}: bad port") from None
    return SmartHost(host, port)


@dataclass(frozen=True, slots=True)
class SmartHostAuth:
    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        for value in (self.username, self.password):
            if any(c in value for c in "\r\n\x00"):
                raise ConnectorError("smart host credentials contain control characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class SendConnector:
    """One send connector as the directory stores it."""

    name: str
    address_spaces: tuple[str, ...] = ("*",)
    smart_hosts: tuple[SmartHost, ...] = ()  # empty: route by DNS MX
    auth: SmartHostAuth | None = None
    tls: TlsMode = TlsMode.OPPORTUNISTIC
    verify_certificate: bool = False
    allow_plaintext_auth: bool = False  # AUTH without TLS (RFC 4954 14 warns against it)
    fqdn: str | None = None  # HELO/EHLO name; None: the server's host name
    max_message_size: int | None = None
    source_server: str = ""  # informational, as Exchange shows it
    enabled: bool = True
    spaces: tuple[AddressSpace, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or len(self.name) > MAX_CONNECTOR_NAME:
            raise ConnectorError(f"connector name {self.name!r} is not usable")
        if not self.address_spaces:
            raise ConnectorError(f"connector {self.name}: needs at least one address space")
        object.__setattr__(
            self, "spaces", tuple(parse_address_space(s) for s in self.address_spaces)
        )
        object.__setattr__(self, "address_spaces", tuple(str(s) for s in self.spaces))
        if self.fqdn is not None:
            object.__setattr__(self, "fqdn", _normalise_domain(self.fqdn))
        if self.max_message_size is not None and self.max_message_size <= 0:
            raise ConnectorError(f"connector {self.name}: max message size must be positive")
        if self.auth is not None and not self.smart_hosts:
            raise ConnectorError(f"connector {self.name}: AUTH credentials need smart hosts")

    @property
    def uses_mx(self) -> bool:
        return not self.smart_hosts

    def match(self, domain: str) -> tuple[int, int] | None:
        keys = [k for k in (s.match(domain) for s in self.spaces) if k is not None]
        return max(keys, default=None)


class ConnectorSource(Protocol):
    """Where the current send connectors come from (the directory, read on each call)."""

    def send_connectors(self) -> Sequence[SendConnector]: ...


@dataclass(frozen=True, slots=True)
class StaticConnectors:
    """A fixed list (tests, and a service without a directory)."""

    connectors: tuple[SendConnector, ...]

    def send_connectors(self) -> Sequence[SendConnector]:
        return self.connectors


@dataclass(frozen=True, slots=True)
class Route:
    """The connector chosen for a recipient domain."""

    connector: SendConnector
    domain: str  # lower-case, A-labels, or an address literal "[1.2.3.4]"

    @property
    def destination(self) -> str:
        """Deliveries with the same destination may share connections (Postfix nexthop)."""
        if self.connector.uses_mx:
            return f"{self.connector.name}:{self.domain}"
        return f"{self.connector.name}:[smarthost]"


@dataclass(frozen=True, slots=True)
class Hop:
    """One server to try, with its addresses in the order to try them."""

    host: str
    addresses: tuple[IPAddress, ...]
    port: int
    preference: int | None = None  # the MX preference; None for smart hosts and A fallback


class RoutingError(Exception):
    """No hop can be tried now; `status` (RFC 3463) says whether it is worth retrying."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")


def _forbidden_address(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_unspecified
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
    )


def _address_literal(domain: str) -> IPAddress | None:
    """RFC 5321 4.1.3: `[192.0.2.1]` or `[IPv6:2001:db8::1]`."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner.lower().startswith("ipv6:"):
        inner = inner[5:]
    try:
        return ipaddress.ip_address(inner)
    except ValueError:
        return None


class Router:
    """Chooses connectors (`route_for`, synchronous, for RCPT time) and resolves them to
    hops (`resolve`, DNS). `mx_port` is where MX hosts are contacted (25; tests move it)."""

    def __init__(
        self,
        connectors: ConnectorSource,
        resolver: Resolver,
        *,
        rng: random.Random | None = None,
        mx_port: int = 25,
        allow_local_addresses: bool = False,
        prefer_ipv6: bool = False,
    ) -> None:
        self._connectors = connectors
        self._resolver = resolver
        self._rng = rng or random.Random()  # noqa: S311 - shuffling MX order, not secrets
        self.mx_port = mx_port
        self.allow_local_addresses = allow_local_addresses
        self.prefer_ipv6 = prefer_ipv6

    def route_for(self, domain: str) -> Route | None:
        """The most specific enabled connector for `domain`, or None (refuse at RCPT)."""
        literal = _address_literal(domain)
        if literal is not None:
            key = f"[{literal}]"
        else:
            try:
                key = _normalise_domain(domain)
            except ConnectorError:
                return None
        best: tuple[tuple[int, int], str, SendConnector] | None = None
        for connector in self._connectors.send_connectors():
            if not connector.enabled:
                continue
            rank = (0, 0) if literal is not None else connector.match(key)
            if literal is not None and not any(not s.suffix for s in connector.spaces):
                continue  # an address literal only matches `*`
            if rank is None:
                continue
            # Higher rank wins; on equal rank the smaller name wins.
            if best is None or rank > best[0] or (rank == best[0] and connector.name < best[1]):
                best = (rank, connector.name, connector)
        return None if best is None else Route(best[2], key)

    async def resolve(self, route: Route) -> list[Hop]:
        """The hops to try in order. Raises RoutingError (temporary or permanent)."""
        connector = route.connector
        if connector.smart_hosts:
            return await self._smart_hosts(connector)
        literal = _address_literal(route.domain)
        if literal is not None:
            return self._checked([Hop(route.domain, (literal,), self.mx_port)], route.domain)
        return await self._mx(route.domain)

    async def _smart_hosts(self, connector: SendConnector) -> list[Hop]:
        hops = []
        errors = []
        for smart in connector.smart_hosts:
            try:
                address = ipaddress.ip_address(smart.host)
            except ValueError:
                pass
            else:
                hops.append(Hop(smart.host, (address,), smart.port))
                continue
            try:
                addresses = await self._addresses(smart.host)
            except RoutingError as exc:
                errors.append(exc)
                continue
            hops.append(Hop(smart.host, tuple(addresses), smart.port))
        if not hops:
            raise errors[0] if errors else RoutingError("4.4.3", "no smart host")
        return hops

    async def _mx(self, domain: str) -> list[Hop]:
        try:
            records = await self._resolver.mx(domain)
        except DnsTemporaryError as exc:
            # SERVFAIL or timeout is not "no MX": never fall back to A on it.
            raise RoutingError("4.4.3", f"DNS lookup of MX for {domain} failed: {exc}") from None
        except DnsNoRecords:
            # RFC 5321 5.1: no MX records, the domain itself is the implicit MX.
            records = []
        if records and all(r.exchange == "" for r in records):
            # RFC 7505 3: a null MX says the domain accepts no mail.
            raise RoutingError("5.1.10", f"{domain} does not accept mail (null MX)")
        if not records:
            try:
                addresses = await self._addresses(domain)
            except RoutingError as exc:
                if exc.permanent:
                    raise RoutingError("5.1.2", f"{domain}: no MX and no address") from None
                raise
            return self._checked([Hop(domain, tuple(addresses), self.mx_port)], domain)
        hops = []
        last_error: RoutingError | None = None
        for record in self._ordered(records):
            try:
                addresses = await self._addresses(record.exchange)
            except RoutingError as exc:
                last_error = exc
                continue
            hops.append(Hop(record.exchange, tuple(addresses), self.mx_port, record.preference))
        if not hops:
            assert last_error is not None
            # The MX hosts exist in DNS but have no usable address: a DNS problem that
            # may be fixed, so deferred (Postfix does the same).
            raise RoutingError("4.4.3", f"MX hosts of {domain}: {last_error.text}")
        return self._checked(hops, domain)

    def _ordered(self, records: list[MxRecord]) -> list[MxRecord]:
        """By preference, equal preferences in random order (RFC 5321 5.1)."""
        usable = [r for r in records if r.exchange != ""]  # RFC 7505 3: ignore a stray "."
        self._rng.shuffle(usable)
        return sorted(usable, key=lambda r: r.preference)  # sorted() is stable

    async def _addresses(self, host: str) -> list[IPAddress]:
        found: list[IPAddress] = []
        temporary: str | None = None
        lookups: list[Callable[[str], Awaitable[Sequence[IPAddress]]]] = [
            self._resolver.a,
            self._resolver.aaaa,
        ]
        if self.prefer_ipv6:
            lookups.reverse()
        for lookup in lookups:
            try:
                found.extend(await lookup(host))
            except DnsTemporaryError as exc:
                temporary = str(exc)
            except DnsNoRecords:
                pass
        if found:
            return found
        if temporary is not None:
            raise RoutingError("4.4.3", f"address lookup for {host} failed: {temporary}")
        raise RoutingError("5.1.2", f"{host} has no address")

    def _checked(self, hops: list[Hop], domain: str) -> list[Hop]:
        """Drop forbidden addresses and cap the number of addresses to try."""
        result = []
        budget = MAX_MX_ADDRESSES
        for hop in hops:
            addresses = tuple(
                a for a in hop.addresses if self.allow_local_addresses or not _forbidden_address(a)
            )[:budget]
            if addresses:
                result.append(Hop(hop.host, addresses, hop.port, hop.preference))
                budget -= len(addresses)
            if budget <= 0:
                break
        if not result:
            raise RoutingError(
                "4.4.4", f"every address of {domain}'s mail servers is local or reserved"
            )
        return result
