"""Password hashing (Argon2id) and the verified-credentials cache.

Hashes are PHC strings (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) so the cost can
be raised later without breaking stored hashes. ActiveSync sends Basic credentials on
every request; the cache lets a repeated, already verified password skip the hash
(ARCHITECTURE.md, Passwords).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from mailhost import affinity

# OWASP Password Storage Cheat Sheet (2023): Argon2id, m=19 MiB, t=2, p=1.
ARGON2_MEMORY_KIB = 19 * 1024
ARGON2_ITERATIONS = 2
ARGON2_LANES = 1
ARGON2_SALT_BYTES = 16
ARGON2_HASH_BYTES = 32
MAX_PASSWORD_BYTES = 1024  # longer input is refused before hashing (hashing is the cost)
GENERATED_PASSWORD_BYTES = 15  # 120 bits, 20 URL-safe characters

CACHE_TTL_SECONDS = 15 * 60
CACHE_MAX_ENTRIES = 100_000


def hash_password(password: str) -> str:
    kdf = Argon2id(
        salt=os.urandom(ARGON2_SALT_BYTES),
        length=ARGON2_HASH_BYTES,
        iterations=ARGON2_ITERATIONS,
        lanes=ARGON2_LANES,
        memory_cost=ARGON2_MEMORY_KIB,
    )
    with affinity.everywhere():  # Argon2id runs without the GIL: let it use every CPU
        return kdf.derive_phc_encoded(password.encode("utf-8"))


def verify_password(password: str, encoded: str) -> bool:
    raw = password.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_PASSWORD_BYTES:
        return False
    try:
        with affinity.everywhere():
            Argon2id.verify_phc_encoded(raw, encoded)
    except (InvalidKey, ValueError):
        return False
    return True


# A hash of a random password: verified against when the user does not exist, so an
# unknown user costs the same time as a wrong password (no user enumeration by timing).
_DUMMY_HASH: str | None = None
_DUMMY_LOCK = threading.Lock()


def burn_verification_time(password: str) -> None:
    global _DUMMY_HASH
    with _DUMMY_LOCK:
        if _DUMMY_HASH is None:
            _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
        dummy = _DUMMY_HASH
    verify_password(password, dummy)


def generate_password() -> str:
    return secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)


class VerifiedCredentials:
    """Remembers (user, stored hash, password) triples that verified recently.

    Only successes are cached, keyed by a keyed hash of the password (the password
    itself is never kept), and tied to the stored hash: a password change or a new
    hash invalidates the entry at once.
    """

    def __init__(
        self, *, ttl: float = CACHE_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._key = os.urandom(32)
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple[int, str], tuple[bytes, float]] = {}

    def _digest(self, password: str) -> bytes:
        return hmac.new(
            self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()

    def check(self, user_id: int, stored_hash: str, password: str) -> bool:
        with self._lock:
            entry = self._entries.get((user_id, stored_hash))
        if entry is None:
            return False
        digest, expires = entry
        if self._clock() > expires:
            return False
        return hmac.compare_digest(digest, self._digest(password))

    def remember(self, user_id: int, stored_hash: str, password: str) -> None:
        digest = self._digest(password)
        with self._lock:
            if len(self._entries) >= CACHE_MAX_ENTRIES:
                now = self._clock()
                self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
                if len(self._entries) >= CACHE_MAX_ENTRIES:
                    self._entries.clear()
            self._entries[(user_id, stored_hash)] = (digest, self._clock() + self._ttl)
