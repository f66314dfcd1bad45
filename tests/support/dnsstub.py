"""A DNS server for tests, answering from a table on 127.0.0.1 (UDP, port 0).

The real server resolves MX records with dnspython's resolver over the network; this
stub is what it talks to in tests, so routing is exercised for real without leaving
loopback. Names not in the table get NXDOMAIN; listed names without the asked type get
an empty answer (NOERROR/NODATA).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class DnsStub:
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def add(self, name: str, rdtype: str, values: Iterable[str]) -> None:
        key = (name.lower().rstrip(".") + ".", rdtype.upper())
        self.records.setdefault(key, []).extend(values)

    def __enter__(self) -> DnsStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:
                continue
            response = dns.message.make_response(query)
            response.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().lower()
            rdtype = dns.rdatatype.to_text(question.rdtype)
            values = self.records.get((name, rdtype))
            if values:
                response.answer.append(
                    dns.rrset.from_text_list(name, 60, dns.rdataclass.IN, rdtype, values)
                )
            elif not any(n == name for n, _ in self.records):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self._sock.sendto(response.to_wire(), peer)
