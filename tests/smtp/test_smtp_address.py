"""The RFC 5321 / RFC 6531 path parser: what it accepts, what it refuses, its limits."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.smtp.address import (
    MAX_DOMAIN,
    MAX_DOMAIN_LABEL,
    MAX_LOCAL_PART,
    MAX_PATH,
    Address,
    AddressError,
    is_valid_domain,
    parse_forward_path,
    parse_mailbox,
    parse_reverse_path,
)


def forward(text: str, utf8: bool = False) -> Address:
    address, rest = parse_forward_path(text, utf8=utf8)
    assert rest == ""
    return address


@pytest.mark.parametrize(
    ("path", "local", "domain"),
    [
        ("<user@example.org>", "user", "example.org"),
        ("<First.Last@Sub.Example.ORG>", "First.Last", "Sub.Example.ORG"),
        ("<a+tag@x-y.example>", "a+tag", "x-y.example"),
        ("<!#$%&'*+-/=?^_`{|}~@example.org>", "!#$%&'*+-/=?^_`{|}~", "example.org"),
        ('<"john doe"@example.org>', "john doe", "example.org"),
        ('<"a\\"b\\\\c"@example.org>', 'a"b\\c', "example.org"),
        ('<"@"@example.org>', "@", "example.org"),
        ("<u@1a.example>", "u", "1a.example"),
        ("<u@localhost>", "u", "localhost"),
    ],
)
def test_valid_paths(path: str, local: str, domain: str) -> None:
    address = forward(path)
    assert (address.local_part, address.domain) == (local, domain)


@pytest.mark.parametrize(
    "path",
    [
        "user@example.org",  # no angle brackets
        "<user@example.org",
        "<user>",  # no domain
        "<@example.org>",
        "<user@>",
        "<.user@example.org>",
        "<user.@example.org>",
        "<us..er@example.org>",
        "<user@example..org>",
        "<user@-example.org>",
        "<user@example-.org>",
        "<user@exa_mple.org>",
        "<user@example.org.>",  # trailing dot
        "<user@.example.org>",
        "<user@127.0.0.1>",  # an IP must be an address literal
        "<user@example.123>",
        "<a@b@example.org>",
        "<a b@example.org>",
        '<"unterminated@example.org>',
        '<"bad\x01"@example.org>',
        "<user@[127.0.0.1>",
        "<user@[127.000.0.1]>",  # no leading zeros
        "<user@[1.2.3]>",
        "<user@[IPv6:fe80::1%eth0]>",
        "<user@[IPv6:::1::2]>",
        "<user@[x-tag:abc]>",
        '<""@example.org>',
        "<user@example.org>>",
        "<>",  # not a forward path
        "<@a.example:>",
        "<@a.example,b.example:u@c.example>",
    ],
)
def test_invalid_paths(path: str) -> None:
    try:
        _, rest = parse_forward_path(path)
    except AddressError:
        return
    assert rest != "", f"accepted {path!r}"  # trailing junk: refused by the MAIL/RCPT parser


def test_text_after_the_path_is_returned() -> None:
    address, rest = parse_forward_path("<a@b.example> NOTIFY=NEVER")
    assert address == Address("a", "b.example")
    assert rest == " NOTIFY=NEVER"


def test_null_reverse_path() -> None:
    assert parse_reverse_path("<>") == (None, "")
    assert parse_reverse_path("<> SIZE=1") == (None, " SIZE=1")


def test_bare_postmaster_recipient() -> None:
    for text in ("<Postmaster>", "<postmaster>", "<POSTMASTER>"):
        address = forward(text)
        assert address.is_postmaster
        assert address.domain == ""
    with pytest.raises(AddressError):
        parse_reverse_path("<postmaster>")
    with pytest.raises(AddressError):
        forward("<webmaster>")
    with pytest.raises(AddressError):
        forward('<"postmaster">')


def test_source_route_is_accepted_and_ignored() -> None:
    address = forward("<@a.example,@b.example:user@c.example>")
    assert address.domain == "c.example"
    assert address.route == ("a.example", "b.example")
    assert address.path() == "<user@c.example>"


def test_address_literals() -> None:
    v4 = forward("<u@[192.0.2.1]>")
    assert v4.literal == ipaddress.IPv4Address("192.0.2.1")
    assert v4.domain_key == "[192.0.2.1]"
    v6 = forward("<u@[IPv6:2001:DB8::1]>")
    assert v6.literal == ipaddress.IPv6Address("2001:db8::1")
    assert v6.domain_key == "[ipv6:2001:db8::1]"
    assert forward("<u@[ipv6:::ffff:192.0.2.1]>").literal is not None


def test_domain_key_is_lowercase() -> None:
    assert forward("<u@Example.ORG>").domain_key == "example.org"


def test_routing_characters_are_flagged_not_interpreted() -> None:
    assert forward("<a%b.example@example.org>").has_routing_characters
    assert forward("<b.example!a@example.org>").has_routing_characters
    assert forward('<"a@b.example"@example.org>').has_routing_characters
    assert not forward("<plain@example.org>").has_routing_characters


def test_limits() -> None:
    forward(f"<{'l' * MAX_LOCAL_PART}@example.org>")
    with pytest.raises(AddressError) as caught:
        forward(f"<{'l' * (MAX_LOCAL_PART + 1)}@example.org>")
    assert caught.value.too_long
    label = "d" * MAX_DOMAIN_LABEL
    forward(f"<u@{label}.example>")
    with pytest.raises(AddressError):
        forward(f"<u@{label}d.example>")
    long_domain = ".".join(["d" * 60] * 4) + ".example"  # 252 octets
    assert len(long_domain) <= MAX_DOMAIN
    path = f"<u@{long_domain}>"
    assert len(path) <= MAX_PATH
    forward(path)
    too_long_domain = ".".join(["d" * 60] * 5)
    with pytest.raises(AddressError):
        forward(f"<u@{too_long_domain}>")
    # Within the domain limit, over the path limit once a route is added.
    with pytest.raises(AddressError) as caught:
        forward(f"<@relay.example:{'l' * 64}@{long_domain}>")
    assert caught.value.too_long


def test_utf8_needs_the_flag() -> None:
    with pytest.raises(AddressError):
        forward("<u@bücher.example>")
    address = forward("<jörg@bücher.example>", utf8=True)
    assert not address.is_ascii
    assert forward('<"ü x"@example.org>', utf8=True).local_part == "ü x"
    with pytest.raises(AddressError):
        forward("<u@bu\u0308cher.example>", utf8=True)  # not NFC
    with pytest.raises(AddressError):
        forward("<a\u2028b@example.org>", utf8=True)  # a line separator is not atext
    with pytest.raises(AddressError):
        forward("<a\x85b@example.org>", utf8=True)  # C1 control (NEL)
    with pytest.raises(AddressError):
        forward(f"<u@{'ü' * 60}.example>", utf8=True)  # A-label over 63 octets


def test_parse_mailbox() -> None:
    assert parse_mailbox("a@b.example") == Address("a", "b.example")
    for bad in ("", "<a@b.example>", "a@b.example x", "@r.example:a@b.example"):
        with pytest.raises(AddressError):
            parse_mailbox(bad)


def test_is_valid_domain() -> None:
    assert is_valid_domain("mx.example.org")
    assert not is_valid_domain("mx.example.org.")
    assert not is_valid_domain("my_laptop")
    assert not is_valid_domain("[192.0.2.1]")


def test_str_requotes_the_local_part() -> None:
    assert str(Address("john doe", "example.org")) == '"john doe"@example.org'
    assert str(Address('a"b', "example.org")) == '"a\\"b"@example.org'
    assert str(Address("a.b", "example.org")) == "a.b@example.org"
    assert str(Address(".a", "example.org")) == '".a"@example.org'
    assert str(Address("Postmaster", "")) == "Postmaster"


# ------------------------------------------------------------------ hypothesis

_atext = st.sampled_from("abcxyzABCXYZ0189!#$%&'*+-/=?^_`{|}~")
_atom = st.text(_atext, min_size=1, max_size=8)
_dot_string = st.lists(_atom, min_size=1, max_size=4).map(".".join)
_quoted = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20)
_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_domain = st.tuples(
    st.lists(_label, min_size=1, max_size=3), st.from_regex(r"[a-z]{2,6}", fullmatch=True)
).map(lambda parts: ".".join([*parts[0], parts[1]]))
_literal = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: f"[{ip}]"),
    st.ip_addresses(v=6).map(lambda ip: f"[IPv6:{ip}]"),
)


@given(local=st.one_of(_dot_string, _quoted), domain=st.one_of(_domain, _literal))
def test_valid_addresses_round_trip(local: str, domain: str) -> None:
    if len(Address(local, domain).quoted_local_part.encode()) > MAX_LOCAL_PART:
        return
    address = forward(f"<{Address(local, domain)}>")
    assert address.local_part == local
    assert address.domain == domain
    assert forward(address.path()) == address


@given(st.text(max_size=300))
def test_no_text_crashes_the_parser(text: str) -> None:
    for parse in (parse_forward_path, parse_reverse_path):
        for utf8 in (False, True):
            try:
                parse(text, utf8=utf8)
            except AddressError:
                pass
