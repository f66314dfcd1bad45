"""The IMAP server's settings (parsed once by the application, STYLE rule 11) and the
session limits that are not protocol-parser limits (those are in :mod:`.limits`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .limits import DEFAULT_APPEND_LIMIT
from .shared import DEFAULT_METADATA_CACHE_BYTES

__all__ = [
    "AUTOLOGOUT_TIMEOUT",
    "COMMANDS_PER_SECOND",
    "COMMAND_BURST",
    "IDLE_TIMEOUT",
    "IDLE_UPDATE_TIMEOUT",
    "MAX_BAD_COMMANDS",
    "MAX_LOGIN_FAILURES",
    "PREAUTH_MAX_LINE",
    "PREAUTH_TIMEOUT",
    "SEND_AS_IS_BYTES",
    "SEND_TIMEOUT",
    "TLS_HANDSHAKE_TIMEOUT",
    "ImapSettings",
]

# RFC 3501 5.4: an inactivity autologout timer, if any, must be at least 30 minutes.
AUTOLOGOUT_TIMEOUT: Final = 30 * 60.0
# RFC 2177 3: clients re-issue IDLE at least every 29 minutes, so the server may end an
# IDLE after 30 minutes without DONE.
IDLE_TIMEOUT: Final = 30 * 60.0
# Before login a client has nothing to wait for; the POP3 server uses the same minute.
PREAUTH_TIMEOUT: Final = 60.0
# A client that takes longer than this to accept our output is gone.
SEND_TIMEOUT: Final = 300.0
# An update pushed during IDLE (RFC 2177: EXISTS, EXPUNGE, FETCH FLAGS) is sent shielded
# from cancellation, since a half-sent response would corrupt the stream; a client that
# does not take a few kilobytes within this long has stopped reading, and the connection
# is closed rather than letting the shield hold up a server shutdown for SEND_TIMEOUT.
IDLE_UPDATE_TIMEOUT: Final = 5.0
# Output pieces this large (a message literal in FETCH) go to the stream as they are;
# smaller ones are joined into one write. Joining a large piece would copy it once more.
SEND_AS_IS_BYTES: Final = 64 * 1024
TLS_HANDSHAKE_TIMEOUT: Final = 30.0
# Before login only LOGIN/AUTHENTICATE/STARTTLS/CAPABILITY/ID make sense; none needs more
# than a short line (a SASL PLAIN response of MAX_SASL_PLAIN octets is ~2.7k in base64).
# CVE-2026-27857 (pre-auth memory via nesting) is the reason to keep pre-auth buffers small.
PREAUTH_MAX_LINE: Final = 8192
# Commands per second a session may issue before it is slowed down (token bucket refill
# rate and bucket size). Real clients pipeline bursts of a few hundred (mbsync, Thunderbird
# on a large folder); a script flooding the server waits instead of taking its CPU.
COMMANDS_PER_SECOND: Final = 200.0
COMMAND_BURST: Final = 1000.0
# Unparseable commands tolerated per connection before BYE (Dovecot closes after 20
# "too many invalid IMAP commands").
MAX_BAD_COMMANDS: Final = 20
# Failed LOGIN/AUTHENTICATE per connection before BYE (the cross-protocol throttle in the
# password checker does the real rate limiting; this only ends a guessing session early).
MAX_LOGIN_FAILURES: Final = 3


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """What the application tells the IMAP server (one object for both listeners).

    ``plaintext_on_loopback`` allows LOGIN/AUTHENTICATE without TLS from 127.0.0.0/8 and
    ::1 (development, local webmail). ``append_limit`` is APPENDLIMIT (RFC 7889).
    """

    hostname: str
    plaintext_on_loopback: bool = False
    append_limit: int = DEFAULT_APPEND_LIMIT
    autologout_timeout: float = AUTOLOGOUT_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    preauth_timeout: float = PREAUTH_TIMEOUT
    commands_per_second: float = COMMANDS_PER_SECOND
    command_burst: float = COMMAND_BURST
    metadata_cache_bytes: int = DEFAULT_METADATA_CACHE_BYTES
