"""Open relay at the address-syntax level (checklist item 24, RFC 2505 2.6).

The relay decision is the hub's; the parser's job is to hand it the domain the mail
would really go to, whatever trick the address uses, and to refuse what is not an
address at all. The session test runs the tricks through a backend that applies the
hub's rule (local domain: mailbox must exist; other domain: authenticated only) and
checks that none is accepted for an anonymous sender.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from smtp_helpers import CoreDriver, Refused, SmtpTestClient, make_settings

from protocols.smtp.address import AddressError, parse_forward_path
from protocols.smtp.core import Rcpt

OURS = "example.org"

# (forward-path, the domain the parser must expose, or None when it must refuse it)
TRICKS: list[tuple[str, str | None]] = [
    ("<relaytest%evil.example@example.org>", "example.org"),  # percent hack
    ("<relaytest%evil.example@[192.0.2.1]>", "[192.0.2.1]"),
    ("<evil.example!relaytest@example.org>", "example.org"),  # bang path
    ("<evil.example!relaytest@[192.0.2.1]>", "[192.0.2.1]"),
    ('<"relaytest@evil.example">', None),  # quoted, no domain
    ('<"relaytest@evil.example"@example.org>', "example.org"),
    ('<"relaytest%evil.example"@example.org>', "example.org"),
    ("<relaytest@evil.example@example.org>", None),
    ("<relaytest@evil.example@[192.0.2.1]>", None),
    ("<@example.org:relaytest@evil.example>", "evil.example"),  # source route: the end counts
    ("<@[192.0.2.1]:relaytest@evil.example>", None),  # routes name domains, not literals
    ("<@example.org,@mx.example.org:relaytest@evil.example>", "evil.example"),
    ("<relaytest%evil.example>", None),
    ("<evil.example!relaytest>", None),
    ("<relaytest@[127.0.0.1]>", "[127.0.0.1]"),
    ("<relaytest@[IPv6:::1]>", "[IPv6:::1]"),
    ("<relaytest@127.0.0.1>", None),
    ("<relaytest@example.org.>", None),  # trailing dot
    ("<relaytest@example.org..>", None),
    ("<relaytest@EXAMPLE.ORG>", "EXAMPLE.ORG"),  # case: still ours, domain_key lowercases
    ("<relaytest@example.org.evil.example>", "example.org.evil.example"),
    ("<relaytest@evil.example\\@example.org>", None),
    ("<relaytest@evil.example%example.org>", None),
    ("<relaytest@evil.example:example.org>", None),
    ("<relaytest@evil.example> <x@example.org>", "evil.example"),  # junk after the path
    ("<relaytest@evil.example, x@example.org>", None),
]


@pytest.mark.parametrize(("path", "domain"), TRICKS)
def test_parser_exposes_the_real_domain(path: str, domain: str | None) -> None:
    try:
        address, rest = parse_forward_path(path)
    except AddressError:
        assert domain is None, f"{path} should parse"
        return
    assert address.domain == domain, path
    if rest:  # trailing text: the RCPT parser refuses it as a malformed parameter
        assert domain is not None


@pytest.mark.parametrize(("path", "domain"), TRICKS)
def test_core_rcpt_reports_only_the_real_domain(path: str, domain: str | None) -> None:
    d = CoreDriver()
    log = d.feed(f"EHLO x\r\nMAIL FROM:<a@example.net>\r\nRCPT TO:{path}\r\n".encode())
    rcpts = [e for e in log if isinstance(e, Rcpt)]
    if domain is None or " " in path:
        assert rcpts == []
        assert isinstance(log[-1], Refused)
        assert log[-1].reply.code == 501
    else:
        assert rcpts[0].recipient.domain == domain


async def test_no_trick_is_accepted_for_an_anonymous_sender(
    memory_session: Callable[..., SmtpTestClient],
) -> None:
    client = memory_session(make_settings(hard_error_limit=100))  # every trick is an error
    await client.reply()
    await client.command("EHLO client.example")
    accepted: list[str] = []
    for path, _ in TRICKS:
        assert await client.code("MAIL FROM:<someone@example.net>") == 250
        code = await client.code(f"RCPT TO:{path}")
        if code < 400 and "relaytest@example.org" not in path.lower().replace("<", ""):
            accepted.append(path)
        assert await client.code("RSET") == 250
    # relaytest@example.org does not exist either, so nothing at all is accepted.
    assert accepted == []
    assert await client.code("MAIL FROM:<someone@example.net>") == 250
    assert await client.code("RCPT TO:<alice@EXAMPLE.org>") == 250  # a real local user
    assert await client.code("RCPT TO:<alice@elsewhere.example>") == 554  # relay denied
