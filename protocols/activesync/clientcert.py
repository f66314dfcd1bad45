"""Client certificate authentication on the ActiveSync virtual directory, as Exchange
offers it (Set-ActiveSyncVirtualDirectory -ClientCertAuth Ignore|Accepted|Required).

The TLS layer does the cryptography: with client certificates on, the https listener
asks for one and OpenSSL verifies the chain against the configured CA during the
handshake, so a certificate from another CA never completes it. What reaches the app
is the verified leaf (`scope["extensions"]["tls"]["client_cert_chain"]`, the ASGI TLS
extension). Here it is mapped to a user: its subject alternative name carries the
user's e-mail address (rfc822Name) or UPN (the Microsoft otherName), as Exchange's
certificate mapping reads them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Protocol

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from protocols.auth import Account

# MS-WCCE / Active Directory: szOID_NT_PRINCIPAL_NAME, the UPN otherName.
UPN_OID: Final = ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
MAX_IDENTITY: Final = 320  # RFC 5321 4.5.3.1: 64 + @ + 255, with room
_UTF8_STRING: Final = 0x0C  # X.690 8.21: the UTF8String tag


class ClientCertificateMode(StrEnum):
    """Exchange's three settings."""

    IGNORE = "ignore"  # no certificate is asked for; Basic only
    ACCEPT = "accept"  # a certificate logs in; without one, Basic
    REQUIRE = "require"  # no ActiveSync without a certificate (IIS 403.7)


class CertificateAccounts(Protocol):
    """Blocking: the account a certificate identity (an address or a UPN) names."""

    def account_for_identity(self, identity: str) -> Account | None: ...


def _upn(value: bytes) -> str | None:
    """The UTF8String inside an otherName value (DER: tag, length, bytes)."""
    if len(value) < 2 or value[0] != _UTF8_STRING:
        return None
    length = value[1]
    offset = 2
    if length & 0x80:  # long form (X.690 8.1.3.5)
        count = length & 0x7F
        if count == 0 or count > 2 or len(value) < 2 + count:
            return None
        length = int.from_bytes(value[2 : 2 + count], "big")
        offset = 2 + count
    raw = value[offset : offset + length]
    if len(raw) != length:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def certificate_identities(pem: str | bytes) -> list[str]:
    """The e-mail addresses, then the UPNs, in the certificate's subject alternative
    name, lower-cased; empty for anything unreadable."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        if data.lstrip().startswith(b"-----"):
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return []
    found: list[str] = [str(v) for v in names.value.get_values_for_type(x509.RFC822Name)]
    for other in names.value.get_values_for_type(x509.OtherName):
        if other.type_id == UPN_OID:
            upn = _upn(other.value)
            if upn:
                found.append(upn)
    out: list[str] = []
    for identity in found:
        identity = identity.strip().lower()
        if "@" in identity and len(identity) <= MAX_IDENTITY and identity not in out:
            out.append(identity)
    return out


def peer_certificate(scope: dict[str, object] | object) -> str | None:
    """The client's leaf certificate (PEM) from the ASGI TLS extension, if any."""
    if not isinstance(scope, dict):
        return None
    extensions = scope.get("extensions")
    tls = extensions.get("tls") if isinstance(extensions, dict) else None
    chain = tls.get("client_cert_chain") if isinstance(tls, dict) else None
    if not chain or not isinstance(chain, list | tuple):
        return None
    leaf = chain[0]
    return leaf if isinstance(leaf, str) else None
