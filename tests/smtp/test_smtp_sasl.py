"""SASL PLAIN and LOGIN exchanges (RFC 4616, RFC 4954): parsing only, no user database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.smtp.sasl import (
    MAX_SASL_FIELD,
    MECHANISMS,
    Challenge,
    Credentials,
    LoginExchange,
    PlainExchange,
    SaslError,
)


def test_plain_with_initial_response() -> None:
    result = PlainExchange().step(b"\x00alice\x00secret")
    assert result == Credentials(mechanism="PLAIN", authcid="alice", password="secret")
    result = PlainExchange().step(b"admin\x00alice\x00secret")
    assert isinstance(result, Credentials)
    assert result.authzid == "admin"


def test_plain_without_initial_response_asks_once() -> None:
    exchange = PlainExchange()
    assert exchange.step(None) == Challenge(b"")
    assert isinstance(exchange.step("\x00bøb\x00pässword".encode()), Credentials)
    with pytest.raises(SaslError):
        PlainExchange().step(b"")  # "=" initial response: empty PLAIN message


@pytest.mark.parametrize(
    "message",
    [
        b"alice\x00secret",
        b"\x00\x00secret",
        b"\x00alice\x00",
        b"\x00alice\x00sec\x00ret",
        b"\x00al\xffice\x00secret",
        b"\x00alice\x00sec\nret",
        b"\x00alice\x00sec\rret",
        b"\x00" + b"a" * (MAX_SASL_FIELD + 1) + b"\x00secret",
        b"\x00alice\x00" + b"p" * (MAX_SASL_FIELD + 1),
    ],
)
def test_plain_malformed(message: bytes) -> None:
    with pytest.raises(SaslError):
        PlainExchange().step(message)


def test_plain_field_limit_is_inclusive() -> None:
    result = PlainExchange().step(b"\x00" + b"a" * MAX_SASL_FIELD + b"\x00" + b"p" * MAX_SASL_FIELD)
    assert isinstance(result, Credentials)


def test_login() -> None:
    exchange = LoginExchange()
    assert exchange.step(None) == Challenge(b"Username:")
    assert exchange.step(b"alice") == Challenge(b"Password:")
    assert exchange.step(b"secret") == Credentials(
        mechanism="LOGIN", authcid="alice", password="secret"
    )


def test_login_with_the_user_name_as_initial_response() -> None:
    exchange = LoginExchange()
    assert exchange.step(b"alice") == Challenge(b"Password:")
    assert isinstance(exchange.step(b"secret"), Credentials)


def test_login_malformed() -> None:
    with pytest.raises(SaslError):
        LoginExchange().step(b"")
    exchange = LoginExchange()
    exchange.step(b"alice")
    with pytest.raises(SaslError):
        exchange.step(b"bad\x00")


def test_password_is_not_in_the_repr() -> None:
    assert "secret" not in repr(Credentials(mechanism="PLAIN", authcid="a", password="secret"))


@given(st.lists(st.binary(max_size=600), min_size=1, max_size=4))
def test_no_input_crashes_an_exchange(responses: list[bytes]) -> None:
    for factory in MECHANISMS.values():
        exchange = factory()
        try:
            exchange.step(None)
            for response in responses:
                exchange.step(response)
        except SaslError:
            pass
