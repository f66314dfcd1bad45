"""Fixtures for the store tests: a fresh store root per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import FixedClock, Mailbox, Store


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(1_700_000_000.0)


@pytest.fixture
def store(tmp_path: Path, clock: FixedClock) -> Iterator[Store]:
    s = Store(tmp_path / "data", clock=clock, hostname="test.example")
    yield s
    s.close()


@pytest.fixture
def mailbox(store: Store) -> Mailbox:
    return store.open_mailbox("alice")
