"""DNS for MX routing: a small `Resolver` protocol, dnspython's async resolver behind it,
and `FakeResolver`, built from tables (mox's dns/mock.go), for tests.

The three outcomes a router must tell apart (RFC 5321 5.1): records; "no such records"
(NoAnswer, or NXDOMAIN for the name) which is a definite answer; and a failure to get an
answer (SERVFAIL, timeout, refused) which is temporary and must never be read as "none".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

__all__ = [
    "DnsError",
    "DnsNoRecords",
    "DnsResolver",
    "DnsTemporaryError",
    "FakeResolver",
    "IPAddress",
    "MxRecord",
    "Resolver",
    "dns_name_ok",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# How many CNAMEs the fake follows before calling it a loop (dnspython has its own limit).
MAX_CNAME_CHAIN = 8


class DnsError(Exception):
    """Base of the resolver's errors."""


class DnsNoRecords(DnsError):
    """A definite answer: the name has no records of that type (`nxdomain`: no such name)."""

    def __init__(self, message: str, *, nxdomain: bool) -> None:
        super().__init__(message)
        self.nxdomain = nxdomain


class DnsTemporaryError(DnsError):
    """No answer could be had (SERVFAIL, timeout, network): try again later."""


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    exchange: str  # without the trailing dot; "" (written ".") is the RFC 7505 null MX


class Resolver(Protocol):
    async def mx(self, name: str) -> list[MxRecord]: ...

    async def a(self, name: str) -> list[ipaddress.IPv4Address]: ...

    async def aaaa(self, name: str) -> list[ipaddress.IPv6Address]: ...


class DnsResolver:
    """dnspython's async resolver (it runs on trio through its sniffio-selected backend).

    `nameservers` overrides /etc/resolv.conf (config, tests with a stub server).
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        port: int = 53,
        timeout: float = 10.0,
    ) -> None:
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.port = port
        self._resolver.lifetime = timeout

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer:
        try:
            # CNAMEs are followed by the resolver; the answer is for the final name.
            return await self._resolver.resolve(name, rdtype, search=False)
        except dns.resolver.NXDOMAIN:
            raise DnsNoRecords(f"{name}: no such domain", nxdomain=True) from None
        except dns.resolver.NoAnswer:
            raise DnsNoRecords(f"{name}: no {rdtype} records", nxdomain=False) from None
        except dns.resolver.YXDOMAIN:
            raise DnsNoRecords(f"{name}: name too long", nxdomain=True) from None
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsTemporaryError(f"{name} {rdtype}: {exc}") from None

    async def mx(self, name: str) -> list[MxRecord]:
        answer = await self._query(name, "MX")
        records = []
        for rdata in answer:
            # RFC 7505: the null MX's exchange is the root name ".".
            root = rdata.exchange == dns.name.root
            exchange = "" if root else rdata.exchange.to_text(omit_final_dot=True)
            records.append(MxRecord(int(rdata.preference), exchange))
        return records

    async def a(self, name: str) -> list[ipaddress.IPv4Address]:
        answer = await self._query(name, "A")
        return [ipaddress.IPv4Address(r.address) for r in answer]

    async def aaaa(self, name: str) -> list[ipaddress.IPv6Address]:
        answer = await self._query(name, "AAAA")
        return [ipaddress.IPv6Address(r.address) for r in answer]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


class FakeResolver:
    """Answers from tables: `mx={"example.com": [(10, "mx1.example.com")]}`,
    `a={"mx1.example.com": ["127.0.0.1"]}`, `aaaa={...}`, `cname={"alias": "target"}`,
    `fail={"example.com": "MX"}` (that query, or "*" for any, fails temporarily).

    A name that appears in no table is NXDOMAIN; a known name without records of the
    asked type is NoAnswer. `queries` records what was asked, in order.
    """

    def __init__(
        self,
        *,
        mx: Mapping[str, Iterable[tuple[int, str]]] | None = None,
        a: Mapping[str, Iterable[str]] | None = None,
        aaaa: Mapping[str, Iterable[str]] | None = None,
        cname: Mapping[str, str] | None = None,
        fail: Mapping[str, str] | None = None,
    ) -> None:
        self.mx_table = {_key(k): [(p, _key(h)) for p, h in v] for k, v in (mx or {}).items()}
        self.a_table = {_key(k): list(v) for k, v in (a or {}).items()}
        self.aaaa_table = {_key(k): list(v) for k, v in (aaaa or {}).items()}
        self.cname_table = {_key(k): _key(v) for k, v in (cname or {}).items()}
        self.fail = {_key(k): v.upper() for k, v in (fail or {}).items()}
        self.queries: list[tuple[str, str]] = []

    def _known(self, name: str) -> bool:
        return any(
            name in t for t in (self.mx_table, self.a_table, self.aaaa_table, self.cname_table)
        )

    def _resolve(self, name: str, rdtype: str) -> str:
        name = _key(name)
        self.queries.append((name, rdtype))
        for _ in range(MAX_CNAME_CHAIN):
            if self.fail.get(name) in (rdtype, "*"):
                raise DnsTemporaryError(f"{name} {rdtype}: SERVFAIL")
            target = self.cname_table.get(name)
            if target is None:
                break
            name = target
        else:
            raise DnsTemporaryError(f"{name}: CNAME chain too long")
        if not self._known(name):
            raise DnsNoRecords(f"{name}: no such domain", nxdomain=True)
        return name

    async def mx(self, name: str) -> list[MxRecord]:
        final = self._resolve(name, "MX")
        records = self.mx_table.get(final)
        if not records:
            raise DnsNoRecords(f"{final}: no MX records", nxdomain=False)
        return [MxRecord(p, h) for p, h in records]

    async def a(self, name: str) -> list[ipaddress.IPv4Address]:
        final = self._resolve(name, "A")
        records = self.a_table.get(final)
        if not records:
            raise DnsNoRecords(f"{final}: no A records", nxdomain=False)
        return [ipaddress.IPv4Address(r) for r in records]

    async def aaaa(self, name: str) -> list[ipaddress.IPv6Address]:
        final = self._resolve(name, "AAAA")
        records = self.aaaa_table.get(final)
        if not records:
            raise DnsNoRecords(f"{final}: no AAAA records", nxdomain=False)
        return [ipaddress.IPv6Address(r) for r in records]


def dns_name_ok(name: str) -> bool:
    """Whether `name` is usable as a DNS query name (length and label rules)."""
    try:
        dns.name.from_text(name)
    except dns.exception.DNSException:
        return False
    return True
