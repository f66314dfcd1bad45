"""DirectoryRouting answers the hub from memory until the directory changes: a change
by another process (the CLI), by another thread of this one, or through this very
connection applies to the next lookup; the memory it keeps is bounded."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mailhost import lookups
from mailhost.directory import Directory, DomainType
from mailhost.lookups import DirectoryRouting
from transport.hub import DomainKind


@pytest.fixture(autouse=True)
def every_lookup_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups here follow each other within microseconds; each asks for the version."""
    monkeypatch.setattr(lookups, "VERSION_RECHECK_SECONDS", 0.0)


@pytest.fixture
def directory(tmp_path: Path) -> Directory:
    d = Directory(tmp_path / "directory.sqlite3")
    d.add_domain("example.test")
    return d


def test_changes_by_another_process_apply_at_the_next_lookup(
    directory: Directory, tmp_path: Path
) -> None:
    routing = DirectoryRouting(directory)
    assert routing.local_recipient("ann@example.test") is None
    assert routing.domain_kind("other.test") is None
    cli = Directory(tmp_path / "directory.sqlite3")  # another connection, as the CLI has
    cli.add_user("ann@example.test", password="correct horse battery staple")
    cli.add_domain("other.test", DomainType.INTERNAL_RELAY)
    found = routing.local_recipient("ann@example.test")
    assert found is not None and found.owner == "ann@example.test"
    assert routing.domain_kind("other.test") is DomainKind.INTERNAL_RELAY
    cli.remove_user("ann@example.test")
    assert routing.local_recipient("ann@example.test") is None
    cli.close()


def test_a_change_through_the_same_connection_applies_too(directory: Directory) -> None:
    routing = DirectoryRouting(directory)
    assert routing.domain_kind("late.test") is None
    directory.add_domain("late.test")  # this thread's connection: no data_version change
    assert routing.domain_kind("late.test") is DomainKind.AUTHORITATIVE


def test_each_thread_has_its_own_answers(directory: Directory, tmp_path: Path) -> None:
    routing = DirectoryRouting(directory)
    assert routing.domain_kind("example.test") is DomainKind.AUTHORITATIVE
    seen: list[DomainKind | None] = []
    thread = threading.Thread(target=lambda: seen.append(routing.domain_kind("example.test")))
    thread.start()
    thread.join()
    assert seen == [DomainKind.AUTHORITATIVE]


def test_the_cache_is_bounded(directory: Directory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lookups, "ROUTING_CACHE_ENTRIES", 5)
    routing = DirectoryRouting(directory)
    for n in range(12):  # a harvester trying addresses
        assert routing.local_recipient(f"guess{n}@example.test") is None
        assert len(routing._local.cache) <= 5


def test_the_lookups_of_one_recipient_ask_for_the_version_once(
    directory: Directory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lookups, "VERSION_RECHECK_SECONDS", 60.0)
    asked: list[object] = []
    real = directory.data_version
    monkeypatch.setattr(directory, "data_version", lambda: asked.append(1) or real())
    routing = DirectoryRouting(directory)
    assert routing.domain_kind("example.test") is DomainKind.AUTHORITATIVE
    assert routing.local_recipient("nobody@example.test") is None
    assert len(asked) == 1
    monkeypatch.setattr(lookups, "VERSION_RECHECK_SECONDS", 0.0)
    assert routing.local_recipient("nobody@example.test") is None
    assert len(asked) == 2
