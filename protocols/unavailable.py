"""Listeners whose protocol is not served yet answer with the protocol's own
"service not available" reply, never a silent close."""

from __future__ import annotations

import trio

GREETINGS: dict[str, bytes] = {
    # RFC 5321 3.1: a server that cannot serve says 421 in the greeting.
    "smtp": b"421 4.3.2 Service not available, closing transmission channel\r\n",
    # RFC 9051 7.1.5: BYE as the greeting refuses the connection.
    "imap": b"* BYE Service not available\r\n",
    # RFC 1939 4, RFC 3206 4: -ERR [SYS/TEMP] for a temporary refusal.
    "pop3": b"-ERR [SYS/TEMP] Service not available\r\n",
}


async def refuse(stream: trio.abc.Stream, protocol: str) -> None:
    try:
        with trio.move_on_after(5):
            await stream.send_all(GREETINGS[protocol])
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
