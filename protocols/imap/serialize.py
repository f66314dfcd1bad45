"""Commands back to wire bytes: the inverse of the parser (for tests and a future client).

``parse(serialize(cmd)) == cmd`` holds for every command the parser can produce; the
property tests rely on it. Strings are quoted when possible, else sent as synchronizing
literals; APPEND data is always a literal (literal8 when ``binary``).
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any, Final

from . import commands as c
from . import search as s
from .mutf7 import encode_mutf7
from .names import MailboxName
from .responses import astring, internal_date, literal, string

__all__ = ["serialize_command", "serialize_search_key"]

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def _date(value: dt.date) -> bytes:
    return f"{value.day}-{_MONTHS[value.month - 1]}-{value.year:04d}".encode("ascii")


def _flags(flags: tuple[str, ...]) -> bytes:
    return b"(" + b" ".join(f.encode("ascii") for f in flags) + b")"


def _pattern(value: str) -> bytes:
    raw = encode_mutf7(value)
    if raw and all(0x21 <= b <= 0x7E and b not in b'(){"\\' for b in raw):
        return raw  # list-mailbox: atom chars plus "%", "*", "]"
    return string(raw)


# --- search keys -------------------------------------------------------------------------

_FLAG_WORDS: Final = {
    ("\\Answered", True): b"ANSWERED",
    ("\\Answered", False): b"UNANSWERED",
    ("\\Deleted", True): b"DELETED",
    ("\\Deleted", False): b"UNDELETED",
    ("\\Draft", True): b"DRAFT",
    ("\\Draft", False): b"UNDRAFT",
    ("\\Flagged", True): b"FLAGGED",
    ("\\Flagged", False): b"UNFLAGGED",
    ("\\Seen", True): b"SEEN",
    ("\\Seen", False): b"UNSEEN",
}
_HEADER_WORDS: Final = {
    "bcc": b"BCC",
    "cc": b"CC",
    "from": b"FROM",
    "subject": b"SUBJECT",
    "to": b"TO",
}
_DATE_WORDS: Final = {
    s.DateField.INTERNAL: b"",
    s.DateField.SENT: b"SENT",
    s.DateField.SAVED: b"SAVED",
}


def _k_flag(k: s.FlagKey) -> bytes:
    word = _FLAG_WORDS.get((k.flag, k.present))
    if word is not None:
        return word
    return (b"KEYWORD " if k.present else b"UNKEYWORD ") + k.flag.encode("ascii")


def _k_header(k: s.HeaderKey) -> bytes:
    word = _HEADER_WORDS.get(k.field)
    value = string(k.value)
    if word is not None:
        return word + b" " + value
    return b"HEADER " + astring(k.field) + b" " + value


def _k_date(k: s.DateKey) -> bytes:
    return _DATE_WORDS[k.field] + k.op.value.upper().encode() + b" " + _date(k.date)


def _k_modseq(k: s.ModSeqKey) -> bytes:
    out = b"MODSEQ "
    if k.entry_name is not None:
        out += string(k.entry_name) + b" " + (k.entry_type or "all").encode() + b" "
    return out + str(k.modseq).encode()


_KEY_WRITERS: Final[dict[type, Callable[[Any], bytes]]] = {
    s.AllKey: lambda k: b"ALL",
    s.FlagKey: _k_flag,
    s.RecentKey: lambda k: b"RECENT",
    s.NewKey: lambda k: b"NEW",
    s.OldKey: lambda k: b"OLD",
    s.HeaderKey: _k_header,
    s.BodyKey: lambda k: b"BODY " + string(k.value),
    s.TextKey: lambda k: b"TEXT " + string(k.value),
    s.DateKey: _k_date,
    s.SizeKey: lambda k: (b"LARGER " if k.larger else b"SMALLER ") + str(k.size).encode(),
    s.SequenceKey: lambda k: (b"UID " if k.uid else b"") + k.sequence.render(),
    s.ModSeqKey: _k_modseq,
    s.SaveDateSupportedKey: lambda k: b"SAVEDATESUPPORTED",
    s.NotKey: lambda k: b"NOT " + serialize_search_key(k.key),
    s.OrKey: lambda k: b"OR " + serialize_search_key(k.left) + b" " + serialize_search_key(k.right),
    s.AndKey: lambda k: b"(" + b" ".join(serialize_search_key(x) for x in k.keys) + b")",
}


def serialize_search_key(key: s.SearchKey) -> bytes:
    return _KEY_WRITERS[type(key)](key)


def _criteria(key: s.SearchKey) -> bytes:
    """The top-level key list: an AND of several keys is written without parentheses."""
    if isinstance(key, s.AndKey) and len(key.keys) > 1:
        return b" ".join(serialize_search_key(k) for k in key.keys)
    return serialize_search_key(key)


# --- commands ----------------------------------------------------------------------------


def _mbox(m: MailboxName) -> bytes:
    return astring(m.raw)


def _w_id(cmd: c.IdCommand) -> bytes:
    if cmd.params is None:
        return b" NIL"
    pairs = [string(k) + b" " + (b"NIL" if v is None else string(v)) for k, v in cmd.params]
    return b" (" + b" ".join(pairs) + b")"


def _w_authenticate(cmd: c.AuthenticateCommand) -> bytes:
    out = b" " + cmd.mechanism.encode("ascii")
    if cmd.initial_response is not None:
        out += b" " + (base64.b64encode(cmd.initial_response) or b"=")
    return out


def _w_select(cmd: c.SelectCommand | c.ExamineCommand) -> bytes:
    out = b" " + _mbox(cmd.mailbox)
    params: list[bytes] = []
    if cmd.condstore:
        params.append(b"CONDSTORE")
    q = cmd.qresync
    if q is not None:
        inner = str(q.uidvalidity).encode() + b" " + str(q.modseq).encode()
        if q.known_uids is not None:
            inner += b" " + q.known_uids.render()
        if q.seq_match is not None:
            inner += b" (" + q.seq_match[0].render() + b" " + q.seq_match[1].render() + b")"
        params.append(b"QRESYNC (" + inner + b")")
    if params:
        out += b" (" + b" ".join(params) + b")"
    return out


def _w_create(cmd: c.CreateCommand) -> bytes:
    out = b" " + _mbox(cmd.mailbox)
    if cmd.special_use:
        out += b" (USE (" + b" ".join(u.encode("ascii") for u in cmd.special_use) + b"))"
    return out


def _w_list(cmd: c.ListCommand) -> bytes:
    out = b""
    if cmd.selection:
        out += b" (" + b" ".join(sorted(x.value.encode() for x in cmd.selection)) + b")"
    elif cmd.extended:
        out += b" ()"
    out += b" " + _ref(cmd.reference)
    if len(cmd.patterns) == 1 and not cmd.extended:
        out += b" " + _pattern(cmd.patterns[0])
    else:
        out += b" (" + b" ".join(_pattern(p) for p in cmd.patterns) + b")"
    if cmd.returns:
        opts = []
        for r in sorted(cmd.returns, key=lambda x: x.value):
            if r is c.ListReturn.STATUS:
                items = b" ".join(i.value.encode() for i in cmd.status_items)
                opts.append(b"STATUS (" + items + b")")
            else:
                opts.append(r.value.encode())
        out += b" RETURN (" + b" ".join(opts) + b")"
    return out


def _ref(value: str) -> bytes:
    return astring(encode_mutf7(value))


def _w_status(cmd: c.StatusCommand) -> bytes:
    return b" " + _mbox(cmd.mailbox) + b" (" + b" ".join(i.value.encode() for i in cmd.items) + b")"


def _w_append(cmd: c.AppendCommand) -> bytes:
    out = b" " + _mbox(cmd.mailbox)
    for msg in cmd.messages:
        if msg.flags:
            out += b" " + _flags(msg.flags)
        if msg.internal_date is not None:
            out += b" " + internal_date(msg.internal_date)
        data = literal(msg.data)
        if msg.binary:
            data = b"~" + data
        out += b" " + (b"UTF8 (" + data + b")" if msg.utf8 else data)
    return out


def _w_setquota(cmd: c.SetQuotaCommand) -> bytes:
    items = b" ".join(f"{r} {n}".encode("ascii") for r, n in cmd.limits)
    return b" " + astring(cmd.root) + b" (" + items + b")"


def _w_expunge(cmd: c.ExpungeCommand) -> bytes:
    return b"" if cmd.uids is None else b" " + cmd.uids.render()


def _w_search(cmd: c.SearchCommand) -> bytes:
    out = b""
    if cmd.returns is not None:
        out += b" RETURN (" + b" ".join(sorted(r.value.encode() for r in cmd.returns)) + b")"
    if cmd.charset is not None:
        out += b" CHARSET " + cmd.charset.encode("ascii")
    return out + b" " + _criteria(cmd.key)


def _section(sec: c.Section) -> bytes:
    return b"[" + sec.render() + b"]"


def _fetch_att(a: c.FetchAttribute) -> bytes:
    item = a.item
    if item in (c.FetchItem.BODY_SECTION, c.FetchItem.BINARY):
        base = b"BODY" if item is c.FetchItem.BODY_SECTION else b"BINARY"
        out = base + (b".PEEK" if a.peek else b"") + _section(a.section or c.Section())
        if a.partial is not None:
            out += f"<{a.partial.origin}.{a.partial.count}>".encode()
        return out
    if item is c.FetchItem.BINARY_SIZE:
        return b"BINARY.SIZE" + _section(a.section or c.Section())
    return item.value.encode()


def _w_fetch(cmd: c.FetchCommand) -> bytes:
    out = b" " + cmd.sequence.render() + b" (" + b" ".join(_fetch_att(a) for a in cmd.attributes)
    out += b")"
    mods = []
    if cmd.changedsince is not None:
        mods.append(b"CHANGEDSINCE " + str(cmd.changedsince).encode())
    if cmd.vanished:
        mods.append(b"VANISHED")
    if mods:
        out += b" (" + b" ".join(mods) + b")"
    return out


def _w_store(cmd: c.StoreCommand) -> bytes:
    out = b" " + cmd.sequence.render()
    if cmd.unchangedsince is not None:
        out += b" (UNCHANGEDSINCE " + str(cmd.unchangedsince).encode() + b")"
    out += b" " + cmd.mode.value.encode() + (b".SILENT" if cmd.silent else b"")
    return out + b" " + _flags(cmd.flags)


def _w_copy(cmd: c.CopyCommand | c.MoveCommand) -> bytes:
    return b" " + cmd.sequence.render() + b" " + _mbox(cmd.mailbox)


def _w_sort(cmd: c.SortCommand) -> bytes:
    crit = b" ".join(
        (b"REVERSE " if x.reverse else b"") + x.key.value.encode() for x in cmd.criteria
    )
    return b" (" + crit + b") " + cmd.charset.encode("ascii") + b" " + _criteria(cmd.key)


def _w_thread(cmd: c.ThreadCommand) -> bytes:
    return (
        b" " + cmd.algorithm.value.encode() + b" " + cmd.charset.encode("ascii") + b" "
    ) + _criteria(cmd.key)


_WRITERS: Final[dict[type[c.Command], Callable[[Any], bytes]]] = {
    c.CapabilityCommand: lambda cmd: b"",
    c.NoopCommand: lambda cmd: b"",
    c.LogoutCommand: lambda cmd: b"",
    c.IdCommand: _w_id,
    c.EnableCommand: lambda cmd: b"".join(b" " + x.encode("ascii") for x in cmd.capabilities),
    c.CompressCommand: lambda cmd: b" " + cmd.mechanism.encode("ascii"),
    c.StartTLSCommand: lambda cmd: b"",
    c.AuthenticateCommand: _w_authenticate,
    c.LoginCommand: lambda cmd: b" " + astring(cmd.username) + b" " + astring(cmd.password),
    c.SelectCommand: _w_select,
    c.ExamineCommand: _w_select,
    c.CreateCommand: _w_create,
    c.DeleteCommand: lambda cmd: b" " + _mbox(cmd.mailbox),
    c.RenameCommand: lambda cmd: b" " + _mbox(cmd.mailbox) + b" " + _mbox(cmd.new_mailbox),
    c.SubscribeCommand: lambda cmd: b" " + _mbox(cmd.mailbox),
    c.UnsubscribeCommand: lambda cmd: b" " + _mbox(cmd.mailbox),
    c.ListCommand: _w_list,
    c.LsubCommand: lambda cmd: b" " + _ref(cmd.reference) + b" " + _pattern(cmd.pattern),
    c.NamespaceCommand: lambda cmd: b"",
    c.StatusCommand: _w_status,
    c.AppendCommand: _w_append,
    c.IdleCommand: lambda cmd: b"",
    c.GetQuotaCommand: lambda cmd: b" " + astring(cmd.root),
    c.GetQuotaRootCommand: lambda cmd: b" " + _mbox(cmd.mailbox),
    c.SetQuotaCommand: _w_setquota,
    c.CheckCommand: lambda cmd: b"",
    c.CloseCommand: lambda cmd: b"",
    c.UnselectCommand: lambda cmd: b"",
    c.ExpungeCommand: _w_expunge,
    c.SearchCommand: _w_search,
    c.FetchCommand: _w_fetch,
    c.StoreCommand: _w_store,
    c.CopyCommand: _w_copy,
    c.MoveCommand: _w_copy,
    c.SortCommand: _w_sort,
    c.ThreadCommand: _w_thread,
}


def serialize_command(cmd: c.Command) -> bytes:
    """The command as a client would send it, ending in CRLF."""
    head = cmd.tag.encode("ascii") + b" " + cmd.command_name.encode("ascii")
    return head + _WRITERS[type(cmd)](cmd) + b"\r\n"
