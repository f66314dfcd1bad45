"""Blocking helpers over the store for the mail commands: item facts for rendering,
client changes to e-mail (read, follow-up flag, categories), FilterType windows, and what a
device's collection state lacks (Sync, GetItemEstimate and Ping all ask that).

Everything here blocks on disk; handlers call it through `MailServices.run`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from store import Flag, FlagMode, Folder, FolderSnapshot, Mailbox, MessageNotFound, SpecialUse
from store.errors import FolderNotFound, StoreError
from store.flags import flags_to_bits

from ..mail import (
    FLAG_ACTIVE,
    FLAG_CLEARED,
    FLAG_COMPLETE,
    FLAG_FIELDS,
    ItemFacts,
    TokenCache,
    categories_of,
    folder_tokens,
    parse_eas_datetime,
)
from ..numbers import parse_uint
from ..policy import EmailAgeFilter, Policy
from ..syncstate import CollectionState, Difference, ItemProps, SyncStateStore, difference
from ..wbxml import Element

log = logging.getLogger("mailhost.activesync")

# MS-ASCMD 2.2.3.70.2 FilterType for e-mail: 0 all, 1 one day ... 5 one month.
FILTER_WINDOWS: Final[dict[int, dt.timedelta | None]] = {
    0: None,
    1: dt.timedelta(days=1),
    2: dt.timedelta(days=3),
    3: dt.timedelta(weeks=1),
    4: dt.timedelta(weeks=2),
    5: dt.timedelta(days=31),
    6: dt.timedelta(days=92),  # three months (calendar values; accepted for mail)
    7: dt.timedelta(days=183),
}
# Categories per item (Exchange allows 300 per item, each up to 255 characters).
MAX_CATEGORIES: Final = 300


def effective_filter(requested: int, policy: Policy) -> int:
    """The FilterType to apply: the device's, capped by the policy's MaxEmailAgeFilter
    (MS-ASPROV 2.2.2.33: a device asking for more than the policy allows gets the cap)."""
    cap = int(policy.max_email_age)
    if requested not in FILTER_WINDOWS:
        requested = 0
    if cap == EmailAgeFilter.ALL:
        return requested
    if requested == 0 or requested > cap:
        return cap
    return requested


def filter_cutoff(filter_type: int, now: float) -> dt.datetime | None:
    window = FILTER_WINDOWS.get(filter_type)
    if window is None:
        return None
    return dt.datetime.fromtimestamp(now, dt.UTC) - window


def facts_for(
    folder: Folder, snapshot: FolderSnapshot, uids: Iterable[int], props: ItemProps
) -> dict[int, ItemFacts]:
    """Item facts of the uids present in the snapshot (absent ones are left out)."""
    present = [u for u in uids if u in snapshot]
    metadata = folder.metadata(present)
    out: dict[int, ItemFacts] = {}
    for uid in present:
        meta = metadata.get(uid)
        if meta is None:
            continue
        summary = snapshot.summary(uid)
        out[uid] = ItemFacts(
            folder_id=folder.id,
            uid=uid,
            metadata=meta,
            flag_bits=flags_to_bits(summary.flags),
            keywords=summary.keywords,
            internal_date=summary.internal_date,
            size=summary.size,
            props=props.get(folder.id, uid),
        )
    return out


def reader(folder: Folder, uid: int) -> Any:
    def read(start: int, length: int | None) -> bytes:
        return folder.read_message(uid, start, length)

    return read


def trash_of(mailbox: Mailbox) -> Folder | None:
    try:
        return mailbox.folder_by_role(SpecialUse.TRASH)
    except FolderNotFound:
        return None


# --- what a device lacks -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pending:
    snapshot: FolderSnapshot
    wanted: dict[int, int]
    difference: Difference


def pending_changes(
    folder: Folder,
    state: CollectionState,
    props: ItemProps,
    now: float,
    cache: TokenCache | None = None,
) -> Pending:
    snapshot = folder.snapshot()
    since = filter_cutoff(state.filter_type, now)
    wanted, present = folder_tokens(snapshot, props, since=since, cache=cache)
    return Pending(snapshot, wanted, difference(state.view, wanted, present))


def collection_has_changes(
    states: SyncStateStore,
    mailbox: Mailbox,
    device_id: str,
    folder_id: str,
    now: float,
    cache: TokenCache | None = None,
) -> bool:
    """Whether the device's last SyncKey state of this folder lacks anything (Ping's
    question: changes are relative to the state, not to when the Ping started)."""
    record = states.load_collection(mailbox.id, device_id, folder_id)
    if record is None:
        return True  # never synced: the device should sync it
    state = record.current
    try:
        folder = mailbox.folder_by_id(folder_id)
    except FolderNotFound:
        return True
    if not state.pending and folder.status().highestmodseq == state.modseq:
        return False
    props = states.load_props(mailbox.id)
    return pending_changes(folder, state, props, now, cache).difference.count > 0


# --- client changes to e-mail --------------------------------------------------------------


class ChangeRefused(Exception):
    """A client change that cannot be applied (Sync Responses/Change Status 6)."""


def _flag_record(flag: Element) -> dict[str, Any] | None:
    """The follow-up flag a client sent, as item properties; None = cleared."""
    if flag.is_empty:
        return None
    status_text = flag.text_of("Status")
    status = FLAG_ACTIVE
    if status_text is not None:  # a bad one is Sync Status 6 for this item (MS-ASCMD)
        status = parse_uint(status_text, error=ChangeRefused, what="Flag/Status")
    if status not in (FLAG_CLEARED, FLAG_COMPLETE, FLAG_ACTIVE):
        raise ChangeRefused(f"Flag/Status {status} is not 0, 1 or 2")
    if status == FLAG_CLEARED:
        return None
    record: dict[str, Any] = {"status": status}
    for name, qname in FLAG_FIELDS:
        value = flag.text_of(qname)
        if value is None:
            continue
        value = value.strip()
        if name == "type":
            record[name] = value[:255]
        elif name == "reminder_set":
            record[name] = 1 if value == "1" else 0
        elif name in ("ordinal", "subordinal"):
            record[name] = value[:64]
        else:
            if parse_eas_datetime(value) is None:
                raise ChangeRefused(f"Flag/{qname}: {value[:40]!r} is not a date")
            record[name] = value
    return record


def apply_email_change(
    states: SyncStateStore,
    mailbox: Mailbox,
    folder: Folder,
    uid: int,
    data: Element,
    *,
    categories_allowed: bool,
) -> None:
    """Read, Flag and Categories from a client's Change (MS-ASEMAIL 3.1.5.3); other
    fields of a received message are read-only and ignored. MessageNotFound if gone."""
    snapshot = folder.snapshot()
    if uid not in snapshot:
        raise MessageNotFound(f"no message {uid}")
    read = data.text_of("Email:Read")
    if read is not None:
        mode = FlagMode.ADD if read.strip() == "1" else FlagMode.REMOVE
        folder.store_flags([uid], mode, [Flag.SEEN])
    flag = data.find("Email:Flag")
    if flag is not None:
        record = _flag_record(flag)
        status = record["status"] if record else FLAG_CLEARED
        mode = FlagMode.ADD if status == FLAG_ACTIVE else FlagMode.REMOVE
        folder.store_flags([uid], mode, [Flag.FLAGGED])
        with states.editing_props(mailbox.id) as props:
            current = dict(props.get(folder.id, uid) or {})
            if record is None:
                current.pop("flag", None)
            else:
                current["flag"] = record
            props.set(folder.id, uid, current)
    categories = data.find("Email:Categories")
    if categories is not None and categories_allowed:
        wanted = []
        for element in categories.findall("Category")[:MAX_CATEGORIES]:
            name = element.text.strip()
            if name and name not in wanted:
                wanted.append(name)
        old = set(categories_of(snapshot.keywords(uid)))
        remove = old - set(wanted)
        add = [c for c in wanted if c not in old]
        try:
            if remove:
                folder.store_flags([uid], FlagMode.REMOVE, keywords=sorted(remove))
            if add:
                folder.store_flags([uid], FlagMode.ADD, keywords=add)
        except StoreError as exc:
            raise ChangeRefused(f"categories: {exc}") from None


def delete_item(mailbox: Mailbox, folder: Folder, uid: int, *, as_move: bool) -> int | None:
    """Delete as the client asked (MS-ASCMD 2.2.3.43 DeletesAsMoves): move to Deleted
    Items, or remove for good when already there or when asked to. Returns the uid in
    Deleted Items when moved; None otherwise (also when the item was already gone)."""
    trash = trash_of(mailbox)
    if as_move and trash is not None and trash.id != folder.id:
        result = folder.move_to([uid], trash)
        return result.mapping[0][1] if result.mapping else None
    folder.expunge([uid])
    return None
