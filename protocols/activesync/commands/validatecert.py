"""The ValidateCert command (MS-ASCMD 2.2.1.22): is this S/MIME certificate good?

Each certificate gets a status (MS-ASCMD 2.2.3.177.18): validity period, key usage for
signing and e-mail protection, then a path to a trusted root built with
`cryptography.x509.verification` (the chain the client sends supplies intermediates).
Revocation is not fetched (the server talks to no CRL or OCSP responder): when the client
asks for it and the certificate names where revocation is published, the answer is 16,
"revocation status cannot be validated", rather than a success that was never checked.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from ..context import CommandContext, CommandReply, Handler
from ..status import ValidateCertStatus
from ..wbxml import E, Element

log = logging.getLogger("mailhost.activesync")

MAX_CERTIFICATES: Final = 16  # per list (Certificates, CertificateChain); phones send 1-3
MAX_CERTIFICATE_BYTES: Final = 16 * 1024  # DER; real S/MIME certificates are 1-3 KB
MAX_CHAIN_DEPTH: Final = 8
# Where Debian, Fedora and Alpine keep the system's CA bundle.
SYSTEM_CA_BUNDLES: Final = (
    Path("/etc/ssl/certs/ca-certificates.crt"),
    Path("/etc/pki/tls/certs/ca-bundle.crt"),
    Path("/etc/ssl/cert.pem"),
)


class TrustStore:
    """Trusted roots, loaded once on first use (from a worker thread)."""

    def __init__(self, load: Callable[[], Sequence[x509.Certificate]]) -> None:
        self._load = load
        self._roots: tuple[x509.Certificate, ...] | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, roots: Sequence[x509.Certificate]) -> TrustStore:
        return cls(lambda: tuple(roots))

    @classmethod
    def system(cls, bundles: Sequence[Path] = SYSTEM_CA_BUNDLES) -> TrustStore:
        def load() -> Sequence[x509.Certificate]:
            for path in bundles:
                if path.is_file():
                    return x509.load_pem_x509_certificates(path.read_bytes())
            try:
                import certifi  # type: ignore[import-not-found]  # optional
            except ImportError:
                log.warning("ValidateCert: no CA bundle found; every certificate is untrusted")
                return ()
            return x509.load_pem_x509_certificates(Path(certifi.where()).read_bytes())

        return cls(load)

    def roots(self) -> tuple[x509.Certificate, ...]:
        with self._lock:
            if self._roots is None:
                self._roots = tuple(self._load())
            return self._roots


class ValidateCertError(ValueError):
    """The request is not a ValidateCert request (global status 2)."""


@dataclass(frozen=True, slots=True)
class ValidateCertRequest:
    certificates: tuple[bytes | None, ...]  # DER; None where the base64 was unreadable
    chain: tuple[bytes, ...]
    check_crl: bool


def parse_validate_cert(document: Element | None) -> ValidateCertRequest:
    if document is None or document.qname != "ValidateCert:ValidateCert":
        raise ValidateCertError("not a ValidateCert document")
    certificates = document.findall("Certificates/Certificate")
    chain = document.findall("CertificateChain/Certificate")
    if not certificates or len(certificates) > MAX_CERTIFICATES or len(chain) > MAX_CERTIFICATES:
        raise ValidateCertError("want 1 to 16 certificates")
    intermediates = tuple(der for der in (_der(c) for c in chain) if der is not None)
    return ValidateCertRequest(
        certificates=tuple(_der(c) for c in certificates),
        chain=intermediates,
        check_crl=(document.text_of("CheckCrl") or "0").strip() == "1",
    )


def _der(element: Element) -> bytes | None:
    """MS-ASCMD 2.2.3.19.1: the certificate as base64 text (some clients send opaque DER)."""
    value = element.value
    if isinstance(value, bytes) and value[:1] == b"\x30":
        der: bytes | None = value
    else:
        try:
            der = base64.b64decode("".join(element.text.split()), validate=True)
        except (binascii.Error, ValueError):
            der = None
    if der is not None and (not der or len(der) > MAX_CERTIFICATE_BYTES):
        der = None
    return der


def validate_certificate(
    der: bytes | None,
    chain: Sequence[bytes],
    roots: Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    check_crl: bool,
) -> ValidateCertStatus:
    """The status of one certificate (CPU work: run it in a worker thread)."""
    if der is None:
        return ValidateCertStatus.INFORMATION_INCORRECT
    try:
        leaf = x509.load_der_x509_certificate(der)
        intermediates = [x509.load_der_x509_certificate(c) for c in chain]
    except ValueError:
        return ValidateCertStatus.INFORMATION_INCORRECT
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        return ValidateCertStatus.EXPIRED
    for certificate in intermediates:
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            return ValidateCertStatus.CHAIN_TIME_INVALID
    usage = _usage_status(leaf)
    if usage is not None:
        return usage
    if not roots:
        return ValidateCertStatus.UNTRUSTED_SOURCE
    verifier = (
        PolicyBuilder()
        .store(Store(list(roots)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        # The leaf's extensions are checked above for S/MIME use (the Web PKI defaults
        # want a TLS client certificate); CAs keep the Web PKI rules.
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError:
        return _why_untrusted(leaf, intermediates, roots)
    if check_crl and _publishes_revocation(leaf):
        # todo(ms-ascmd 2.2.3.20): fetch CRLs / ask OCSP responders.
        return ValidateCertStatus.REVOCATION_UNKNOWN
    return ValidateCertStatus.SUCCESS


def _usage_status(leaf: x509.Certificate) -> ValidateCertStatus | None:
    try:
        key_usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        pass
    else:
        if not (key_usage.digital_signature or key_usage.content_commitment):
            return ValidateCertStatus.NOT_VALID_FOR_SIGNING
    try:
        extended = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(
        extended
    ):
        return ValidateCertStatus.USED_INCORRECTLY
    return None


def _why_untrusted(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[x509.Certificate],
) -> ValidateCertStatus:
    """Tell a forged signature (3) and a broken chain (5) from an unknown root (4)."""
    issuers = [c for c in (*intermediates, *roots) if c.subject == leaf.issuer]
    if issuers and not any(_issued_by(leaf, issuer) for issuer in issuers):
        return ValidateCertStatus.SIGNATURE_NOT_VALIDATED
    if intermediates and not any(_issued_by(leaf, c) for c in intermediates):
        return ValidateCertStatus.CHAIN_NOT_CORRECT
    return ValidateCertStatus.UNTRUSTED_SOURCE


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _publishes_revocation(certificate: x509.Certificate) -> bool:
    for extension_type in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
        try:
            certificate.extensions.get_extension_for_class(extension_type)
        except x509.ExtensionNotFound:
            continue
        return True
    return False


def validate_cert_handler(
    trust: TrustStore, *, clock: Callable[[], dt.datetime] | None = None
) -> Handler:
    def current_time() -> dt.datetime:
        return clock() if clock is not None else dt.datetime.now(dt.UTC)

    async def handle_validate_cert(ctx: CommandContext) -> CommandReply:
        try:
            request = parse_validate_cert(ctx.document)
        except ValidateCertError:
            return CommandReply.wbxml(
                E(
                    "ValidateCert:ValidateCert",
                    E("ValidateCert:Status", ValidateCertStatus.PROTOCOL_ERROR),
                )
            )
        now = current_time()

        def check_all() -> list[ValidateCertStatus]:
            roots = trust.roots()
            return [
                validate_certificate(
                    der, request.chain, roots, now=now, check_crl=request.check_crl
                )
                for der in request.certificates
            ]

        statuses = await trio.to_thread.run_sync(check_all)
        log.info(
            "eas validatecert: user=%s statuses=%s",
            ctx.account.address,
            ",".join(str(int(s)) for s in statuses),
        )
        # MS-ASCMD 6.49 (ValidateCertResponse.xsd): Status, then a Certificate per request.
        return CommandReply.wbxml(
            E(
                "ValidateCert:ValidateCert",
                E("ValidateCert:Status", ValidateCertStatus.SUCCESS),
                (E("ValidateCert:Certificate", E("ValidateCert:Status", s)) for s in statuses),
            )
        )

    return handle_validate_cert
