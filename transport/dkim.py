"""DKIM signing (RFC 6376) of mail leaving for other domains, with RSA-2048 and Ed25519
(RFC 8463) keys; dkimpy does the canonicalisation and signing.

Keys live in a folder, one sub-folder per domain, one PEM file (PKCS#8, mode 0600) per
selector: `<folder>/<domain>/<selector>.pem`. A domain with both an RSA and an Ed25519
key gets both signatures (RFC 8463 recommends dual signing while verifiers catch up).

What is signed: relaxed/relaxed canonicalisation (survives the header refolding and
whitespace changes relays make); the headers in SIGNED_HEADERS that are present, and
the ones in OVERSIGNED_HEADERS once more than present, so that nobody can add a second
From: or Subject: without breaking the signature. The queue signs at delivery time,
after every header change the server makes (the Received: line is added on receipt).
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import enum
import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dkim  # dkimpy ships no type information (mypy: ignore_missing_imports)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = [
    "OVERSIGNED_HEADERS",
    "RSA_KEY_BITS",
    "SIGNED_HEADERS",
    "DkimAlgorithm",
    "DkimError",
    "DkimKey",
    "DkimSigner",
    "GeneratedKey",
    "generate_key",
    "load_keys",
]

# RFC 8301 3.2: signers MUST use RSA keys of at least 1024 bits, SHOULD use 2048.
RSA_KEY_BITS = 2048
# A DNS TXT character-string holds at most 255 octets (RFC 1035 3.3.14).
TXT_STRING_MAX = 255
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "in-reply-to",
    "references",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "auto-submitted",
)
OVERSIGNED_HEADERS = frozenset(
    {"from", "reply-to", "subject", "date", "to", "cc", "mime-version", "content-type"}
)

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
_SELECTOR = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_EOL = re.compile(rb"\r\n|\r|\n")


class DkimError(Exception):
    """A key cannot be made, read or used; the message says which and why."""


class DkimAlgorithm(enum.StrEnum):
    RSA = "rsa"
    ED25519 = "ed25519"

    @property
    def signature_algorithm(self) -> bytes:
        return b"rsa-sha256" if self is DkimAlgorithm.RSA else b"ed25519-sha256"


def _check_domain(domain: str) -> str:
    domain = domain.strip().rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise DkimError(f"{domain!r} is not a valid domain") from None
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise DkimError(f"{domain!r} is not a valid domain")
    return domain


def _check_selector(selector: str) -> str:
    if not _SELECTOR.fullmatch(selector):
        raise DkimError(f"selector {selector!r}: use lower-case letters, digits and '-'")
    return selector


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: DkimAlgorithm
    signing_key: bytes = field(repr=False)  # the form dkimpy takes
    public_key: bytes  # the p= value (base64)

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def record_value(self) -> str:
        return f"v=DKIM1; k={self.algorithm.value}; p={self.public_key.decode('ascii')}"


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    path: Path
    key: DkimKey

    @property
    def zone_line(self) -> str:
        """The record in zone-file form, split into 255-octet strings (RFC 1035 3.3.14)."""
        value = self.key.record_value
        chunks = [value[i : i + TXT_STRING_MAX] for i in range(0, len(value), TXT_STRING_MAX)]
        quoted = " ".join(f'"{c}"' for c in chunks)
        return f"{self.key.record_name}. IN TXT {quoted}"


def _default_selector(algorithm: DkimAlgorithm, now: float) -> str:
    # Dated selectors make rotation painless: a new key never reuses a published name.
    return time.strftime("%Y%m", time.gmtime(now)) + (
        "r" if algorithm is DkimAlgorithm.RSA else "e"
    )


def _key_from_pem(domain: str, selector: str, pem: bytes) -> DkimKey:
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimError(f"{domain}/{selector}: cannot read the key ({exc})") from None
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < 1024:  # RFC 8301 3.2
            raise DkimError(f"{domain}/{selector}: RSA key shorter than 1024 bits")
        signing = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # RFC 8017 RSAPrivateKey
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        algorithm = DkimAlgorithm.RSA
    elif isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        signing = base64.b64encode(raw)
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )  # RFC 8463 4: the raw 32-byte key
        algorithm = DkimAlgorithm.ED25519
    else:
        raise DkimError(f"{domain}/{selector}: only RSA and Ed25519 keys can sign")
    return DkimKey(domain, selector, algorithm, signing, base64.b64encode(public))


def generate_key(
    domain: str,
    folder: Path,
    *,
    algorithm: DkimAlgorithm = DkimAlgorithm.RSA,
    selector: str | None = None,
    now: float | None = None,
) -> GeneratedKey:
    """Make a key for `domain` in `folder` (created 0700; the key file 0600, never
    overwritten) and return it with the TXT record to publish."""
    domain = _check_domain(domain)
    selector = _check_selector(
        selector or _default_selector(algorithm, time.time() if now is None else now)
    )
    if algorithm is DkimAlgorithm.RSA:
        private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey = rsa.generate_private_key(
            65537, RSA_KEY_BITS
        )
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    domain_folder = folder / domain
    domain_folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = domain_folder / f"{selector}.pem"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise DkimError(f"a key with selector {selector} already exists for {domain}") from None
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return GeneratedKey(path, _key_from_pem(domain, selector, pem))


def load_keys(folder: Path) -> dict[str, tuple[DkimKey, ...]]:
    """Every key under `folder`, by domain. A file that cannot be read raises DkimError
    (a signing key that silently stops working is worse than a loud start)."""
    keys: dict[str, list[DkimKey]] = {}
    if not folder.is_dir():
        return {}
    for domain_folder in sorted(folder.iterdir()):
        if not domain_folder.is_dir() or domain_folder.is_symlink():
            continue
        domain = _check_domain(domain_folder.name)
        for path in sorted(domain_folder.glob("*.pem")):
            selector = _check_selector(path.stem)
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as handle:
                pem = handle.read(64 * 1024)
            keys.setdefault(domain, []).append(_key_from_pem(domain, selector, pem))
    return {d: tuple(k) for d, k in keys.items()}


def _header_names(message: bytes) -> Counter[str]:
    names: Counter[str] = Counter()
    for line in message.split(b"\r\n"):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if colon:
            names[name.strip().decode("ascii", "replace").lower()] += 1
    return names


def _from_domain(message: bytes) -> str | None:
    header, _, _ = message.partition(b"\r\n\r\n")
    # policy.default's structured parser, not email.utils.getaddresses (item 50).
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(
        header + b"\r\n\r\n", headersonly=True
    )
    try:
        values = parsed.get_all("From") or []
        if len(values) != 1:
            return None  # RFC 5322 3.6: exactly one From:; anything else is not signed
        addresses = values[0].addresses
    except (AttributeError, ValueError, IndexError):
        return None
    if len(addresses) != 1 or not addresses[0].domain:
        return None
    return str(addresses[0].domain).lower().rstrip(".")


class DkimSigner:
    """Signs with the keys of the message's From: domain, when there are any."""

    def __init__(self, keys: dict[str, tuple[DkimKey, ...]]) -> None:
        self._keys = {d.lower(): k for d, k in keys.items()}

    @classmethod
    def from_folder(cls, folder: Path) -> DkimSigner:
        return cls(load_keys(folder))

    def domains(self) -> frozenset[str]:
        return frozenset(self._keys)

    def sign(self, message: bytes, *, domain: str | None = None) -> bytes:
        """The message with DKIM-Signature header(s) in front (and CRLF line ends), or the
        message unchanged when there is no key for its From: domain (or `domain`).

        The From: domain is what DMARC aligns with; the caller decides whether a message
        may be signed at all (only authenticated submissions and our own DSNs are).
        """
        normalised = _EOL.sub(b"\r\n", message)
        if domain is None:
            domain = _from_domain(normalised)
        if domain is None:
            return message
        keys = self._keys.get(domain.lower().rstrip("."))
        if not keys:
            return message
        present = _header_names(normalised)
        include: list[bytes] = []
        for name in SIGNED_HEADERS:
            count = present.get(name, 0)
            if count:
                extra = 1 if name in OVERSIGNED_HEADERS else 0
                include.extend([name.encode("ascii")] * (count + extra))
        signatures = b"".join(self._sign_one(normalised, key, include) for key in keys)
        return signatures + normalised

    @staticmethod
    def _sign_one(message: bytes, key: DkimKey, include: Iterable[bytes]) -> bytes:
        try:
            signature = dkim.DKIM(message, linesep=b"\r\n").sign(
                key.selector.encode("ascii"),
                key.domain.encode("ascii"),
                key.signing_key,
                signature_algorithm=key.algorithm.signature_algorithm,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=list(include),
            )
        except dkim.DKIMException as exc:
            raise DkimError(f"cannot sign for {key.domain}: {exc}") from None
        return bytes(signature)
