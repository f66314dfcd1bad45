"""SASL PLAIN (RFC 4616) and LOGIN, as small sans-IO exchanges.

The protocol core turns `AUTH` and its continuation lines into decoded bytes (base64,
`*` cancel and line limits are SMTP framing, RFC 4954 4, and live in the core). This
module turns those bytes into credentials: an exchange is started with the initial
response (None when the client sent none) and stepped with each further response
until it yields `Credentials`. It checks nothing against any user database.

Malformed messages raise `SaslError`; the session answers `501 5.5.2`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "MAX_SASL_FIELD",
    "MECHANISMS",
    "Challenge",
    "Credentials",
    "LoginExchange",
    "PlainExchange",
    "SaslError",
    "SaslExchange",
]

# RFC 4616 2: authzid, authcid and passwd "up to 255 octets" each must be accepted; we
# refuse longer ones so nothing unbounded reaches the password hasher or the logs.
MAX_SASL_FIELD = 255


class SaslError(ValueError):
    """A SASL message that does not follow its mechanism's syntax."""


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send this to the client (as a 334 reply) and step again with its answer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client claims. `authzid` is empty when it asks to act as itself."""

    mechanism: str
    authcid: str
    password: str = field(repr=False)
    authzid: str = ""


class SaslExchange(Protocol):
    """One server-side SASL exchange."""

    def step(self, response: bytes | None) -> Challenge | Credentials:
        """Feed the next client response (the first call gets the initial response)."""
        ...


def _text(raw: bytes, what: str, *, allow_empty: bool = False) -> str:
    if len(raw) > MAX_SASL_FIELD:
        raise SaslError(f"{what} too long")
    if not raw and not allow_empty:
        raise SaslError(f"empty {what}")
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SaslError(f"{what} is not UTF-8") from None
    # RFC 4616 2: UTF8SAFE excludes NUL; we also refuse every other control character,
    # which keeps CR/LF out of logs and Received: headers.
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise SaslError(f"control character in {what}")
    return value


class PlainExchange:
    """PLAIN: one message `[authzid] NUL authcid NUL passwd` (RFC 4616 2)."""

    def __init__(self) -> None:
        self._asked = False

    def step(self, response: bytes | None) -> Challenge | Credentials:
        if response is None:
            if self._asked:
                raise SaslError("PLAIN needs a response")
            self._asked = True
            return Challenge(b"")  # RFC 4954 4: an empty challenge asks for the message
        parts = response.split(b"\x00")
        if len(parts) != 3:
            raise SaslError("PLAIN message needs exactly two NUL separators")
        authzid, authcid, password = parts
        return Credentials(
            mechanism="PLAIN",
            authzid=_text(authzid, "authorization identity", allow_empty=True),
            authcid=_text(authcid, "authentication identity"),
            password=_text(password, "password"),
        )


class LoginExchange:
    """LOGIN (draft-murchison-sasl-login): ask `Username:`, then `Password:`.

    Some clients send the user name as an initial response; that skips the first prompt.
    """

    def __init__(self) -> None:
        self._user: str | None = None
        self._started = False

    def step(self, response: bytes | None) -> Challenge | Credentials:
        if not self._started:
            self._started = True
            if response is None:
                return Challenge(b"Username:")
        if response is None:
            raise SaslError("LOGIN needs a response")
        if self._user is None:
            self._user = _text(response, "user name")
            return Challenge(b"Password:")
        password = _text(response, "password")
        return Credentials(mechanism="LOGIN", authcid=self._user, password=password)


MECHANISMS: dict[str, Callable[[], SaslExchange]] = {
    "PLAIN": PlainExchange,
    "LOGIN": LoginExchange,
}
