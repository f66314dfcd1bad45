"""What protocols know about logging in: a neutral account and the password checker.

The application (mailhost.auth) implements `PasswordChecker` over the directory with
one failed-login throttle for every protocol; protocols only see these types.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Account:
    user_id: int
    address: str  # primary address
    mailbox_id: str  # names the mailbox in the store
    display_name: str
    addresses: tuple[str, ...]  # every address the account owns, primary first


class LoginOutcome(StrEnum):
    OK = "ok"
    FAILED = "failed"  # wrong user name or password
    THROTTLED = "throttled"  # too many failures from this client address


@dataclass(frozen=True, slots=True)
class Login:
    outcome: LoginOutcome
    account: Account | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is LoginOutcome.OK


class PasswordChecker(Protocol):
    async def authenticate(
        self, login: str, password: str, *, peer: str, protocol: str
    ) -> Login: ...


class SaslError(ValueError):
    """A malformed SASL response; the message says what was wrong."""


MAX_SASL_PLAIN = 2048  # authzid + authcid + password, decoded; far above real use


def decode_sasl_plain(encoded: str) -> tuple[str, str, str]:
    """RFC 4616: base64 of authzid NUL authcid NUL passwd -> (authzid, authcid, passwd)."""
    if len(encoded) > MAX_SASL_PLAIN * 4 // 3 + 4:
        raise SaslError("response too long")
    try:
        raw = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SaslError("invalid base64") from None
    parts = raw.split(b"\0")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SaslError("expected authzid NUL authcid NUL password")
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        raise SaslError("not UTF-8") from None
    return authzid, authcid, password
