"""Client certificates below the HTTP layer: the identities a certificate names (SAN
e-mail address and UPN), the local CA and the certificates `mailhost cert issue-client`
makes, and the TLS context that asks for them (and refuses other CAs' at handshake)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from certs import files as certfiles
from certs.tls import CertificateError, ClientCertificates, TlsProvider, server_context
from protocols.activesync.clientcert import (
    ClientCertificateMode,
    _upn,
    certificate_identities,
    peer_certificate,
)


@pytest.fixture(scope="module")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("ca")
    crt, key = folder / "client-ca.crt", folder / "client-ca.key"
    certificate, created = certfiles.ensure_client_ca(crt, key, "mail.example.org")
    assert (
        created and certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    )
    again, created_again = certfiles.ensure_client_ca(crt, key, "mail.example.org")
    assert not created_again and again == certificate  # made once, then reused
    assert key.stat().st_mode & 0o077 == 0
    return crt, key


def test_issued_certificates_name_the_user_twice(local_ca: tuple[Path, Path]) -> None:
    issued = certfiles.issue_client_certificate(
        *local_ca, "Alice@Example.org", display_name="Alice", password="pw", days=30
    )
    assert certificate_identities(issued.certificate_pem) == ["alice@example.org"]
    loaded = x509.load_pem_x509_certificate(issued.certificate_pem)
    usage = loaded.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert issued.not_after - dt.datetime.now(dt.UTC) < dt.timedelta(days=31)
    key, certificate, extra = pkcs12.load_key_and_certificates(issued.pkcs12, b"pw")
    assert key is not None and certificate == loaded and len(extra) == 1
    der = loaded.public_bytes(serialization.Encoding.DER)
    assert certificate_identities(der) == ["alice@example.org"]


def test_identities_of_other_certificates() -> None:
    ca = trustme.CA()
    assert certificate_identities(ca.issue_cert("bob@example.org").cert_chain_pems[0].bytes()) == [
        "bob@example.org"
    ]
    assert certificate_identities(ca.issue_cert("www.example.org").cert_chain_pems[0].bytes()) == []
    assert certificate_identities(b"not a certificate") == []
    assert certificate_identities("-----BEGIN CERTIFICATE-----\nAAAA\n") == []


def test_upn_values() -> None:
    short = b"carol@example.org"
    assert _upn(b"\x0c" + bytes([len(short)]) + short) == "carol@example.org"
    long = ("x" * 200 + "@example.org").encode()
    assert _upn(b"\x0c\x81" + bytes([len(long)]) + long) == long.decode()
    for bad in (b"", b"\x0c", b"\x13\x01a", b"\x0c\x05ab", b"\x0c\x80", b"\x0c\x01\xff"):
        assert _upn(bad) is None


def test_the_certificate_in_the_scope() -> None:
    pem = "-----BEGIN CERTIFICATE-----\n..."
    assert peer_certificate({"extensions": {"tls": {"client_cert_chain": [pem]}}}) == pem
    for scope in ({}, {"extensions": {}}, {"extensions": {"tls": {"client_cert_chain": []}}}, 7):
        assert peer_certificate(scope) is None
    assert [m.value for m in ClientCertificateMode] == ["ignore", "accept", "require"]


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes | None:
    """One TLS handshake over a socket pair; the client certificate the server saw."""
    left, right = socket.socketpair()
    seen: list[bytes | None] = []
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as tls:
                seen.append(tls.getpeercert(binary_form=True))
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(right, server_hostname="localhost") as tls:
            tls.recv(2)
    finally:
        thread.join(10)
    if failures:
        raise failures[0]
    return seen[0]


def test_the_https_context_asks_for_and_verifies_client_certificates(
    local_ca: tuple[Path, Path], tmp_path: Path
) -> None:
    server_ca = trustme.CA()
    server_cert = server_ca.issue_cert("localhost")
    crt, key = tmp_path / "server.crt", tmp_path / "server.key"
    server_cert.cert_chain_pems[0].write_to_path(str(crt))
    server_cert.private_key_pem.write_to_path(str(key))
    provider = TlsProvider(crt, key, client=ClientCertificates(True, local_ca[0]))
    assert provider.mail_context().verify_mode is ssl.CERT_NONE  # mail is never asked
    https = provider.http_context()
    assert https.verify_mode is ssl.CERT_OPTIONAL

    def client(chain: tuple[Path, Path] | None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        server_ca.configure_trust(context)
        if chain is not None:
            context.load_cert_chain(*chain)
        return context

    issued = certfiles.issue_client_certificate(*local_ca, "alice@example.org", password="pw")
    mine = (tmp_path / "alice.crt", tmp_path / "alice.key")
    mine[0].write_bytes(issued.certificate_pem)
    mine[1].write_bytes(issued.key_pem)
    assert handshake(https, client(mine)) is not None
    assert handshake(https, client(None)) is None  # optional at the TLS level
    foreign = trustme.CA().issue_cert("alice@example.org")
    other = (tmp_path / "other.crt", tmp_path / "other.key")
    foreign.cert_chain_pems[0].write_to_path(str(other[0]))
    foreign.private_key_pem.write_to_path(str(other[1]))
    with pytest.raises((ssl.SSLError, OSError)):
        handshake(https, client(other))
    provider.reload(client=ClientCertificates())
    assert provider.http_context().verify_mode is ssl.CERT_NONE
    with pytest.raises(CertificateError, match="client certificate CA"):
        server_context(crt, key, client=ClientCertificates(True, tmp_path / "missing.pem"))
    with pytest.raises(CertificateError, match="no CA file"):
        server_context(crt, key, client=ClientCertificates(True, None))
