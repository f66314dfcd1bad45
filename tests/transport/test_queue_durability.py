"""The spool on disk: what enqueue writes, what a scan accepts, and what it quarantines
(reliability items a.1, D.6 and 26)."""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.clock import FixedClock
from transport.envelope import (
    MAX_ADDRESS,
    MAX_AUTH_IDENTITY,
    MAX_ENVID,
    MAX_RECIPIENTS,
    BodyType,
    CorruptEntry,
    DsnReturn,
    InvalidEnvelope,
    Notify,
    OriginalRecipient,
    QueueEntry,
    ReceivedHop,
    RecipientSpec,
)
from transport.queue import MAX_ENVELOPE_FILE, STALE_AGE, Queue, QueueError, is_queue_id

MESSAGE = b"Subject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    q = Queue(tmp_path / "queue", clock=FixedClock(1_700_000_000.0))
    q.open()
    return q


def reopen(queue: Queue) -> tuple[Queue, object]:
    again = Queue(queue.folder, clock=queue.clock)
    return again, again.open()


def add(queue: Queue, **kw: object) -> QueueEntry:
    return queue.enqueue(
        MESSAGE, sender="a@local.test", recipients=[RecipientSpec("b@remote.test")], **kw
    )  # type: ignore[arg-type]


def test_enqueue_publishes_message_and_envelope(queue: Queue) -> None:
    entry = queue.enqueue(
        MESSAGE,
        sender="a@local.test",
        recipients=[
            RecipientSpec(
                "b@remote.test",
                frozenset({Notify.SUCCESS, Notify.FAILURE}),
                OriginalRecipient("rfc822", "b@orig.test"),
            ),
            RecipientSpec("c@remote.test"),
        ],
        ret=DsnReturn.FULL,
        envid="ENV1",
        auth_identity="a@local.test",
        hop=ReceivedHop("client.test", "192.0.2.1", "mail.local.test"),
        body=BodyType.EIGHT_BIT_MIME,
        smtputf8=True,
    )
    assert is_queue_id(entry.id)
    assert (queue.folder / "msg" / entry.id).read_bytes() == MESSAGE
    assert (queue.folder / "env" / entry.id).stat().st_mode & 0o777 == 0o600
    assert list((queue.folder / "tmp").iterdir()) == []
    again, report = reopen(queue)
    assert report.loaded == 1 and report.quarantined == ()
    assert again.get(entry.id) == entry
    assert again.read_message(entry.id) == MESSAGE


def test_enqueue_links_a_spooled_file(queue: Queue, tmp_path: Path) -> None:
    spooled = tmp_path / "spooled"
    spooled.write_bytes(MESSAGE)
    entry = queue.enqueue(spooled, sender=None, recipients=[RecipientSpec("b@remote.test")])
    assert entry.size == len(MESSAGE)
    assert os.path.samefile(spooled, queue.folder / "msg" / entry.id)


def test_enqueue_refuses_a_symlink(queue: Queue, tmp_path: Path) -> None:
    (tmp_path / "target").write_bytes(MESSAGE)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(QueueError):
        queue.enqueue(tmp_path / "link", sender=None, recipients=[RecipientSpec("b@remote.test")])
    assert list((queue.folder / "msg").iterdir()) == []


def test_failed_publish_leaves_nothing(queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(QueueError, match="No space left"):
        add(queue)
    monkeypatch.undo()
    for folder in ("msg", "env", "tmp"):
        assert list((queue.folder / folder).iterdir()) == []
    assert queue.statistics().messages == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender", "a@b\r\nRCPT TO:<c@d>"),
        ("sender", "a\x00@b"),
        ("sender", "x" * MAX_ADDRESS + "@b"),
        ("envid", "e\nX"),
        ("envid", "e" * (MAX_ENVID + 1)),
        ("auth_identity", "a\r\n"),
        ("auth_identity", "a" * (MAX_AUTH_IDENTITY + 1)),
    ],
)
def test_envelope_values_with_controls_or_too_long_are_refused(
    queue: Queue, field: str, value: str
) -> None:
    kw: dict[str, object] = {"sender": "a@local.test", field: value}
    with pytest.raises(InvalidEnvelope):
        queue.enqueue(MESSAGE, recipients=[RecipientSpec("b@remote.test")], **kw)  # type: ignore[arg-type]
    assert list((queue.folder / "msg").iterdir()) == []


def test_recipient_limits(queue: Queue) -> None:
    with pytest.raises(InvalidEnvelope):
        RecipientSpec("b@remote.test\r\nDATA")
    with pytest.raises(InvalidEnvelope):
        RecipientSpec("b@remote.test", frozenset({Notify.NEVER, Notify.SUCCESS}))
    with pytest.raises(InvalidEnvelope):
        RecipientSpec("b@remote.test", orcpt=OriginalRecipient("rfc822", "x\ny"))
    many = [RecipientSpec(f"r{i}@remote.test") for i in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(InvalidEnvelope):
        queue.enqueue(MESSAGE, sender=None, recipients=many)
    assert queue.enqueue(MESSAGE, sender=None, recipients=many[:-1]).size == len(MESSAGE)


def _envelope_bytes(record: object) -> bytes:
    payload = msgpack.packb(record, use_bin_type=True)
    return (
        struct.pack(">4sI", b"MHQ\x01", len(payload))
        + payload
        + struct.pack(">I", zlib.crc32(payload))
    )


def test_torn_and_foreign_files_are_quarantined(queue: Queue) -> None:
    good = add(queue)
    env = queue.folder / "env"
    msg = queue.folder / "msg"
    damaged = {}
    for name, mutate in {
        "truncated": lambda b: b[: len(b) // 2],
        "garbage": lambda b: os.urandom(len(b)),
        "empty": lambda b: b"",
        "flipped": lambda b: b[:-6] + bytes([b[-6] ^ 1]) + b[-5:],
    }.items():
        entry = add(queue)
        path = env / entry.id
        path.write_bytes(mutate(path.read_bytes()))
        damaged[name] = entry.id
    missing = add(queue)
    (msg / missing.id).unlink()
    resized = add(queue)
    (msg / resized.id).write_bytes(MESSAGE + b"more")
    future = add(queue)
    record = future.to_record()
    record["v"] = 99
    (env / future.id).write_bytes(_envelope_bytes(record))
    wrong_types = add(queue)
    record = wrong_types.to_record()
    record["rcpts"] = "nobody"
    (env / wrong_types.id).write_bytes(_envelope_bytes(record))
    (env / "not-an-id").write_bytes(b"x")
    (env / "ABCDEF0123456789").symlink_to("/etc/passwd")
    (msg / "0123456789ABCDEF").symlink_to("/etc/passwd")
    huge = add(queue)
    with (env / huge.id).open("r+b") as f:
        f.truncate(MAX_ENVELOPE_FILE + 1)

    again, report = reopen(queue)
    bad = {*damaged.values(), missing.id, resized.id, future.id, wrong_types.id, huge.id}
    assert set(report.quarantined) == bad | {"not-an-id", "ABCDEF0123456789", "0123456789ABCDEF"}
    assert again.ids() == [good.id]
    assert sorted(os.listdir(env)) == [good.id]
    corrupt = os.listdir(queue.folder / "corrupt")
    assert len(corrupt) >= len(bad)
    assert Path("/etc/passwd").exists()  # the symlinks were moved, never followed


def test_stale_leftovers_are_removed(queue: Queue) -> None:
    entry = add(queue)
    old = time.time() - STALE_AGE - 10
    tmp_file = queue.folder / "tmp" / "X.123.abc"
    tmp_file.write_bytes(b"half an envelope")
    fresh_tmp = queue.folder / "tmp" / "Y.123.abc"
    fresh_tmp.write_bytes(b"being written")
    orphan = queue.folder / "msg" / "00000000000000AA"
    orphan.write_bytes(MESSAGE)  # an enqueue that died before publishing its envelope
    young_orphan = queue.folder / "msg" / "00000000000000BB"
    young_orphan.write_bytes(MESSAGE)  # maybe an enqueue still under way
    for path in (tmp_file, orphan):
        os.utime(path, (old, old))
    again, report = reopen(queue)
    assert report.removed == 2
    assert not tmp_file.exists() and not orphan.exists()
    assert fresh_tmp.exists() and young_orphan.exists()
    assert again.ids() == [entry.id]


addresses = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(min_size=1, max_size=20),
    st.text(min_size=1, max_size=20),
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sender=st.none() | addresses,
    rcpt=addresses,
    envid=st.none() | st.text(max_size=30),
    orcpt=st.none() | st.text(min_size=1, max_size=30),
    auth=st.none() | st.text(max_size=30),
)
def test_any_text_round_trips_or_is_refused(
    queue: Queue,
    sender: str | None,
    rcpt: str,
    envid: str | None,
    orcpt: str | None,
    auth: str | None,
) -> None:
    """Item 26: arbitrary values either round-trip exactly or are refused cleanly."""
    try:
        spec = RecipientSpec(
            rcpt, orcpt=None if orcpt is None else OriginalRecipient("rfc822", orcpt)
        )
        entry = queue.enqueue(
            MESSAGE, sender=sender, recipients=[spec], envid=envid, auth_identity=auth
        )
    except InvalidEnvelope:
        return
    again, report = reopen(queue)
    assert report.quarantined == ()
    assert again.get(entry.id) == entry
    queue.remove(entry.id)


def test_corrupt_entry_error_for_bad_records() -> None:
    with pytest.raises(CorruptEntry):
        QueueEntry.from_record({"v": 1})
    with pytest.raises(CorruptEntry):
        QueueEntry.from_record([1, 2, 3])
