"""IMAP connection states: the one table of what each state allows and where it leads.

Rules (RFC 3501 3, RFC 9051 3):

1. Every command belongs to one gate (its class in :mod:`protocols.imap.commands`:
   ``CommandAny``, ``CommandNonAuth``, ``CommandAuth``, ``CommandSelect``). A command is
   accepted only if its gate is open in the current state (:data:`GATES`); otherwise the
   reply is ``BAD`` with the reason in the table. This is the only place that decides
   "must authenticate first" or "must select a mailbox first".
2. The state changes only through :data:`TRANSITIONS`, keyed by (state, outcome). An
   outcome not listed for a state leaves it unchanged; the session reports outcomes, it
   never assigns states itself.
3. A failed SELECT/EXAMINE while a mailbox is selected leaves no mailbox selected
   (RFC 3501 6.3.1), so it is an outcome with its own transition.
4. LOGOUT is terminal: the session sends BYE, the tagged OK and closes.
"""

from __future__ import annotations

import enum
from typing import Final

from .commands import ALL_COMMANDS, Command, Gate

__all__ = [
    "GATES",
    "TRANSITIONS",
    "ConnectionState",
    "Outcome",
    "gate_refusal",
    "literal_refusal",
    "next_state",
    "verb_gate",
]


class ConnectionState(enum.StrEnum):
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


class Outcome(enum.StrEnum):
    """What happened, as reported by the session after running a command."""

    AUTHENTICATED = "authenticated"  # LOGIN / AUTHENTICATE succeeded (or PREAUTH greeting)
    SELECTED = "selected"  # SELECT / EXAMINE succeeded
    SELECT_FAILED = "select-failed"  # SELECT / EXAMINE failed
    UNSELECTED = "unselected"  # CLOSE / UNSELECT, or the selected mailbox was deleted
    LOGGED_OUT = "logged-out"  # LOGOUT, or the server is closing the connection


_S = ConnectionState

# Gate -> (states where it is open, BAD reason elsewhere). Rule 1.
GATES: Final[dict[Gate, tuple[frozenset[ConnectionState], str]]] = {
    Gate.ANY: (frozenset({_S.NOT_AUTHENTICATED, _S.AUTHENTICATED, _S.SELECTED}), ""),
    Gate.NOT_AUTHENTICATED: (frozenset({_S.NOT_AUTHENTICATED}), "already authenticated"),
    Gate.AUTHENTICATED: (frozenset({_S.AUTHENTICATED, _S.SELECTED}), "authenticate first"),
    Gate.SELECTED: (frozenset({_S.SELECTED}), "select a mailbox first"),
}

# (state, outcome) -> next state. Rule 2.
TRANSITIONS: Final[dict[tuple[ConnectionState, Outcome], ConnectionState]] = {
    (_S.NOT_AUTHENTICATED, Outcome.AUTHENTICATED): _S.AUTHENTICATED,
    (_S.NOT_AUTHENTICATED, Outcome.LOGGED_OUT): _S.LOGOUT,
    (_S.AUTHENTICATED, Outcome.SELECTED): _S.SELECTED,
    (_S.AUTHENTICATED, Outcome.LOGGED_OUT): _S.LOGOUT,
    (_S.SELECTED, Outcome.SELECTED): _S.SELECTED,  # SELECT while selected switches mailbox
    (_S.SELECTED, Outcome.SELECT_FAILED): _S.AUTHENTICATED,  # rule 3
    (_S.SELECTED, Outcome.UNSELECTED): _S.AUTHENTICATED,
    (_S.SELECTED, Outcome.LOGGED_OUT): _S.LOGOUT,
}


def gate_refusal(state: ConnectionState, command: Command) -> str | None:
    """``None`` if ``command`` may run in ``state``, else the BAD reason (rule 1)."""
    allowed, reason = GATES[command.gate]
    if state in allowed:
        return None
    if state is ConnectionState.LOGOUT:
        return "connection is closing"
    return f"{command.command_name}: {reason}"


_VERB_GATES: Final[dict[str, Gate]] = {cls.name: cls.gate for cls in ALL_COMMANDS}


def verb_gate(verb: str) -> Gate | None:
    """The gate of a verb as the reader names it (``"UID FETCH"``), or None if unknown."""
    return _VERB_GATES.get(verb.removeprefix("UID "))


def literal_refusal(state: ConnectionState, verb: str) -> str | None:
    """Rule 1 applied before a literal is read: refuse ``+`` to a command that could not
    run anyway (an APPEND before login must not make us buffer its message)."""
    gate = verb_gate(verb)
    if gate is None:
        return f"unknown command {verb}"
    allowed, reason = GATES[gate]
    if state in allowed:
        return None
    return f"{verb}: {reason}"


def next_state(state: ConnectionState, outcome: Outcome) -> ConnectionState:
    """The state after ``outcome`` (rule 2: unlisted outcomes change nothing)."""
    return TRANSITIONS.get((state, outcome), state)
