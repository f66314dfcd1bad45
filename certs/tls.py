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


@dataclass(frozen=True, slots=True)
class ClientCertificates:
    """Whether the HTTPS listener asks clients for a certificate, and which CA issues
    the ones it accepts. `request` False: none is asked for (Exchange's Ignore)."""

    request: bool = False
    ca_file: Path | None = None


NO_CLIENT_CERTIFICATES = ClientCertificates()


def server_context(
    certificate: Path,
    private_key: Path,
    *,
    alpn: tuple[str, ...] = (),
    client: ClientCertificates = NO_CLIENT_CERTIFICATES,
) -> ssl.SSLContext:
    """A server context for `certificate` (PEM chain, leaf first) and its key. With
    `client.request`, clients are asked for a certificate, which is optional at the TLS
    level (the application decides whether one is required, per URL); one that is sent
    must chain to `client.ca_file` (and only to it: no system roots), or the handshake
    fails, so the application only ever sees verified certificates."""
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
    if client.request:
        if client.ca_file is None:
            raise CertificateError("client certificates: no CA file configured")
        try:
            ctx.load_verify_locations(cafile=str(client.ca_file))
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
            raise CertificateError(
                f"{client.ca_file}: cannot load the client certificate CA ({reason})"
            ) from None
        # The CA's name goes out in the CertificateRequest, so a phone offers the right
        # certificate; OPTIONAL still fails the handshake for one that does not verify.
        ctx.verify_mode = ssl.CERT_OPTIONAL
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

    def __init__(
        self,
        certificate: Path,
        private_key: Path,
        *,
        client: ClientCertificates = NO_CLIENT_CERTIFICATES,
    ) -> None:
        self._certificate = certificate
        self._private_key = private_key
        self._client = client
        self._lock = threading.Lock()
        self._contexts = self._load()

    def _load(self) -> ServerContexts:
        return _contexts(self._certificate, self._private_key, self._client)

    def reload(
        self,
        certificate: Path | None = None,
        private_key: Path | None = None,
        *,
        client: ClientCertificates | None = None,
    ) -> None:
        """Load the (possibly new) files; on error the old contexts stay in use."""
        cert = certificate or self._certificate
        key = private_key or self._private_key
        clients = client or self._client
        contexts = _contexts(cert, key, clients)
        with self._lock:
            self._certificate, self._private_key, self._contexts = cert, key, contexts
            self._client = clients

    def mail_context(self) -> ssl.SSLContext:
        with self._lock:
            return self._contexts.mail

    def http_context(self) -> ssl.SSLContext:
        with self._lock:
            return self._contexts.http


def _contexts(certificate: Path, private_key: Path, client: ClientCertificates) -> ServerContexts:
    # Only HTTPS asks for client certificates: mail clients are never asked.
    return ServerContexts(
        mail=server_context(certificate, private_key),
        http=server_context(certificate, private_key, alpn=("h2", "http/1.1"), client=client),
    )
