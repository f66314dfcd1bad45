"""Quota: persisted per mailbox, tracked incrementally, checked at delivery/append/copy."""

from __future__ import annotations

import pytest
from store_testkit import message, reopen

from store import QuotaExceeded, Store


def test_quota_is_enforced_and_reported(store: Store) -> None:
    mailbox = store.open_mailbox("alice")
    size = len(message(1))
    assert mailbox.quota().limit is None
    mailbox.set_quota(size * 3)
    for n in range(3):
        assert store.deliver(message(n), ["alice"])[0].ok
    [over] = store.deliver(message(9), ["alice"])
    assert isinstance(over.error, QuotaExceeded)
    assert over.error.limit == size * 3 and over.error.usage == size * 3
    with pytest.raises(QuotaExceeded):
        mailbox.folder("Drafts").append(message(10))
    with pytest.raises(QuotaExceeded):
        mailbox.inbox.copy_to([1], mailbox.folder("Archive"))
    moved = mailbox.inbox.move_to([1], mailbox.folder("Archive"))  # moves do not grow usage
    assert moved.mapping == ((1, 1),)
    assert mailbox.quota().usage == size * 3
    mailbox.folder("Archive").expunge([1])
    assert mailbox.quota().usage == size * 2
    assert store.deliver(message(5), ["alice"])[0].ok
    other = reopen(store)
    quota = other.open_mailbox("alice").quota()
    assert quota.limit == size * 3 and quota.usage == size * 3 and not quota.exceeded
    other.close()
    mailbox.set_quota(None)
    assert store.deliver(message(6), ["alice"])[0].ok


def test_pim_items_count_too(store: Store) -> None:
    mailbox = store.open_mailbox("alice")
    mailbox.folder("Notes").add_item("remember the milk", subject="milk")
    assert mailbox.quota().usage > 0
    mailbox.set_quota(mailbox.quota().usage)
    with pytest.raises(QuotaExceeded):
        mailbox.folder("Notes").add_item("and the bread", subject="bread")
