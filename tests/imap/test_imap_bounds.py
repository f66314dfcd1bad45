"""The bounds on what IMAP keeps and sends: \\Recent claims, FETCH chunks, output writes.

* :class:`RecentClaims` remembers at most ``limit`` folders (least recently used forgotten
  first); an eviction bumps the epoch and moves the cutoff so that no UID is recent to two
  sessions, and DELETE forgets the folder's claim.
* FETCH renders at most MAX_RENDER_BYTES of message content per worker-thread call (planned
  from the sizes), and literals of SEND_AS_IS_BYTES or more leave as pieces of their own.
* :meth:`ImapSession.flush` joins small pieces into writes of up to FLUSH_AT and writes
  large ones as they are; an IDLE update to a client that stopped reading ends the session
  after IDLE_UPDATE_TIMEOUT instead of holding its shielded send for SEND_TIMEOUT.

Three tiers: the pieces on their own; the real session over trio's in-memory streams; the
real session behind a listener on 127.0.0.1 port 0, driven by Python's imaplib.
"""

from __future__ import annotations

import base64
import dataclasses
import imaplib
import random
import re
import time
from array import array
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from imap_e2e_support import fetch_items
from imap_session_kit import (
    PASSWORD,
    ImapClient,
    SessionWorld,
    connection_info,
    message,
)

from protocols.imap import messages
from protocols.imap import responses as r
from protocols.imap.commands import FetchCommand
from protocols.imap.mailboxes import recent_baseline
from protocols.imap.parser import ParseContext, parse_command
from protocols.imap.selected import SelectedFolder, ViewOptions
from protocols.imap.session import FLUSH_AT, ImapSession
from protocols.imap.settings import IDLE_UPDATE_TIMEOUT, SEND_AS_IS_BYTES, SEND_TIMEOUT
from protocols.imap.shared import MAX_RECENT_CLAIMS, Claim, FolderKey, ImapShared, RecentClaims
from store import Folder, FolderSnapshot

MiB = 1024 * 1024


class ManualClock:
    """The wall clock RecentClaims is given (seconds since the epoch); moves when told."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- RecentClaims ------------------------------------------------------------------------

A: FolderKey = ("alice", "folder-a", 7)
B: FolderKey = ("alice", "folder-b", 7)
C: FolderKey = ("bob", "folder-a", 7)  # same folder id, another mailbox: another folder


def test_the_default_limit_is_the_named_constant() -> None:
    assert RecentClaims(0.0).limit == MAX_RECENT_CLAIMS
    assert ImapShared(started=0.0, metadata_cache_bytes=1024).recent.limit == MAX_RECENT_CLAIMS


def test_crossing_the_limit_forgets_the_least_recent_folder() -> None:
    clock = ManualClock(1_000.0)
    claims = RecentClaims(500.0, limit=2, clock=clock)
    assert (claims.epoch, claims.cutoff_ms, len(claims)) == (0, 500_000, 0)
    assert claims.claim(A, 3, 0, 0) == Claim((1, 3), 0)
    assert claims.claim(B, 2, 0, 0) == Claim((1, 2), 0)
    # A claim that takes nothing still counts as a use: B is now the least recent.
    assert claims.claim(A, 3, 0, 0) == Claim(None, 0)
    clock.now = 1_002.5
    assert claims.claim(C, 5, 0, 0) == Claim((1, 5), 1)
    assert len(claims) == 2
    assert claims.epoch == 1
    assert claims.cutoff_ms == 1_002_500  # the eviction's time, from the injected clock
    assert not claims.known(B) and claims.last_claim(B) is None
    assert claims.last_claim(A) == 3 and claims.last_claim(C) == 5
    # A folder with a claim goes on from it whatever epoch the caller knew.
    assert claims.claim(A, 4, 3, 0) == Claim((4, 4), 1)
    clock.now = 1_003.0
    assert claims.claim(B, 9, 2, 1) == Claim((3, 9), 2)  # C was the least recent now
    assert not claims.known(C) and claims.cutoff_ms == 1_003_000
    assert len(claims) == 2


def test_cutoff_is_the_process_start_until_an_eviction() -> None:
    claims = RecentClaims(2_000.0, limit=1, clock=ManualClock(1_000.0))
    assert claims.cutoff_ms == 2_000_000
    claims.claim(A, 1, 0, 0)
    claims.claim(B, 1, 0, 0)  # evicts A at 1_000 s, before the start: the start stays
    assert claims.epoch == 1
    assert claims.cutoff_ms == 2_000_000


def test_a_claim_that_takes_nothing_keeps_no_entry() -> None:
    claims = RecentClaims(0.0, limit=2)
    assert claims.claim(A, 5, 5, 0) == Claim(None, 0)
    assert claims.claim(B, 0, 0, 0) == Claim(None, 0)
    assert len(claims) == 0 and not claims.known(A)


def test_a_stale_epoch_for_a_folder_without_entry_is_refused() -> None:
    clock = ManualClock(10.0)
    claims = RecentClaims(0.0, limit=1, clock=clock)
    assert claims.claim(A, 4, 0, 0) == Claim((1, 4), 0)
    assert claims.claim(B, 1, 0, 0) == Claim((1, 1), 1)  # evicts A
    # A session that selected A in epoch 0 (its baseline 4) learns of UID 5: the claims
    # it knew of are gone, so it may not claim; nor ever again in this selection (-1).
    assert claims.claim(A, 5, 4, 0) == Claim(None, -1)
    assert claims.claim(A, 6, 5, -1) == Claim(None, -1)
    assert not claims.known(A) and len(claims) == 1
    # A session with a baseline of the current epoch may.
    assert claims.claim(A, 6, 5, 1) == Claim((6, 6), 2)


def test_a_new_uidvalidity_replaces_the_folders_entry() -> None:
    claims = RecentClaims(0.0, limit=5)
    assert claims.claim(A, 9, 0, 0) == Claim((1, 9), 0)
    renewed: FolderKey = (A[0], A[1], A[2] + 1)
    assert claims.known(A) and not claims.known(renewed)
    assert claims.last_claim(renewed) is None
    assert claims.claim(renewed, 2, 0, 0) == Claim((1, 2), 0)
    assert len(claims) == 1  # one entry per folder
    assert claims.epoch == 0  # a replacement is no eviction
    assert not claims.known(A) and claims.last_claim(renewed) == 2
    # A session still on the older UIDVALIDITY cannot put its claim back in place of the
    # newer one (a later session would then claim the renewed UIDs a second time).
    assert claims.claim(A, 12, 9, 0) == Claim(None, -1)
    assert claims.last_claim(renewed) == 2


def test_forget_drops_the_folders_claim() -> None:
    claims = RecentClaims(0.0, limit=5)
    claims.claim(A, 3, 0, 0)
    claims.claim(B, 3, 0, 0)
    claims.forget(A[0], A[1])
    claims.forget("alice", "never-claimed")  # nothing to drop: no error
    assert len(claims) == 1 and not claims.known(A) and claims.known(B)
    assert claims.epoch == 0  # a deleted folder's ids are never used again


# The property: sessions select folders and learn of deliveries in any order, with the
# steps of a SELECT (read the epoch and the baseline, then claim) interleaved with other
# sessions' claims and evictions. The glue is what mailboxes._open and
# SelectedFolder.claim_recent do; the baseline comes from the real recent_baseline over a
# real FolderSnapshot, whose internal dates a client may have set (APPEND) to anything.
_FOLDERS = 3
_SESSIONS = 3
_T0 = 1_700_000_000  # s
_DATE_OFFSETS = (0, -86_400_000, 86_400_000 * 365)  # as delivered, old, far future (ms)

# (kind, session or folder, folder or date offset or milliseconds); SELECTs and deliveries
# weigh more, since a double claim needs a few of each between two evictions.
_KINDS = ("deliver", "deliver", "select", "select", "open", "claim", "sync", "tick", "delete")
_step = st.tuples(st.sampled_from(_KINDS), st.integers(0, 2), st.integers(0, 2))


def _snapshot(folder_id: str, saved: Sequence[int], dates: Sequence[int]) -> FolderSnapshot:
    n = len(saved)
    return FolderSnapshot(
        folder_id=folder_id,
        uidvalidity=1,
        uidnext=n + 1,
        highestmodseq=1,
        uids=array("Q", range(1, n + 1)),
        flags=array("B", bytes(n)),
        modseqs=array("Q", [1] * n),
        sizes=array("Q", [100] * n),
        dates=array("q", dates),
        keywords={},
        saved=array("q", saved),
    )


@dataclasses.dataclass
class _Folder:
    id: str
    saved: list[int] = dataclasses.field(default_factory=list)  # when each UID arrived (ms)
    dates: list[int] = dataclasses.field(default_factory=list)  # its internal date (ms)

    @property
    def key(self) -> FolderKey:
        return ("alice", self.id, 1)


@dataclasses.dataclass
class _View:
    """One session's selection, as SelectedFolder keeps it."""

    folder: _Folder
    max_uid: int
    epoch: int


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(limit=st.integers(1, 2), steps=st.lists(_step, max_size=40))
# Claimed, evicted in the same millisecond, selected again.
@example(
    1, [("deliver", 0, 0), ("select", 0, 0), ("deliver", 1, 0), ("select", 1, 1), ("select", 2, 0)]
)
# Claimed with an internal date after the eviction (APPEND sets it), evicted, selected again.
@example(
    1,
    [
        ("deliver", 0, 2),
        ("select", 0, 0),
        ("tick", 2, 0),
        ("deliver", 1, 0),
        ("select", 1, 1),
        ("select", 2, 0),
    ],
)
def test_no_uid_is_ever_claimed_twice(limit: int, steps: list[tuple[str, int, int]]) -> None:
    clock = ManualClock(float(_T0))
    claims = RecentClaims(float(_T0), limit=limit, clock=clock)
    generation = [0] * _FOLDERS  # a deleted folder comes back with a new id
    folders = [_Folder(f"f{i}.0") for i in range(_FOLDERS)]
    pending: dict[int, tuple[_Folder, int, int, int]] = {}  # SELECT read, not yet claimed
    views: dict[int, _View] = {}
    taken: dict[str, set[int]] = {}

    def open_(session: int, folder: _Folder) -> None:
        """mailboxes._open: the epoch first, then the baseline (0 with a claim)."""
        snap = _snapshot(folder.id, folder.saved, folder.dates)
        epoch = claims.epoch
        baseline = 0 if claims.known(folder.key) else recent_baseline(snap, claims.cutoff_ms)
        pending[session] = (folder, len(folder.saved), baseline, epoch)
        views.pop(session, None)

    def claim(folder: _Folder, top: int, baseline: int, epoch: int) -> int:
        got = claims.claim(folder.key, top, baseline, epoch)
        if got.uids is not None:
            lo, hi = got.uids
            assert 1 <= lo <= hi <= top
            uids = set(range(lo, hi + 1))
            already = taken.setdefault(folder.id, set())
            assert not uids & already, (folder.id, got, sorted(already))
            already |= uids
        return got.epoch

    def select(session: int) -> None:
        """select(): claim_recent(baseline, epoch) once the folder is open."""
        folder, top, baseline, epoch = pending.pop(session)
        if folder in folders:  # not deleted meanwhile
            views[session] = _View(folder, top, claim(folder, top, baseline, epoch))

    for kind, a, b in steps:
        if kind == "deliver":
            now_ms = int(clock.now * 1000)
            folders[a % _FOLDERS].saved.append(now_ms)
            folders[a % _FOLDERS].dates.append(now_ms + _DATE_OFFSETS[b])
        elif kind == "select":
            open_(a % _SESSIONS, folders[b % _FOLDERS])
            select(a % _SESSIONS)
        elif kind == "open":  # the first half of a SELECT; others act before the claim
            open_(a % _SESSIONS, folders[b % _FOLDERS])
        elif kind == "claim" and a % _SESSIONS in pending:
            select(a % _SESSIONS)
        elif kind == "sync" and a % _SESSIONS in views:  # SelectedFolder.apply: new UIDs
            view = views[a % _SESSIONS]
            top = len(view.folder.saved)
            if top > view.max_uid:
                view.epoch = claim(view.folder, top, view.max_uid, view.epoch)
                view.max_uid = top
        elif kind == "tick":
            clock.now += a / 1000
        elif kind == "delete":  # mailboxes.delete: the folder and its claim go
            a %= _FOLDERS
            gone = folders[a]
            claims.forget("alice", gone.id)
            generation[a] += 1
            folders[a] = _Folder(f"f{a}.{generation[a]}")
            views = {s: v for s, v in views.items() if v.folder is not gone}
        assert len(claims) <= claims.limit


# --- \Recent through real sessions ---------------------------------------------------------


async def test_eviction_never_makes_a_message_recent_to_a_second_session(
    world: SessionWorld,
) -> None:
    world.shared = ImapShared(started=0.0, metadata_cache_bytes=MiB, recent_claims=1)
    a = await world.connect()
    b = await world.connect()
    c = await world.connect()
    # A client may give APPEND any internal date, including one after the eviction below.
    data = message(1)
    await a.ok(b'APPEND INBOX "01-Jan-2099 00:00:00 +0000" {%d+}\r\n%s' % (len(data), data))
    assert b"* 1 RECENT\r\n" in await a.ok("SELECT INBOX")
    await trio.to_thread.run_sync(partial(world.deliver, message(2), "Archive"))
    assert b"* 1 RECENT\r\n" in await c.ok("SELECT Archive")  # forgets INBOX's claim
    claims = world.shared.recent
    assert (len(claims), claims.epoch) == (1, 1)
    # Deliver only once the wall clock is past the eviction's millisecond.
    deadline = time.monotonic() + 1
    while time.time() * 1000 <= claims.cutoff_ms + 1 and time.monotonic() < deadline:
        await trio.sleep(0.001)
    await trio.to_thread.run_sync(world.deliver, message(3))
    # a selected INBOX before the eviction: it may not claim UID 2 any more ...
    assert await a.ok("NOOP") == [b"* 2 EXISTS\r\n", b"* 1 RECENT\r\n"]
    assert await a.ok("SEARCH RECENT") == [b"* SEARCH 1\r\n"]
    # ... a session selecting it now gets UID 2, and not UID 1, which a already had.
    assert b"* 1 RECENT\r\n" in await b.ok("SELECT INBOX")
    assert await b.ok("SEARCH RECENT") == [b"* SEARCH 2\r\n"]


# --- end to end: the session behind a real listener, and imaplib ------------------------


@asynccontextmanager
async def imap_listener(world: SessionWorld) -> AsyncIterator[tuple[str, int]]:
    """serve_imap with the world's store and shared state on 127.0.0.1, port 0."""

    async def handler(stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()
        local = stream.socket.getsockname()
        info = dataclasses.replace(
            connection_info(tls=False, drain=world.drain),
            listener="imap",
            peer=(peer[0], peer[1]),
            local=(local[0], local[1]),
        )
        async with stream:
            await world.serve(stream, info)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        host, port = listeners[0].socket.getsockname()[:2]
        yield host, port
        nursery.cancel_scope.cancel()


def _imap_login(address: tuple[str, int]) -> imaplib.IMAP4:
    client = imaplib.IMAP4(*address, timeout=30)
    client.login("alice@example.test", PASSWORD)
    return client


def _deliver_all(world: SessionWorld, sent: list[bytes]) -> list[bytes]:
    """Deliver `sent` to the Inbox in order; returns it."""
    for raw in sent:
        world.deliver(raw)
    return sent


def _big_message(n: int, size: int, *, base64_body: bool = False) -> bytes:
    """A message of exactly ``size`` octets (about, with a base64 body) whose every line
    depends on ``n``."""
    head = (
        f"From: Bob Sender <bob@example.org>\r\n"
        f"To: Alice <alice@example.test>\r\n"
        f"Subject: big message {n}\r\n"
        f"Message-ID: <big{n}@example.org>\r\n"
        f"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    ).encode()
    if base64_body:
        head += b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
    head += b"\r\n"
    rng = random.Random(n)
    count = (size - len(head) - 2) // 78
    body = b"".join(base64.b64encode(rng.randbytes(57)) + b"\r\n" for _ in range(count))
    if not base64_body:
        body += b"x" * (size - len(head) - len(body) - 2) + b"\r\n"
    raw = head + body
    assert base64_body or len(raw) == size
    return raw


def _by_message(data: list[object]) -> dict[int, list[object]]:
    """imaplib FETCH data split per message: {sequence number: its pieces}."""
    out: dict[int, list[object]] = {}
    current: list[object] = []
    for piece in data:
        head = piece[0] if isinstance(piece, tuple) else piece
        assert isinstance(head, bytes)
        m = re.match(rb"(\d+) \(", head)
        if m is not None:
            current = out.setdefault(int(m.group(1)), [])
        current.append(piece)
    return out


async def test_fetch_over_more_than_the_render_bound_is_byte_exact_and_in_order(
    world: SessionWorld,
) -> None:
    sent = [_big_message(n, MiB) for n in range(1, 7)]
    assert sum(map(len, sent)) > messages.MAX_RENDER_BYTES
    for raw in sent:
        await trio.to_thread.run_sync(world.deliver, raw)

    def client(address: tuple[str, int]) -> list[tuple[bytes, bytes]]:
        imap = _imap_login(address)
        try:
            typ, _ = imap.select("INBOX", readonly=True)
            assert typ == "OK"
            typ, data = imap.fetch("1:*", "(BODY.PEEK[])")
            assert typ == "OK"
            return [piece for piece in data if isinstance(piece, tuple)]
        finally:
            imap.logout()

    async with imap_listener(world) as address:
        got = await trio.to_thread.run_sync(client, address)
    assert [head for head, _ in got] == [b"%d (BODY[] {%d}" % (n, MiB) for n in range(1, 7)]
    for (_, literal), raw in zip(got, sent, strict=True):
        assert literal == raw


async def test_fetch_mixing_partial_header_and_binary_items_on_large_messages(
    world: SessionWorld,
) -> None:
    plain_small = _big_message(1, 200 * 1024)
    plain_large = _big_message(2, 2 * MiB)
    encoded = _big_message(3, 600 * 1024, base64_body=True)
    for raw in (plain_small, plain_large, encoded):
        await trio.to_thread.run_sync(world.deliver, raw)

    def client(address: tuple[str, int]) -> tuple[list[object], list[object]]:
        imap = _imap_login(address)
        try:
            imap.select("INBOX")
            typ, data = imap.fetch(
                "1:*",
                "(UID BODY[]<0.100> BODY.PEEK[HEADER] BINARY.PEEK[] BODY.PEEK[TEXT] RFC822.SIZE)",
            )
            assert typ == "OK"
            typ, decoded = imap.fetch("3", "(BINARY.PEEK[1] BINARY.SIZE[1])")
            assert typ == "OK"
            return [*data], [*decoded]
        finally:
            imap.logout()

    async with imap_listener(world) as address:
        data, decoded = await trio.to_thread.run_sync(client, address)
    per_message = _by_message(data)
    assert sorted(per_message) == [1, 2, 3]
    for seq, raw in enumerate((plain_small, plain_large, encoded), start=1):
        items = fetch_items(per_message[seq])
        header, _, _ = raw.partition(b"\r\n\r\n")
        assert items[b"UID"] == b"%d" % seq
        assert items[b"BODY[]<0>"] == raw[:100]
        assert items[b"BODY[HEADER]"] == header + b"\r\n\r\n"
        assert items[b"BINARY[]"] == raw  # the whole message is not decoded
        assert items[b"BODY[TEXT]"] == raw[len(header) + 4 :]
        assert items[b"RFC822.SIZE"] == b"%d" % len(raw)
        assert b"\\Seen" in items[b"FLAGS"]  # set by BODY[]<0.100> (RFC 3501 6.4.5)
    binary = fetch_items(decoded)
    body = encoded.partition(b"\r\n\r\n")[2]
    assert binary[b"BINARY[1]"] == base64.b64decode(body)
    assert binary[b"BINARY.SIZE[1]"] == b"%d" % len(base64.b64decode(body))


async def test_delete_of_a_folder_drops_its_recent_claim(world: SessionWorld) -> None:
    claims = world.shared.recent
    async with imap_listener(world) as address:
        imap = await trio.to_thread.run_sync(_imap_login, address)
        try:
            assert (await trio.to_thread.run_sync(imap.create, "Lists"))[0] == "OK"
            await trio.to_thread.run_sync(partial(world.deliver, message(1), "Lists"))
            assert (await trio.to_thread.run_sync(imap.select, "Lists"))[0] == "OK"
            assert imap.response("RECENT")[1] == [b"1"]
            folder = world.store.open_mailbox("alice").folder("Lists")
            key: FolderKey = ("alice", folder.id, folder.snapshot().uidvalidity)
            assert claims.last_claim(key) == 1 and len(claims) == 1
            assert (await trio.to_thread.run_sync(imap.select, "INBOX"))[0] == "OK"
            assert len(claims) == 1  # an empty INBOX takes no entry
            assert (await trio.to_thread.run_sync(imap.delete, "Lists"))[0] == "OK"
            assert not claims.known(key) and len(claims) == 0
        finally:
            await trio.to_thread.run_sync(imap.logout)


# --- FETCH chunks, unit level: _FetchJob.render on a real store ------------------------


def _session(world: SessionWorld, stream: trio.abc.Stream) -> ImapSession:
    """The real session over ``stream``, not running: its parts are called directly."""
    return ImapSession(
        stream,
        connection_info(drain=world.drain),
        settings=world.settings,
        checker=world.checker,
        store=world.store,
        shared=world.shared,
    )


def _job(world: SessionWorld, folder: Folder, text: str) -> tuple[messages._FetchJob, list[int]]:
    """A FETCH plan as messages.fetch makes it, for an EXAMINEd folder (nothing is set)."""
    cmd = parse_command(b"t " + text.encode(), ParseContext())
    assert isinstance(cmd, FetchCommand)
    snap = folder.snapshot()
    key: FolderKey = ("alice", folder.id, snap.uidvalidity)
    sel = SelectedFolder(folder, "INBOX", key, snap, readonly=True)
    session = _session(world, trio.testing.memory_stream_pair()[1])
    job = messages._FetchJob(session, sel, cmd, ViewOptions())
    return job, messages.resolve_positions(sel, cmd.sequence, uid=cmd.uid)


def _render_all(job: messages._FetchJob, positions: list[int]) -> tuple[list[bytes], list[int]]:
    """Every chunk, as messages.fetch asks for them: (all output pieces, positions taken)."""
    out: list[bytes] = []
    taken: list[int] = []
    done = 0
    for _ in range(len(positions)):  # every chunk takes one position at least
        if done >= len(positions):
            break
        lines, n = job.render(positions, done)
        assert n >= 1
        out += lines
        taken.append(n)
        done += n
    assert done == len(positions)
    return out, taken


def _body_response(seq: int, raw: bytes) -> bytes:
    return r.fetch(seq, [(b"BODY[]", r.literal(raw))])


async def test_render_ends_a_chunk_before_the_message_that_passes_the_bound(
    world: SessionWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = [1000, 1000, 1000, 5000, 1000, 1000]
    sent = _deliver_all(world, [_big_message(n, size) for n, size in enumerate(sizes, start=1)])
    monkeypatch.setattr(messages, "MAX_RENDER_BYTES", 2500)
    inbox = world.store.open_mailbox("alice").inbox
    job, positions = _job(world, inbox, "FETCH 1:* (BODY.PEEK[])")
    out, taken = _render_all(job, positions)
    # 1+2 (a third would pass 2500), 3, 4 alone (larger than the bound), 5+6.
    assert taken == [2, 1, 1, 2]
    assert out == [_body_response(n, raw) for n, raw in enumerate(sent, start=1)]
    assert not job.expunged
    # What is bounded is the content each item returns: headers and partials are small.
    for items in ("BODY.PEEK[HEADER]", "BODY.PEEK[]<0.100>", "BINARY.SIZE[] FLAGS UID"):
        job, positions = _job(world, inbox, f"FETCH 1:* ({items})")
        assert _render_all(job, positions)[1] == [6], items
    # Two items count twice: every message is a chunk of its own.
    job, positions = _job(world, inbox, "FETCH 1:* (BODY.PEEK[] BODY.PEEK[TEXT])")
    assert _render_all(job, positions)[1] == [1] * 6


async def test_render_with_changedsince_bounds_only_the_changed_messages(
    world: SessionWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _deliver_all(world, [_big_message(n, 1000) for n in range(1, 7)])
    monkeypatch.setattr(messages, "MAX_RENDER_BYTES", 2500)
    a = await world.connect()
    await a.ok("SELECT INBOX")
    lines = await a.ok("FETCH 1:* (MODSEQ)")
    modseq = max(int(re.findall(rb"MODSEQ \((\d+)\)", x)[0]) for x in lines)
    await a.ok("STORE 2,3,5 +FLAGS.SILENT (\\Flagged)")
    lines = await a.ok(f"UID FETCH 1:* (BODY.PEEK[]) (CHANGEDSINCE {modseq})")
    heads = [re.findall(rb"^\* (\d+) FETCH \(UID (\d+) ", x) for x in lines]
    assert heads == [[(b"%d" % n, b"%d" % n)] for n in (2, 3, 5)]
    for line, n in zip(lines, (2, 3, 5), strict=True):
        assert sent[n - 1] in line and b"MODSEQ (" in line
    # The whole folder through the session, in chunks of two: all of it, in order.
    lines = await a.ok("FETCH 1:* (BODY.PEEK[])")
    assert lines == [_body_response(n, raw) for n, raw in enumerate(sent, start=1)]


async def test_messages_expunged_between_chunks_are_left_out(
    world: SessionWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _deliver_all(world, [_big_message(n, 1000) for n in range(1, 5)])
    monkeypatch.setattr(messages, "MAX_RENDER_BYTES", 1500)
    inbox = world.store.open_mailbox("alice").inbox
    # HEADER needs the metadata, read for the whole span once and kept for the next chunk.
    job, positions = _job(world, inbox, "UID FETCH 1:* (BODY.PEEK[HEADER] BODY.PEEK[])")
    lines, taken = job.render(positions, 0)
    assert taken == 1 and len(lines) == 1 and lines[0].startswith(b"* 1 FETCH (UID 1 ")
    inbox.expunge([2, 3])
    out: list[bytes] = []
    done = taken
    for _ in range(len(positions)):
        if done >= len(positions):
            break
        chunk, taken = job.render(positions, done)
        out += chunk
        done += taken
    assert job.expunged
    assert len(out) == 1 and out[0].startswith(b"* 4 FETCH (UID 4 BODY[HEADER] {")
    assert out[0].endswith(b"BODY[] {1000}\r\n" + sent[3] + b")\r\n")


_WHOLE_FETCHES = (
    "UID FETCH 1:* (FLAGS BODY.PEEK[] RFC822.SIZE)",
    "FETCH 1:* (BINARY.PEEK[] UID BODY.PEEK[])",
    "FETCH 1:* (RFC822 INTERNALDATE ENVELOPE MODSEQ)",
    "FETCH 1:* (BODY.PEEK[] BODY.PEEK[] SAVEDATE)",
    "UID FETCH 2:* (BODY.PEEK[]) (CHANGEDSINCE 1)",
)


def _whole_messages(world: SessionWorld) -> list[bytes]:
    """Small and large (SEND_AS_IS_BYTES) messages, one with a NUL (literal8 in BINARY[])."""
    sent = [
        message(1),
        _big_message(2, SEND_AS_IS_BYTES),
        message(3, body="nul \x00 inside"),
        _big_message(4, 3 * SEND_AS_IS_BYTES + 7),
    ]
    return _deliver_all(world, sent)


@pytest.mark.parametrize("text", _WHOLE_FETCHES)
async def test_whole_message_fast_path_answers_as_the_general_path(
    world: SessionWorld, text: str
) -> None:
    _whole_messages(world)
    inbox = world.store.open_mailbox("alice").inbox
    fast, positions = _job(world, inbox, text)
    assert fast.index_plan is not None and fast.whole_items
    general, _ = _job(world, inbox, text)
    general.index_plan = None
    want, _ = _render_all(general, positions)
    got, _ = _render_all(fast, positions)
    assert b"".join(got) == b"".join(want)
    # Large literals leave as pieces of their own there too.
    assert [len(x) for x in got if len(x) >= SEND_AS_IS_BYTES] == [
        len(x) for x in want if len(x) >= SEND_AS_IS_BYTES
    ]
    if "BINARY" in text:
        assert b"BINARY[] ~{" in b"".join(got)


async def test_whole_message_fast_path_follows_renames_and_skips_expunged_messages(
    world: SessionWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _whole_messages(world)
    inbox = world.store.open_mailbox("alice").inbox
    job, positions = _job(world, inbox, "FETCH 1:* (UID BODY.PEEK[])")
    job.snapshot = inbox.snapshot()
    # Paths gone stale (another session's flag change renamed the files), and message 3
    # expunged after the snapshot: the store finds the others, 3 is left out.
    real = Folder.message_paths
    monkeypatch.setattr(
        Folder,
        "message_paths",
        lambda self, uids: {u: p + ".gone" for u, p in real(self, uids).items()},
    )
    inbox.expunge([3])
    out, _ = _render_all(job, positions)
    assert job.expunged
    text = b"".join(out)
    for n, raw in enumerate(sent, start=1):
        assert (raw in text) == (n != 3)
    assert b"* 3 FETCH" not in text


async def test_the_next_chunk_is_read_while_one_is_sent_and_no_further(
    world: SessionWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _deliver_all(world, [_big_message(n, 1000) for n in range(1, 7)])
    monkeypatch.setattr(messages, "MAX_RENDER_BYTES", 1500)  # one message per chunk
    monkeypatch.setattr("protocols.imap.session.FLUSH_AT", 1)  # every response is sent
    rendered: list[int] = []
    render = messages._FetchJob.render

    def counting(job: messages._FetchJob, positions: list[int], start: int) -> object:
        rendered.append(start)
        return render(job, positions, start)

    monkeypatch.setattr(messages._FetchJob, "render", counting)
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    world.nursery.start_soon(world.serve, server_stream)
    client = ImapClient(client_stream)
    assert (await client.read_line()).startswith(b"* OK")
    await client.ok(f"LOGIN alice@example.test {PASSWORD}")
    await client.ok("EXAMINE INBOX")
    await client.send(b"F FETCH 1:* (BODY.PEEK[])\r\n")
    # The client reads one octet of the first response and stops: the second chunk has
    # been rendered meanwhile, the third waits until the second is taken.
    assert await client_stream.receive_some(1) == b"*"
    await trio.testing.wait_all_tasks_blocked(0.05)
    assert rendered == [0, 1]
    lines, tagged = await client.until(b"F")
    assert b" OK" in tagged
    assert rendered == [0, 1, 2, 3, 4, 5]
    assert b"".join(lines).startswith(b" 1 FETCH (BODY[] {1000}\r\n" + sent[0])
    for n, raw in enumerate(sent[1:], start=2):
        assert _body_response(n, raw) in lines


async def test_large_literals_leave_as_pieces_of_their_own(world: SessionWorld) -> None:
    small = _big_message(1, SEND_AS_IS_BYTES - 1)
    large = _big_message(2, SEND_AS_IS_BYTES)
    _deliver_all(world, [small, large])
    inbox = world.store.open_mailbox("alice").inbox
    job, positions = _job(world, inbox, "FETCH 1:* (UID BODY.PEEK[] BODY.PEEK[]<0.10>)")
    out, _ = _render_all(job, positions)
    first = r.fetch(
        1, [(b"UID", b"1"), (b"BODY[]", r.literal(small)), (b"BODY[]<0>", b"{10}\r\n" + small[:10])]
    )
    second = [
        b"* 2 FETCH (UID 2 BODY[] {%d}\r\n" % len(large),
        large,
        b" BODY[]<0> {10}\r\n" + large[:10] + b")\r\n",
    ]
    assert out == [first, *second]


_names = st.sampled_from([b"UID", b"FLAGS", b"BODY[]", b"BODY[TEXT]", b"BINARY[1]", b"MODSEQ"])
_contents = st.binary(max_size=40)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    seq=st.integers(1, 10**6),
    items=st.lists(st.tuples(_names, _contents, st.booleans(), st.booleans()), max_size=6),
)
def test_pieces_are_the_fetch_response_with_literals_apart(
    seq: int, items: list[tuple[bytes, bytes, bool, bool]]
) -> None:
    inline: list[tuple[bytes, bytes]] = []
    with_prefixes: list[tuple[bytes, bytes]] = []
    apart: dict[int, bytes] = {}
    for index, (name, content, is_literal, binary) in enumerate(items):
        if is_literal:
            inline.append((name, r.literal(content, binary=binary)))
            with_prefixes.append((name, r.literal_prefix(content, binary=binary)))
            apart[index] = content
        else:
            value = b"(" + content.hex().encode() + b")"
            inline.append((name, value))
            with_prefixes.append((name, value))
    assume(apart)  # _pieces is only used with a literal apart
    pieces = messages._pieces(seq, with_prefixes, apart)
    assert b"".join(pieces) == r.fetch(seq, inline)
    # Each content is a piece of its own, not copied into a line.
    for content in apart.values():
        assert any(piece is content for piece in pieces)
    assert len(pieces) == 2 * len(apart) + 1


# --- output: flush ----------------------------------------------------------------------


async def test_flush_joins_small_pieces_and_writes_large_ones_as_they_are(
    world: SessionWorld,
) -> None:
    writes: list[bytes] = []

    async def record() -> None:
        data = send.get_data_nowait()
        writes.append(bytes(data))

    send = trio.testing.MemorySendStream(send_all_hook=record)
    s = _session(world, trio.StapledStream(send, trio.testing.MemoryReceiveStream()))
    large = b"L" * SEND_AS_IS_BYTES
    under = b"u" * (SEND_AS_IS_BYTES - 1)
    kib = [b"%04d" % i + b"k" * 1020 for i in range(300)]
    pieces = [b"* 1 FETCH (BODY[] {65536}\r\n", b"ab", large, b")\r\n", under, *kib]
    for piece in pieces:
        s.emit(piece)
    due = s.flush_due
    await s.flush()
    assert due and not s.flush_due
    # Up to the large piece; the large piece; then small ones up to FLUSH_AT; the rest.
    joined = len(b")\r\n") + len(under)
    k = -(-(FLUSH_AT - joined) // 1024)  # 1 KiB pieces until FLUSH_AT is reached
    assert writes == [
        b"* 1 FETCH (BODY[] {65536}\r\nab",
        large,
        b")\r\n" + under + b"".join(kib[:k]),
        b"".join(kib[k:]),
    ]
    assert all(len(w) < FLUSH_AT + 1024 for w in writes)
    await s.flush()  # nothing buffered: no write
    assert len(writes) == 4


async def test_flush_gives_up_after_its_deadline(
    world: SessionWorld, autojump_clock: trio.testing.MockClock
) -> None:
    _client, server = trio.testing.lockstep_stream_pair()  # the client never reads
    s = _session(world, server)
    s.emit(b"* 1 EXISTS\r\n")
    started = trio.current_time()
    with pytest.raises(trio.TooSlowError):
        await s.flush(1.5)
    assert trio.current_time() - started == pytest.approx(1.5)


# --- IDLE: an update the client does not read ------------------------------------------


async def _stalled_idle(world: SessionWorld) -> tuple[trio.abc.Stream, trio.Event]:
    """A session in IDLE over a lockstep stream (a send waits until the client reads)
    that has begun sending an update the client then stops reading."""
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    ended = trio.Event()

    async def serve() -> None:
        try:
            await world.serve(server_stream)
        finally:
            ended.set()

    world.nursery.start_soon(serve)
    client = ImapClient(client_stream)
    assert (await client.read_line()).startswith(b"* OK")
    await client.ok(f"LOGIN alice@example.test {PASSWORD}")
    await client.ok("SELECT INBOX")
    await client.send(b"I IDLE\r\n")
    assert (await client.read_line()).startswith(b"+ ")
    await trio.to_thread.run_sync(world.deliver, message(1))
    # One octet of "* 1 EXISTS": the update's send has begun, and waits for the rest.
    assert await client_stream.receive_some(1) == b"*"
    return client_stream, ended


async def test_idle_update_to_a_client_that_stopped_reading_ends_the_session(
    world: SessionWorld, mock_clock: trio.testing.MockClock
) -> None:
    # The clock stands still until the send is stuck (threads do the store work before).
    _client, ended = await _stalled_idle(world)
    started = trio.current_time()
    mock_clock.autojump_threshold = 0
    with trio.move_on_after(SEND_TIMEOUT / 2):
        await ended.wait()
    assert ended.is_set()
    assert trio.current_time() - started == pytest.approx(IDLE_UPDATE_TIMEOUT)


async def test_drain_during_a_stuck_idle_update_ends_the_session(
    world: SessionWorld, mock_clock: trio.testing.MockClock
) -> None:
    # The BYE cannot go out while the update is half sent (one writer per stream); the
    # session ends when the update's deadline passes, not SEND_TIMEOUT later.
    _client, ended = await _stalled_idle(world)
    started = trio.current_time()
    world.drain.start()
    mock_clock.autojump_threshold = 0
    with trio.move_on_after(SEND_TIMEOUT / 2):
        await ended.wait()
    assert ended.is_set()
    assert trio.current_time() - started == pytest.approx(IDLE_UPDATE_TIMEOUT)
