"""Authenticated-state commands: selecting, listing and managing mailboxes, APPEND, quota.

Each handler takes the session and its command and returns the tagged completion (the
session sends pending updates first). Names are checked twice: the parser's
:attr:`~protocols.imap.names.MailboxName.problem` (traversal, NUL, bad modified UTF-7) is
refused here before the store is asked, and the store validates again on its own
(``InvalidFolderName``) - checklist item 37.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from store import (
    Flag,
    Folder,
    FolderExists,
    FolderKind,
    FolderNotFound,
    FolderSnapshot,
    InvalidFolderName,
    Mailbox,
    NewMessage,
)

from . import commands as c
from . import responses as r
from . import storemap
from .listing import list_entries, visible_folders
from .names import MailboxName
from .responses import ResponseCode, Status
from .selected import SelectedFolder, format_ranges, missing_ranges
from .shared import FolderKey, ImapShared
from .state import Outcome

if TYPE_CHECKING:
    from .session import Handler, ImapSession

__all__ = ["HANDLERS", "open_folder", "resolve_name"]

_USEATTR: Final = ResponseCode("USEATTR")  # RFC 6154 6


def resolve_name(name: MailboxName) -> str:
    """The store's name for a mailbox argument, or InvalidFolderName (checklist 37)."""
    if name.problem is not None:
        raise InvalidFolderName(name.problem)
    return storemap.store_name(name.name)


def open_folder(mailbox: Mailbox, name: MailboxName) -> Folder:
    """The mail folder named ``name`` (blocking); FolderNotFound for PIM folders too."""
    folder = mailbox.folder(resolve_name(name))
    if folder.kind is not FolderKind.MAIL:
        raise FolderNotFound("not a mail folder")
    return folder


def _mailbox(s: ImapSession) -> Mailbox:
    assert s.mailbox is not None  # the state table admits these commands only after login
    return s.mailbox


# --- SELECT / EXAMINE ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Opened:
    folder: Folder
    snapshot: FolderSnapshot
    first_unseen: int  # sequence number, 0 if none
    baseline: int  # highest UID older than the process (for \Recent), if not yet claimed
    epoch: int  # the RecentClaims epoch the baseline belongs to


def _first_unseen(snap: FolderSnapshot) -> int:
    if snap.unseen == 0:
        return 0
    for pos, uid in enumerate(snap.uids):
        if Flag.SEEN not in snap.flags(uid):
            return pos + 1
    return 0  # pragma: no cover


def recent_baseline(snap: FolderSnapshot, cutoff_ms: int) -> int:
    """The highest UID that arrived by ``cutoff_ms`` (the process start, or the last
    forgotten claim: module docstring of :mod:`.shared`): scanned from the end, so it
    costs the number of new messages.

    A message arrived by the earlier of its internal date and its save date: APPEND may
    set an internal date in the future, and a rebuilt index dates a message by its file.
    A message a session claimed before an eviction must not look newer than the eviction,
    or a second session would claim it again; so the cutoff's own millisecond counts as
    before it too (what arrives in it is then recent to no session, never to two).
    """
    pos = len(snap) - 1
    while pos >= 0:
        summary = snap.summary_at(pos)
        arrived = summary.internal_date_ms
        if summary.save_date_ms is not None and summary.save_date_ms < arrived:
            arrived = summary.save_date_ms
        if arrived <= cutoff_ms:  # dates are whole milliseconds
            return summary.uid
        pos -= 1
    return 0


def _open(mailbox: Mailbox, name: MailboxName, shared: ImapShared) -> _Opened:
    folder = open_folder(mailbox, name)
    snap = folder.snapshot()
    key: FolderKey = (mailbox.id, folder.id, snap.uidvalidity)
    claims = shared.recent
    epoch = claims.epoch  # read first: an eviction after it voids this baseline
    baseline = 0 if claims.known(key) else recent_baseline(snap, claims.cutoff_ms)
    return _Opened(folder, snap, _first_unseen(snap), baseline, epoch)


async def select(s: ImapSession, cmd: c.SelectCommand | c.ExamineCommand) -> bytes:
    mailbox = _mailbox(s)
    previous = s.selected
    if previous is not None:
        s.selected = None
        s.unsubscribe()
        if "QRESYNC" in s.enabled:
            s.emit(r.untagged_status(Status.OK, "previous mailbox closed", r.CLOSED))  # 7162 3.2.11
    if cmd.condstore or cmd.qresync is not None:
        s.condstore = True  # RFC 7162 3.1: a CONDSTORE-enabling command
    if cmd.qresync is not None and "QRESYNC" not in s.enabled:
        s.transition(Outcome.SELECT_FAILED)
        return r.tagged(cmd.tag, Status.BAD, "QRESYNC parameter without ENABLE QRESYNC")
    try:
        opened = await s.run_sync(_open, mailbox, cmd.mailbox, s.shared)
    except Exception:
        s.transition(Outcome.SELECT_FAILED)  # RFC 3501 6.3.1: the old selection is gone
        raise
    snap = opened.snapshot
    imap = storemap.imap_name(storemap.store_name(cmd.mailbox.name))
    key: FolderKey = (mailbox.id, opened.folder.id, snap.uidvalidity)
    sel = SelectedFolder(opened.folder, imap, key, snap, cmd.readonly)
    opts = s.view_options
    if not opts.rev2:
        sel.claim_recent(s.shared, opened.baseline, opened.epoch)
    s.emit(r.flags(storemap.PERMANENT_FLAGS[:-1]))
    permanent = () if cmd.readonly else storemap.PERMANENT_FLAGS
    s.emit(r.untagged_status(Status.OK, "flags", ResponseCode.permanentflags(permanent)))
    s.emit(r.exists(sel.exists))
    if not opts.rev2:
        s.emit(r.recent(sel.recent_count()))
        if opened.first_unseen:
            s.emit(
                r.untagged_status(
                    Status.OK, "first unseen", ResponseCode.unseen(opened.first_unseen)
                )
            )
    s.emit(r.untagged_status(Status.OK, "UIDs valid", ResponseCode.uidvalidity(snap.uidvalidity)))
    s.emit(r.untagged_status(Status.OK, "predicted next UID", ResponseCode.uidnext(snap.uidnext)))
    # RFC 7162 3.1.2.1: every SELECT of a mailbox with persistent mod-sequences says so.
    s.emit(r.untagged_status(Status.OK, "highest", ResponseCode.highestmodseq(snap.highestmodseq)))
    if cmd.qresync is not None and cmd.qresync.uidvalidity == snap.uidvalidity:
        await _qresync(s, sel, cmd.qresync, snap)
    del snap, opened
    s.selected = sel
    s.subscribe(sel)
    s.transition(Outcome.SELECTED)
    code = r.READ_ONLY if cmd.readonly else r.READ_WRITE
    return r.tagged(cmd.tag, Status.OK, f"{cmd.name} completed", code)


async def _qresync(
    s: ImapSession, sel: SelectedFolder, params: c.QResyncParams, snap: FolderSnapshot
) -> None:
    """RFC 7162 3.2.5.1: VANISHED (EARLIER) and the changed messages' flags."""
    changes = await s.run_sync(sel.folder.changes_since, params.modseq)
    uids = sel.uids
    known = params.known_uids
    if changes.complete:
        vanished = [u for u in changes.vanished if known is None or known.contains(u, u)]
        if vanished:
            s.emit(r.vanished(vanished, earlier=True))
    else:
        # The store forgot expunges that old: every known UID that is not here vanished.
        if known is None:
            ranges = missing_ranges(uids, 1, max(snap.uidnext - 1, 0))
        else:
            ranges = []
            for lo, hi in known.intervals(snap.uidnext):
                ranges += missing_ranges(uids, lo, min(hi, snap.uidnext - 1))
        if ranges:
            s.emit(r.untagged(b"VANISHED (EARLIER) " + format_ranges(ranges)))
    opts = s.view_options
    for summary in changes.changed:
        pos = bisect.bisect_left(uids, summary.uid)
        if pos < len(uids) and uids[pos] == summary.uid:
            s.emit(sel.flags_fetch(pos + 1, summary, opts))
            await s.maybe_flush()


# --- CREATE / DELETE / RENAME / SUBSCRIBE ----------------------------------------------------


async def create(s: ImapSession, cmd: c.CreateCommand) -> bytes:
    mailbox = _mailbox(s)
    name = cmd.mailbox
    if name.name.endswith("/"):  # RFC 3501 6.3.3: a trailing separator names a parent
        name = MailboxName(name.name.rstrip("/"), name.raw, name.problem)
    if name.is_inbox:
        raise FolderExists("INBOX always exists")
    role = None
    for attr in cmd.special_use:
        role = storemap.ROLE_BY_ATTRIBUTE.get(attr.lower())
        if role is None or len(cmd.special_use) > 1:
            return r.tagged(cmd.tag, Status.NO, "unsupported special-use attribute", _USEATTR)
    store_name = resolve_name(name)
    await s.run_sync(lambda: mailbox.create_folder(store_name, role=role))
    return r.tagged(cmd.tag, Status.OK, "CREATE completed")


async def delete(s: ImapSession, cmd: c.DeleteCommand) -> bytes:
    mailbox = _mailbox(s)
    store_name = resolve_name(cmd.mailbox)
    folder = await s.run_sync(open_folder, mailbox, cmd.mailbox)
    await s.run_sync(mailbox.delete_folder, store_name)
    s.shared.recent.forget(mailbox.id, folder.id)
    if s.selected is not None and s.selected.folder.id == folder.id:
        s.selected = None
        s.unsubscribe()
        s.transition(Outcome.UNSELECTED)
    return r.tagged(cmd.tag, Status.OK, "DELETE completed")


def _rename_inbox(mailbox: Mailbox, new_name: str) -> None:
    """RFC 3501 6.3.5: renaming INBOX moves its messages to the new mailbox; INBOX stays."""
    mailbox.create_folder(new_name)
    inbox = mailbox.inbox
    dest = mailbox.folder(new_name)
    uids = list(inbox.snapshot().uids)
    if uids:
        inbox.move_to(uids, dest)


async def rename(s: ImapSession, cmd: c.RenameCommand) -> bytes:
    mailbox = _mailbox(s)
    old = resolve_name(cmd.mailbox)
    new = resolve_name(cmd.new_mailbox)
    if cmd.new_mailbox.is_inbox:
        raise FolderExists("INBOX always exists")
    if cmd.mailbox.is_inbox:
        await s.run_sync(_rename_inbox, mailbox, new)
    else:
        await s.run_sync(open_folder, mailbox, cmd.mailbox)
        await s.run_sync(mailbox.rename_folder, old, new)
    return r.tagged(cmd.tag, Status.OK, "RENAME completed")


async def subscribe(s: ImapSession, cmd: c.SubscribeCommand | c.UnsubscribeCommand) -> bytes:
    mailbox = _mailbox(s)
    name = resolve_name(cmd.mailbox)
    await s.run_sync(mailbox.set_subscribed, name, isinstance(cmd, c.SubscribeCommand))
    return r.tagged(cmd.tag, Status.OK, f"{cmd.name} completed")


# --- LIST / LSUB / NAMESPACE / STATUS --------------------------------------------------------


async def list_command(s: ImapSession, cmd: c.ListCommand) -> bytes:
    mailbox = _mailbox(s)
    if cmd.patterns == ("",) and not cmd.selection:
        # RFC 3501 6.3.8: the hierarchy delimiter and root name.
        s.emit(r.list_response("", attributes=("\\Noselect",), utf8=s.utf8))
        return r.tagged(cmd.tag, Status.OK, "LIST completed")
    folders = visible_folders(await s.run_sync(mailbox.list_folders))
    entries = list_entries(
        folders, cmd.reference, cmd.patterns, selection=cmd.selection, returns=cmd.returns
    )
    for entry in entries:
        extended: list[tuple[str, bytes]] = []
        if entry.childinfo:
            extended.append(("CHILDINFO", b'("SUBSCRIBED")'))  # RFC 5258 3.5
        s.emit(
            r.list_response(entry.name, attributes=entry.attributes, extended=extended, utf8=s.utf8)
        )
        if c.ListReturn.STATUS in cmd.returns and not entry.childinfo:
            # RFC 5819 2: STATUS right after the LIST it belongs to.
            try:
                items = await _status_items(s, MailboxName(entry.name, b""), cmd.status_items)
            except (FolderNotFound, InvalidFolderName):
                continue
            s.emit(r.status(entry.name, items, utf8=s.utf8))
        await s.maybe_flush()
    return r.tagged(cmd.tag, Status.OK, "LIST completed")


async def lsub(s: ImapSession, cmd: c.LsubCommand) -> bytes:
    mailbox = _mailbox(s)
    folders = visible_folders(await s.run_sync(mailbox.list_folders))
    for entry in list_entries(folders, cmd.reference, (cmd.pattern,), lsub=True):
        s.emit(r.list_response(entry.name, attributes=entry.attributes, lsub=True, utf8=s.utf8))
    return r.tagged(cmd.tag, Status.OK, "LSUB completed")


async def namespace(s: ImapSession, cmd: c.NamespaceCommand) -> bytes:
    s.emit(r.namespace((("", "/"),), utf8=s.utf8))  # RFC 2342 5: personal only
    return r.tagged(cmd.tag, Status.OK, "NAMESPACE completed")


def _count_deleted(snap: FolderSnapshot) -> int:
    return sum(1 for uid in snap.uids if Flag.DELETED in snap.flags(uid))


def _unclaimed_recent(snap: FolderSnapshot, shared: ImapShared, key: FolderKey) -> int:
    """STATUS RECENT: the messages no session has claimed yet."""
    last = shared.recent.last_claim(key)
    if last is None:
        last = recent_baseline(snap, shared.recent.cutoff_ms)
    return len(snap) - bisect.bisect_right(snap.uids, last)


async def _status_items(
    s: ImapSession, name: MailboxName, wanted: Sequence[c.StatusItem]
) -> dict[c.StatusItem, int]:
    mailbox = _mailbox(s)
    shared = s.shared
    rev2 = s.rev2

    def collect() -> dict[c.StatusItem, int]:
        folder = open_folder(mailbox, name)
        status = folder.status()
        snap: FolderSnapshot | None = None
        if c.StatusItem.DELETED in wanted or (c.StatusItem.RECENT in wanted and not rev2):
            snap = folder.snapshot()
        out: dict[c.StatusItem, int] = {}
        for item in wanted:
            if item is c.StatusItem.MESSAGES:
                out[item] = status.messages
            elif item is c.StatusItem.RECENT:
                key = (mailbox.id, folder.id, status.uidvalidity)
                out[item] = 0 if rev2 or snap is None else _unclaimed_recent(snap, shared, key)
            elif item is c.StatusItem.UIDNEXT:
                out[item] = status.uidnext
            elif item is c.StatusItem.UIDVALIDITY:
                out[item] = status.uidvalidity
            elif item is c.StatusItem.UNSEEN:
                out[item] = status.unseen
            elif item is c.StatusItem.DELETED:
                out[item] = _count_deleted(snap) if snap is not None else 0
            elif item is c.StatusItem.SIZE:
                out[item] = status.size  # RFC 8438
            elif item is c.StatusItem.HIGHESTMODSEQ:
                out[item] = status.highestmodseq  # RFC 7162 3.1.6
            elif item is c.StatusItem.APPENDLIMIT:
                out[item] = s.settings.append_limit  # RFC 7889 4
        return out

    return await s.run_sync(collect)


async def status(s: ImapSession, cmd: c.StatusCommand) -> bytes:
    if c.StatusItem.HIGHESTMODSEQ in cmd.items:
        s.condstore = True  # RFC 7162 3.1: a CONDSTORE-enabling command
    items = await _status_items(s, cmd.mailbox, cmd.items)
    name = storemap.imap_name(resolve_name(cmd.mailbox))
    s.emit(r.status(name, items, utf8=s.utf8))
    return r.tagged(cmd.tag, Status.OK, "STATUS completed")


# --- APPEND ------------------------------------------------------------------------------


async def append(s: ImapSession, cmd: c.AppendCommand) -> bytes:
    mailbox = _mailbox(s)
    try:
        folder = await s.run_sync(open_folder, mailbox, cmd.mailbox)
    except FolderNotFound:
        # RFC 3501 6.3.11: TRYCREATE tells the client CREATE would help.
        return r.tagged(cmd.tag, Status.NO, "no such mailbox", r.TRYCREATE)
    batch = []
    for message in cmd.messages:
        flags, keywords = storemap.split_flags(message.flags)
        batch.append(NewMessage(message.data, flags, keywords, message.internal_date))
    results = await s.run_sync(folder.append_many, batch)
    uids = [res.uid for res in results]
    code = ResponseCode.appenduid(results[0].uidvalidity, uids)  # RFC 4315 3
    return r.tagged(cmd.tag, Status.OK, "APPEND completed", code)


# --- QUOTA (RFC 9208) ------------------------------------------------------------------------

QUOTA_ROOT: Final = ""


def _quota_line(used: int, limit: int) -> bytes:
    # RFC 9208 5.1: STORAGE in units of 1024 octets.
    return r.quota(QUOTA_ROOT, (("STORAGE", (used + 1023) // 1024, limit // 1024),))


async def getquota(s: ImapSession, cmd: c.GetQuotaCommand) -> bytes:
    mailbox = _mailbox(s)
    if cmd.root != QUOTA_ROOT:
        return r.tagged(cmd.tag, Status.NO, "no such quota root", r.NONEXISTENT)
    quota = await s.run_sync(mailbox.quota)
    if quota.limit is None:
        return r.tagged(cmd.tag, Status.NO, "no quota set", r.NONEXISTENT)
    s.emit(_quota_line(quota.usage, quota.limit))
    return r.tagged(cmd.tag, Status.OK, "GETQUOTA completed")


async def getquotaroot(s: ImapSession, cmd: c.GetQuotaRootCommand) -> bytes:
    mailbox = _mailbox(s)
    await s.run_sync(open_folder, mailbox, cmd.mailbox)
    quota = await s.run_sync(mailbox.quota)
    name = storemap.imap_name(resolve_name(cmd.mailbox))
    if quota.limit is None:
        s.emit(r.quotaroot(name, (), utf8=s.utf8))  # RFC 9208 4.3: no quota root
    else:
        s.emit(r.quotaroot(name, (QUOTA_ROOT,), utf8=s.utf8))
        s.emit(_quota_line(quota.usage, quota.limit))
    return r.tagged(cmd.tag, Status.OK, "GETQUOTAROOT completed")


async def setquota(s: ImapSession, cmd: c.SetQuotaCommand) -> bytes:
    # Quotas are the administrator's (the CLI); RFC 9208 4.1 allows refusing.
    return r.tagged(cmd.tag, Status.NO, "quotas are set by the administrator", r.NOPERM)


HANDLERS: Final[dict[type[c.Command], Handler]] = {
    c.SelectCommand: select,
    c.ExamineCommand: select,
    c.CreateCommand: create,
    c.DeleteCommand: delete,
    c.RenameCommand: rename,
    c.SubscribeCommand: subscribe,
    c.UnsubscribeCommand: subscribe,
    c.ListCommand: list_command,
    c.LsubCommand: lsub,
    c.NamespaceCommand: namespace,
    c.StatusCommand: status,
    c.AppendCommand: append,
    c.GetQuotaCommand: getquota,
    c.GetQuotaRootCommand: getquotaroot,
    c.SetQuotaCommand: setquota,
}
