"""Which CPUs the server's threads run on (`service.single_cpu`).

CPython runs one thread at a time (the GIL). The event loop hands the GIL to a worker
thread at every socket call and takes it back after; when the two sit on different
CPUs, each hand-over is a wake-up of another CPU (an inter-processor interrupt, which on
a virtual machine is an exit to the hypervisor), and the cache lines of every object
they share travel with it. Kept on one CPU, a hand-over is a local context switch.
Measured with Postfix's smtp-source (20 senders, 10 KB messages, durable delivery, on a
2-CPU virtual machine): 271 -> 357 messages/s on new connections and 388 -> 686 on
reused ones, with a third less CPU time per message.

Work that runs without the GIL for long (an Argon2id hash: tens of milliseconds) is
given every allowed CPU while it runs (`everywhere`), so logins use the other CPUs
instead of taking turns with the event loop.

Linux only (sched_setaffinity); elsewhere, and when the kernel refuses, threads stay
where the kernel puts them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_lock = threading.Lock()
_allowed: frozenset[int] | None = None  # what the process could use before we narrowed it
_pinned: int | None = None  # the one CPU every thread is kept on, when single_cpu is on


def _current_cpu() -> int | None:
    """The CPU the calling thread last ran on (proc(5), /proc/[pid]/stat field 39)."""
    try:
        fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[36])
    except (OSError, IndexError, ValueError):
        return None


def _set_all_threads(cpus: frozenset[int]) -> None:
    """Set the affinity of every thread of this process (new threads inherit it from
    the thread that starts them)."""
    try:
        tids = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(tid, cpus)


def apply(single_cpu: bool) -> int | None:
    """Keep every thread on one CPU (the one the kernel started us on, if allowed), or
    give them back every CPU they were allowed; returns the CPU kept to, or None."""
    global _allowed, _pinned
    if not hasattr(os, "sched_setaffinity"):
        return None
    with _lock:
        if _allowed is None:
            _allowed = frozenset(os.sched_getaffinity(0))
        if not single_cpu:
            if _pinned is not None:
                _pinned = None
                _set_all_threads(_allowed)
            return None
        cpu = _current_cpu()
        if cpu not in _allowed:
            cpu = min(_allowed)
        if cpu != _pinned:
            _set_all_threads(frozenset({cpu}))
            if frozenset(os.sched_getaffinity(0)) != {cpu}:  # refused (a sandbox, a cpuset)
                log.warning("cannot keep threads on one CPU; the kernel places them")
                _set_all_threads(_allowed)
                _pinned = None
                return None
            _pinned = cpu
        return cpu


@contextlib.contextmanager
def everywhere() -> Iterator[None]:
    """Let the calling thread use every allowed CPU for the duration of the block (work
    that releases the GIL for long), then put it back on the one CPU."""
    every = _allowed
    if _pinned is None or every is None or len(every) < 2:
        yield
        return
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, every)
    try:
        yield
    finally:
        cpu = _pinned  # apply() may have run meanwhile (a reload)
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, every if cpu is None else frozenset({cpu}))


def helper_cpus() -> frozenset[int] | None:
    """The CPUs for a helper process of the server (the delivery agent). While the
    server's threads keep to one CPU: another allowed one, so that the two run side by
    side instead of taking turns (the same one when there is no other); otherwise every
    CPU the server was allowed. None before `apply` ran: the helper keeps what it
    inherits."""
    with _lock:
        if _allowed is None:
            return None
        if _pinned is None:
            return _allowed
        others = _allowed - {_pinned}
        return frozenset({min(others)}) if others else frozenset({_pinned})


def keep_process_on(cpus: frozenset[int]) -> None:
    """Keep the calling process (a helper, before it starts threads) on `cpus`."""
    if hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
