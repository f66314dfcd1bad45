"""The sync state files and the pure rules beside them (no server)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.activesync.mail import (
    conversation_index,
    eas_datetime,
    parse_eas_datetime,
    parse_file_reference,
    parse_server_id,
    truncate_utf8,
)
from protocols.activesync.syncstate import (
    MAX_CLIENT_IDS,
    CollectionRecord,
    CollectionState,
    DeviceState,
    HierarchyState,
    ItemProps,
    SyncStateStore,
    change_token,
    difference,
    format_key,
    parse_key,
)


def _state(counter: int = 1, view: dict[int, int] | None = None) -> CollectionState:
    return CollectionState("f" * 32, "0123abcd0123abcd", counter, 7, view=dict(view or {}))


def test_collection_records_round_trip_and_match_keys(tmp_path: Path) -> None:
    store = SyncStateStore(tmp_path)
    current = _state(3, {5: 1, 9: 2**63 + 5})
    current.client_ids["c1"] = 5
    current.aliases[9] = 4
    previous = _state(2, {5: 1})
    store.save_collection("mbx", "dev", CollectionRecord(current, previous))
    loaded = store.load_collection("mbx", "dev", "f" * 32)
    assert loaded is not None
    assert loaded.current == current and loaded.previous == previous
    assert loaded.match(current.key) is loaded.current
    replay = loaded.match(previous.key)
    assert replay == previous and replay is not loaded.previous  # a copy to work on
    assert loaded.match(format_key("0123abcd0123abcd", 1)) is None
    assert loaded.match("0") is None and loaded.top_counter == 3
    assert store.collections("mbx", "dev") == ["f" * 32]
    store.delete_collection("mbx", "dev", "f" * 32)
    assert store.load_collection("mbx", "dev", "f" * 32) is None


def test_unreadable_or_foreign_state_is_treated_as_absent(tmp_path: Path) -> None:
    store = SyncStateStore(tmp_path)
    store.save_collection("mbx", "dev", CollectionRecord(_state()))
    path = tmp_path / "mbx" / "dev" / f"c-{'f' * 32}.state"
    path.write_bytes(b"\xc1 not msgpack")
    assert store.load_collection("mbx", "dev", "f" * 32) is None
    path.write_bytes(msgpack.packb({"v": 99, "current": {}}))
    assert store.load_collection("mbx", "dev", "f" * 32) is None
    path.write_bytes(msgpack.packb({"v": 1, "current": {"id": "x"}}))
    assert store.load_collection("mbx", "dev", "f" * 32) is None
    with pytest.raises(ValueError, match="safe file name"):
        store.load_collection("mbx", "../etc", "x")


def test_hierarchy_device_and_props_round_trip(tmp_path: Path) -> None:
    store = SyncStateStore(tmp_path, fsync=False)
    hierarchy = HierarchyState("aa", 4, {"f1": ("0", "Inbox", 2)}, 3, {})
    store.save_hierarchy("mbx", "dev", hierarchy)
    assert store.load_hierarchy("mbx", "dev") == hierarchy
    assert hierarchy.previous_key == "{aa}3"
    device = DeviceState(sync_request={"collections": []}, ping={"hb": 60, "folders": []})
    for i in range(600):
        device.remember_sent(f"id{i}")
    store.save_device("mbx", "dev", device, durable=False)
    loaded = store.load_device("mbx", "dev")
    assert loaded.ping == {"hb": 60, "folders": []} and len(loaded.sent) == 500
    assert loaded.sent[-1] == "id599"
    with store.editing_props("mbx") as props:
        props.set("f1", 3, {"verb": 1})
        props.move("f1", 3, "f2", 8)
    again = store.load_props("mbx")
    assert again.get("f2", 8) == {"verb": 1} and again.get("f1", 3) is None
    assert again.of_folder("f2") == {8: {"verb": 1}}
    store.forget_device("mbx", "dev")
    assert store.load_hierarchy("mbx", "dev") is None


def test_client_ids_are_bounded() -> None:
    state = _state()
    for i in range(MAX_CLIENT_IDS + 10):
        state.remember_client_id(f"c{i}", i)
    assert len(state.client_ids) == MAX_CLIENT_IDS and "c0" not in state.client_ids


def test_keys_parse_strictly() -> None:
    assert parse_key("{0a}12") == ("0a", 12)
    for bad in ("0", "12", "{}1", "{xyz}1", "{0a}", "{0a}1 2", "{" + "0" * 40 + "}1"):
        assert parse_key(bad) is None


def test_difference_orders_deletes_changes_and_newest_adds_first() -> None:
    view = {1: 10, 2: 20, 3: 30, 4: 40}
    wanted = {2: 21, 3: 30, 5: 50, 7: 70}
    diff = difference(view, wanted, present={1, 2, 3, 4, 5, 7} - {1})
    assert diff.deletes == (1,) and diff.soft_deletes == (4,)
    assert diff.changes == (2,) and diff.adds == (7, 5) and diff.count == 5


@given(
    st.dictionaries(st.integers(1, 50), st.integers(0, 3)),
    st.dictionaries(st.integers(1, 50), st.integers(0, 3)),
)
def test_applying_the_difference_gives_the_wanted_view(
    view: dict[int, int], wanted: dict[int, int]
) -> None:
    diff = difference(view, wanted, present=set(wanted))
    result = dict(view)
    for uid in diff.deletes + diff.soft_deletes:
        del result[uid]
    for uid in diff.changes + diff.adds:
        result[uid] = wanted[uid]
    assert result == wanted


def test_change_token_sees_flags_categories_and_props() -> None:
    base = change_token(1, ["Red"])
    assert base != change_token(0, ["Red"])
    assert base != change_token(1, ["Blue"])
    assert base != change_token(1, ["Red"], props_crc=ItemProps({"f:1": {"v": 1}}).crc("f", 1))
    assert change_token(1, ["b", "a"]) == change_token(1, ["a", "b"])
    assert 0 <= change_token(63, ["x" * 100], 2**40) < 2**64


def test_ids_dates_and_truncation() -> None:
    assert parse_server_id("abc:12") == ("abc", 12)
    assert parse_server_id("abc") is None and parse_server_id("abc:x") is None
    assert parse_file_reference("abc:3:2.1") == ("abc", 3, (2, 1))
    assert parse_file_reference("abc:3:0") is None and parse_file_reference("a:b:c") is None
    when = dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    assert eas_datetime(when) == "2024-01-02T03:04:05.678Z"
    assert parse_eas_datetime("20240102T030405Z") == when.replace(microsecond=0)
    assert parse_eas_datetime("2024-01-02T03:04:05.678Z") == when
    assert parse_eas_datetime("yesterday") is None
    assert truncate_utf8("aé€", 4) == "aé" and truncate_utf8("abc", 10) == "abc"
    assert len(conversation_index(when)) == 5
