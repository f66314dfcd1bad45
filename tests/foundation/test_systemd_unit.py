"""The shipped systemd unit lets the server make the system calls it needs. Under
SystemCallFilter a call outside the list kills the process (SIGSYS) unless
SystemCallErrorNumber is set, so a missing call is a crash in production only."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "mailhost.service"
# What the server and its delivery agent call that a hardened unit might refuse:
# thread placement (service.single_cpu), starting the agent in a session of its own,
# the store's durability calls.
NEEDED = (
    "sched_setaffinity",
    "sched_getaffinity",
    "setsid",
    "execve",
    "clone3",
    "socketpair",
    "fdatasync",
    "fsync",
    "flock",
    "link",
)


def _filters() -> tuple[list[str], list[str], dict[str, str]]:
    allowed: list[str] = []
    denied: list[str] = []
    settings: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        key, eq, value = line.partition("=")
        if not eq or line.startswith("#"):
            continue
        if key == "SystemCallFilter":
            if value.startswith("~"):
                denied += value[1:].split()
            else:
                allowed += value.split()
        else:
            settings[key] = value
    return allowed, denied, settings


@functools.cache
def _expand(name: str) -> frozenset[str]:
    """A system call, or every call of a group (systemd-analyze syscall-filter)."""
    if not name.startswith("@"):
        return frozenset({name})
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if word and not word.startswith("#"):
            calls |= _expand(word)
    return frozenset(calls)


def test_a_refused_call_is_an_error_not_a_kill() -> None:
    assert _filters()[2].get("SystemCallErrorNumber") == "EPERM"


def test_the_calls_the_server_makes_are_not_denied() -> None:
    allowed, denied, _ = _filters()
    assert allowed == ["@system-service"]
    # @resources holds sched_setaffinity: the unit lists the rest of it by name.
    assert "@resources" not in denied
    assert not set(NEEDED) & set(denied)
    if shutil.which("systemd-analyze"):  # where systemd is installed, expand the groups
        permitted = set().union(*map(_expand, allowed)) - set().union(*map(_expand, denied))
        assert set(NEEDED) <= permitted
        # Everything else of @resources stays denied.
        assert _expand("@resources") - permitted == _expand("@resources") - {"sched_setaffinity"}
