"""Server TLS contexts, following Mozilla's "intermediate" profile.

Python's default server context offers CBC suites for TLS 1.2; the list is set
explicitly to ECDHE with AEAD ciphers only. TLS 1.3 suites are all AEAD already.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

# Mozilla server-side TLS guidelines v5.7, "intermediate": TLS 1.2 ECDHE+AEAD suites.
INTERMEDIATE_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
# todo(mozilla intermediate): restrict groups to X25519:P-256:P-384; Python 3.11's ssl
# module has no set_groups, and set_ecdh_curve would leave a single curve.


class CertificateError(Exception):
    """A certificate or key cannot be used; the message says which file and why."""


def server_context(
    certificate: Path, private_key: Path, *, alpn: tuple[str, ...] = ()
) -> ssl.SSLContext:
    """A server context for `certificate` (PEM chain, leaf first) and its key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.options |= ssl.OP_NO_TICKET  # sessions are cheap to redo; no ticket key to rotate
    for path in (certificate, private_key):
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise CertificateError(f"{path}: {exc.strerror or exc}") from None
    try:
        ctx.load_cert_chain(str(certificate), str(private_key))
    except ssl.SSLError as exc:
        raise CertificateError(
            f"{certificate}: cannot load the certificate with its key ({exc.reason or exc})"
        ) from None
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


@dataclass(frozen=True, slots=True)
class ServerContexts:
    """One certificate, served through two contexts: plain (mail protocols) and HTTP (ALPN)."""

    mail: ssl.SSLContext
    http: ssl.SSLContext


class TlsProvider:
    """The current server contexts; `reload()` swaps them for new connections only.

    Sessions already running keep the context they started with, so a reload drops
    nothing. Safe to read from any thread.
    """

    def __init__(self, certificate: Path, private_key: Path) -> None:
        self._certificate = certificate
        self._private_key = private_key
        self._lock = threading.Lock()
        self._contexts = self._load()

    def _load(self) -> ServerContexts:
        return ServerContexts(
            mail=server_context(self._certificate, self._private_key),
            http=server_context(self._certificate, self._private_key, alpn=("h2", "http/1.1")),
        )

    def reload(self, certificate: Path | None = None, private_key: Path | None = None) -> None:
        """Load the (possibly new) files; on error the old contexts stay in use."""
        cert = certificate or self._certificate
        key = private_key or self._private_key
        contexts = ServerContexts(
            mail=server_context(cert, key),
            http=server_context(cert, key, alpn=("h2", "http/1.1")),
        )
        with self._lock:
            self._certificate, self._private_key, self._contexts = cert, key, contexts

    def mail_context(self) -> ssl.SSLContext:
        with self._lock:
            return self._contexts.mail

    def http_context(self) -> ssl.SSLContext:
        with self._lock:
            return self._contexts.http
