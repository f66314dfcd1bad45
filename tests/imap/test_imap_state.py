"""The state table: gates and transitions (RFC 3501 3)."""

from __future__ import annotations

import pytest

from protocols.imap import commands as c
from protocols.imap.names import decode_mailbox_name
from protocols.imap.parser import COMMAND_PARSERS
from protocols.imap.sequence import SequenceSet
from protocols.imap.state import (
    ConnectionState,
    Outcome,
    gate_refusal,
    literal_refusal,
    next_state,
    verb_gate,
)

S = ConnectionState
INBOX = decode_mailbox_name(b"INBOX")


@pytest.mark.parametrize(
    ("command", "allowed"),
    [
        (c.CapabilityCommand(tag="a"), {S.NOT_AUTHENTICATED, S.AUTHENTICATED, S.SELECTED}),
        (c.LoginCommand(tag="a", username="u", password=b"p"), {S.NOT_AUTHENTICATED}),
        (c.StartTLSCommand(tag="a"), {S.NOT_AUTHENTICATED}),
        (c.SelectCommand(tag="a", mailbox=INBOX), {S.AUTHENTICATED, S.SELECTED}),
        (c.EnableCommand(tag="a", capabilities=("X",)), {S.AUTHENTICATED, S.SELECTED}),
        (c.CompressCommand(tag="a", mechanism="DEFLATE"), {S.AUTHENTICATED, S.SELECTED}),
        (c.IdleCommand(tag="a"), {S.AUTHENTICATED, S.SELECTED}),
        (
            c.FetchCommand(tag="a", sequence=SequenceSet.parse(b"1"), attributes=()),
            {S.SELECTED},
        ),
        (c.CloseCommand(tag="a"), {S.SELECTED}),
    ],
)
def test_gates(command: c.Command, allowed: set[ConnectionState]) -> None:
    for state in S:
        refusal = gate_refusal(state, command)
        assert (refusal is None) == (state in allowed), (state, command)


def test_refusal_reasons() -> None:
    fetch = c.FetchCommand(tag="a", uid=True, sequence=SequenceSet.parse(b"1"), attributes=())
    assert gate_refusal(S.AUTHENTICATED, fetch) == "UID FETCH: select a mailbox first"
    assert gate_refusal(S.NOT_AUTHENTICATED, c.NamespaceCommand(tag="a")) == (
        "NAMESPACE: authenticate first"
    )
    assert gate_refusal(S.SELECTED, c.LoginCommand(tag="a", username="u", password=b"")) == (
        "LOGIN: already authenticated"
    )


def test_transitions() -> None:
    assert next_state(S.NOT_AUTHENTICATED, Outcome.AUTHENTICATED) is S.AUTHENTICATED
    assert next_state(S.AUTHENTICATED, Outcome.SELECTED) is S.SELECTED
    assert next_state(S.SELECTED, Outcome.SELECT_FAILED) is S.AUTHENTICATED  # RFC 3501 6.3.1
    assert next_state(S.SELECTED, Outcome.UNSELECTED) is S.AUTHENTICATED
    assert next_state(S.SELECTED, Outcome.SELECTED) is S.SELECTED
    assert next_state(S.AUTHENTICATED, Outcome.SELECT_FAILED) is S.AUTHENTICATED
    assert next_state(S.NOT_AUTHENTICATED, Outcome.SELECTED) is S.NOT_AUTHENTICATED
    for state in (S.NOT_AUTHENTICATED, S.AUTHENTICATED, S.SELECTED):
        assert next_state(state, Outcome.LOGGED_OUT) is S.LOGOUT
    assert next_state(S.LOGOUT, Outcome.AUTHENTICATED) is S.LOGOUT


def test_every_parsed_verb_has_a_gate() -> None:
    for verb in COMMAND_PARSERS:
        assert verb_gate(verb.decode()) is not None, verb
    assert verb_gate("UID FETCH") is c.Gate.SELECTED
    assert verb_gate("FROBNICATE") is None


def test_literal_refused_before_login() -> None:
    assert literal_refusal(S.NOT_AUTHENTICATED, "APPEND") == "APPEND: authenticate first"
    assert literal_refusal(S.NOT_AUTHENTICATED, "LOGIN") is None
    assert literal_refusal(S.AUTHENTICATED, "APPEND") is None
    assert literal_refusal(S.AUTHENTICATED, "UID SEARCH") == "UID SEARCH: select a mailbox first"
