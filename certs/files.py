"""Certificates on disk: the self-signed one made at install, and an operator's import."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.tls import CertificateError

# Mozilla: server certificates valid at most 366 days; we issue 365.
SELF_SIGNED_DAYS = 365
RSA_BITS = 2048  # Mozilla intermediate: RSA 2048 (broadest client support, as Exchange)
EXPIRY_WARNING = dt.timedelta(days=30)
# What a server or client certificate (not a CA) may be used for (RFC 5280 4.2.1.3).
END_ENTITY_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_encipherment=True,
    content_commitment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    fingerprint_sha256: str
    self_signed: bool
    chain_length: int


def names_for(hostname: str, domains: Sequence[str]) -> list[str]:
    """Subject alternative names as Exchange sets them at install: the host name, then
    mail.<domain> and autodiscover.<domain> for each accepted domain."""
    names = [hostname.lower()]
    for domain in domains:
        for name in (f"mail.{domain}", f"autodiscover.{domain}"):
            if name.lower() not in names:
                names.append(name.lower())
    return names


def generate_self_signed(
    certificate: Path, private_key: Path, names: Sequence[str], *, now: dt.datetime | None = None
) -> CertificateInfo:
    """Write a new RSA-2048 self-signed certificate for `names` (the first is the CN)."""
    now = now or dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(END_ENTITY_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_pair(certificate, cert.public_bytes(serialization.Encoding.PEM), private_key, key_pem)
    return describe([cert])


def write_pair(certificate: Path, cert_pem: bytes, private_key: Path, key_pem: bytes) -> None:
    """Write both files durably; the key is created mode 0600."""
    certificate.parent.mkdir(parents=True, exist_ok=True)
    private_key.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(private_key, key_pem, 0o600)
    _write_atomic(certificate, cert_pem, 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_chain(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{path}: {exc.strerror or exc}") from None
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(f"{path}: no PEM certificate in the file") from None
    return chain


def read_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"{path}: {exc.strerror or exc}") from None
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise CertificateError(f"{path}: not an unencrypted PEM private key") from None
    return data


def describe(chain: Sequence[x509.Certificate]) -> CertificateInfo:
    leaf = chain[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n) for n in san.get_values_for_type(x509.DNSName)) + tuple(
            str(n) for n in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        names = ()
    return CertificateInfo(
        subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(),
        names=names,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(":"),
        self_signed=leaf.issuer == leaf.subject,
        chain_length=len(chain),
    )


def check_import(
    chain_path: Path, key_path: Path, *, now: dt.datetime | None = None
) -> tuple[CertificateInfo, list[str], bytes, bytes]:
    """Validate an operator's chain and key before they replace ours.

    Refuses a key that does not match the leaf, a chain out of order (each certificate
    must be issued by the next), and an expired or not-yet-valid certificate. Returns the
    description, warnings (expiry within 30 days), and the PEM bytes to install.
    """
    now = now or dt.datetime.now(dt.UTC)
    chain = read_chain(chain_path)
    key_pem = read_key(key_path)
    key = serialization.load_pem_private_key(key_pem, password=None)
    leaf_public = (
        chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    key_public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if leaf_public != key_public:
        raise CertificateError(f"{key_path}: the key does not match the certificate")
    for i, (cert, issuer) in enumerate(itertools.pairwise(chain)):
        if cert.issuer != issuer.subject or not _signed_by(cert, issuer):
            raise CertificateError(
                f"{chain_path}: certificate {i + 1} is not issued by certificate {i + 2}: "
                "the chain must run from the server certificate up to the root"
            )
    for i, cert in enumerate(chain):
        if cert.not_valid_after_utc <= now:
            raise CertificateError(
                f"{chain_path}: certificate {i + 1} expired on {cert.not_valid_after_utc:%Y-%m-%d}"
            )
        if cert.not_valid_before_utc > now:
            raise CertificateError(
                f"{chain_path}: certificate {i + 1} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d}"
            )
    warnings = []
    soonest = min(c.not_valid_after_utc for c in chain)
    if soonest - now < EXPIRY_WARNING:
        warnings.append(f"the chain expires on {soonest:%Y-%m-%d}, within 30 days")
    cert_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    return describe(chain), warnings, cert_pem, key_pem


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --- a local CA for client certificates ------------------------------------------------------

CLIENT_CA_DAYS = 3650  # the local CA lives as long as a small site's server does
CLIENT_CERT_DAYS = 730  # a phone's certificate: two years, then issue another
UPN_OID = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")  # MS-WCCE: the UPN otherName


@dataclass(frozen=True, slots=True)
class IssuedClientCertificate:
    certificate_pem: bytes
    key_pem: bytes
    pkcs12: bytes  # certificate, key and CA for a phone's import, protected by `password`
    password: str
    subject: str
    not_after: dt.datetime
    fingerprint_sha256: str


def ensure_client_ca(
    certificate: Path, private_key: Path, name: str, *, now: dt.datetime | None = None
) -> tuple[x509.Certificate, bool]:
    """The local client-certificate CA at these paths, created if missing. Returns the
    CA certificate and whether it was just made."""
    if certificate.exists() and private_key.exists():
        chain = read_chain(certificate)
        return chain[0], False
    now = now or dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"{name} client certificate CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, name),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CLIENT_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_pair(certificate, cert.public_bytes(serialization.Encoding.PEM), private_key, key_pem)
    return cert, True


def issue_client_certificate(
    ca_certificate: Path,
    ca_key: Path,
    address: str,
    *,
    display_name: str = "",
    password: str,
    days: int = CLIENT_CERT_DAYS,
    now: dt.datetime | None = None,
) -> IssuedClientCertificate:
    """A client certificate for `address`, signed by the CA: the address as rfc822Name
    and as UPN in the subject alternative name (what ActiveSync's certificate mapping
    reads), extended key usage clientAuth."""
    now = now or dt.datetime.now(dt.UTC)
    ca = read_chain(ca_certificate)[0]
    loaded = serialization.load_pem_private_key(read_key(ca_key), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise CertificateError(f"{ca_key}: the CA key is not an RSA key")
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, display_name or address)]
    attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, address))
    upn = b"\x0c" + _der_length(len(address.encode("utf-8"))) + address.encode("utf-8")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(address), x509.OtherName(UPN_OID, upn)]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(END_ENTITY_KEY_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(loaded.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(loaded, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # PBES2/AES (cryptography's "best available") is what current phones import.
    bundle = pkcs12.serialize_key_and_certificates(
        address.encode("utf-8"),
        key,
        cert,
        [ca],
        serialization.BestAvailableEncryption(password.encode("utf-8")),
    )
    return IssuedClientCertificate(
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key_pem,
        pkcs12=bundle,
        password=password,
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(":"),
    )


def _der_length(length: int) -> bytes:
    """X.690 8.1.3 definite length."""
    if length < 0x80:
        return bytes([length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner may read (a key or a PKCS#12 bundle), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, data, 0o600)
