"""Model-based test: random deliveries, flags, copies, moves, expunges and reopens.

A plain dict model of each folder (UID -> (content, flags)) runs beside the store; after
every step the store's snapshot, flags and message bytes must match it, and UIDs must only
ever grow (never reused, even across reopen and a second "process" writing).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from store import Flag, FlagMode, Store

FOLDERS = ("Inbox", "Archive", "Drafts")
FLAG_SETS = st.frozensets(st.sampled_from(list(Flag)), max_size=3)
PICKS = st.lists(st.integers(min_value=0, max_value=50), max_size=4)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.store = Store(self.tmp, fsync=False, journal_compact_bytes=2048)
        self.model: dict[str, dict[int, tuple[int, frozenset[Flag]]]] = {f: {} for f in FOLDERS}
        self.highest: dict[str, int] = dict.fromkeys(FOLDERS, 0)
        self.counter = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _folder(self, name: str):  # type: ignore[no-untyped-def]
        return self.store.open_mailbox("m").folder(name)

    def _content(self) -> tuple[int, bytes]:
        self.counter += 1
        return self.counter, f"Subject: {self.counter}\r\n\r\nbody {self.counter}\r\n".encode()

    def _pick(self, folder: str, picks: list[int]) -> list[int]:
        uids = sorted(self.model[folder])
        return sorted({uids[p % len(uids)] for p in picks}) if uids else []

    def _new_uid(self, folder: str, uid: int) -> None:
        assert uid > self.highest[folder], f"UID {uid} reused in {folder}"
        self.highest[folder] = uid

    @rule(flags=FLAG_SETS)
    def deliver(self, flags: frozenset[Flag]) -> None:
        number, data = self._content()
        [result] = self.store.deliver(data, ["m"], flags=flags)
        assert result.ok and result.uid is not None
        self._new_uid("Inbox", result.uid)
        self.model["Inbox"][result.uid] = (number, flags)

    @rule(folder=st.sampled_from(FOLDERS), flags=FLAG_SETS)
    def append(self, folder: str, flags: frozenset[Flag]) -> None:
        number, data = self._content()
        result = self._folder(folder).append(data, flags=flags)
        self._new_uid(folder, result.uid)
        self.model[folder][result.uid] = (number, flags)

    @rule(
        folder=st.sampled_from(FOLDERS),
        picks=PICKS,
        mode=st.sampled_from(list(FlagMode)),
        flags=FLAG_SETS,
    )
    def store_flags(
        self, folder: str, picks: list[int], mode: FlagMode, flags: frozenset[Flag]
    ) -> None:
        uids = self._pick(folder, picks)
        self._folder(folder).store_flags(uids, mode, flags)
        for uid in uids:
            number, old = self.model[folder][uid]
            new = (
                old | flags
                if mode is FlagMode.ADD
                else old - flags
                if mode is FlagMode.REMOVE
                else flags
            )
            self.model[folder][uid] = (number, new)

    @rule(folder=st.sampled_from(FOLDERS), picks=PICKS)
    def expunge(self, folder: str, picks: list[int]) -> None:
        uids = self._pick(folder, picks)
        result = self._folder(folder).expunge(uids)
        assert list(result.uids) == uids
        for uid in uids:
            del self.model[folder][uid]

    @rule(
        src=st.sampled_from(FOLDERS), dst=st.sampled_from(FOLDERS), picks=PICKS, move=st.booleans()
    )
    def copy_or_move(self, src: str, dst: str, picks: list[int], move: bool) -> None:
        uids = self._pick(src, picks)
        source, target = self._folder(src), self._folder(dst)
        result = source.move_to(uids, target) if move else source.copy_to(uids, target)
        assert list(result.source_uids) == uids
        copied = [self.model[src][uid] for uid in uids]
        if move:
            for uid in uids:
                del self.model[src][uid]
        for (_, new_uid), entry in zip(result.mapping, copied, strict=True):
            self._new_uid(dst, new_uid)
            self.model[dst][new_uid] = entry

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store(self.tmp, fsync=False, journal_compact_bytes=2048)

    @rule()
    def other_process_delivers(self) -> None:
        other = Store(self.tmp, fsync=False, journal_compact_bytes=2048)
        number, data = self._content()
        [result] = other.deliver(data, ["m"])
        other.close()
        assert result.uid is not None
        self._new_uid("Inbox", result.uid)
        self.model["Inbox"][result.uid] = (number, frozenset())

    @precondition(lambda self: self.counter > 0)
    @invariant()
    def matches_model(self) -> None:
        for name in FOLDERS:
            folder = self._folder(name)
            snap = folder.snapshot()
            assert list(snap.uids) == sorted(self.model[name])
            for uid, (number, flags) in self.model[name].items():
                assert snap.flags(uid) == flags
                assert folder.read_message(uid).endswith(f"body {number}\r\n".encode())
            assert snap.uidnext > self.highest[name]
            status = folder.status()
            assert status.messages == len(self.model[name])
            assert status.unseen == sum(
                1 for _, f in self.model[name].values() if Flag.SEEN not in f
            )


TestStoreModel = StoreMachine.TestCase
TestStoreModel.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)
