"""Named points in the write paths where a test can stop or fail the store.

Crash tests run the store in a child process with ``MAILHOST_STORE_PAUSE_AT=<point>``
(and optionally ``MAILHOST_STORE_PAUSE_SKIP=<n>`` to pass the point n times first). When the
child reaches the point it writes ``PAUSED <point>`` to its standard output and waits for
the SIGKILL the parent sends, so the kill lands exactly there without any timing guesses.
In-process tests install a hook with `set_hook` (for example one that raises OSError) to
check that a failure at that step leaves nothing half-visible.

Outside tests the environment variables are unset, no hook is installed, and `reached`
costs one global lookup.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

PAUSE_ENV = "MAILHOST_STORE_PAUSE_AT"
PAUSE_SKIP_ENV = "MAILHOST_STORE_PAUSE_SKIP"

# Every point, in the order a delivery (and a compaction) passes them. Tests sweep this.
POINTS: tuple[str, ...] = (
    "deliver.tmp_written",
    "index.linked",
    "index.dir_synced",
    "index.cache_written",
    "journal.torn",
    "journal.written",
    "journal.synced",
    "index.committed",
    "compact.snapshot_written",
    "compact.snapshot_renamed",
    "compact.journal_reset",
    "flags.renamed",
    "expunge.unlinked",
)

_pause_at = os.environ.get(PAUSE_ENV) or None
_pause_skip = int(os.environ.get(PAUSE_SKIP_ENV, "0") or 0)
_hook: Callable[[str], None] | None = None
active = _pause_at is not None


def set_hook(hook: Callable[[str], None] | None) -> None:
    """Install (or remove, with None) a function called at every fault point."""
    global _hook, active
    _hook = hook
    active = _hook is not None or _pause_at is not None


def reached(point: str) -> None:
    global _pause_skip
    if not active:
        return
    if _hook is not None:
        _hook(point)
    if point == _pause_at:
        if _pause_skip > 0:
            _pause_skip -= 1
            return
        os.write(1, f"PAUSED {point}\n".encode())
        while True:  # the parent's SIGKILL ends this
            signal.pause()
