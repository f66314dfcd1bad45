"""Selected-state commands: FETCH, STORE, SEARCH, SORT, THREAD, COPY, MOVE, EXPUNGE, CLOSE.

Data comes from the cheapest place that has it (the issue's rule, and Dovecot's):

* flags, UID, sizes, dates, MODSEQ: a store snapshot (arrays, no file touched);
* ENVELOPE and the From/To/Cc/Bcc/Subject SEARCH keys: the process-wide metadata cache
  (:mod:`.shared`) filled from the store's parsed metadata;
* BODYSTRUCTURE and section offsets: the store's parsed metadata;
* body sections: the message file, reading only the byte range the section names
  (``BODY[HEADER]`` reads the header, ``BODY[2]<0.100>`` at most 100 octets).

Work that blocks runs in worker threads, a chunk of messages at a time, so a FETCH over
100,000 messages streams out chunk by chunk. A chunk is at most FETCH_CHUNK messages and at
most MAX_RENDER_BYTES of message content (bounded from the snapshot's sizes before anything
is read), and its output goes to the client message by message once FLUSH_AT is reached.
The next chunk is rendered while the last one is being sent (reading files and writing
to the socket overlap): what one FETCH holds in memory is about two chunks, however many
messages it names.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import IO, TYPE_CHECKING, BinaryIO, Final

import trio

from store import (
    Flag,
    FlagMode,
    FolderNotFound,
    FolderSnapshot,
    MessageMetadata,
    MessageNotFound,
    MessageSummary,
    decode_words,
)
from store.flags import bits_to_flags
from store.metadata import decode_body
from store.mime import parse_header_block

from . import commands as c
from . import responses as r
from . import storemap
from .evaluate import SearchContext, compile_search
from .mailboxes import open_folder
from .model import Envelope
from .responses import ResponseCode, Status
from .search import (
    AndKey,
    BodyKey,
    DateField,
    DateKey,
    HeaderKey,
    TextKey,
    iter_keys,
    uses_modseq,
)
from .sections import (
    PartSpan,
    UnknownTransferEncoding,
    apply_partial,
    decode_transfer_encoding,
    filter_header_fields,
    parse_spans,
    resolve_section,
)
from .selected import SelectedFolder, ViewOptions
from .sequence import SequenceSet
from .settings import SEND_AS_IS_BYTES
from .shared import SEARCH_FIELDS, ImapShared
from .sortthread import sort_messages, thread_orderedsubject, thread_references
from .state import Outcome

if TYPE_CHECKING:
    from .session import Handler, ImapSession

__all__ = ["FETCH_CHUNK", "HANDLERS", "MAX_RENDER_BYTES", "BadSequence", "resolve_positions"]

# Messages rendered per worker-thread call during FETCH.
FETCH_CHUNK: Final = 2000
# Message content (literal octets) rendered per worker-thread call during FETCH: a chunk
# ends before the message that would take its bound past this (a single larger message
# is a chunk of its own). Without it, ``FETCH 1:* BODY.PEEK[]`` over 2000 messages of 8 MB
# would be read into memory before the first octet went out. Small enough that the
# sending of one chunk overlaps the reading of the next (a mail program downloading
# 1,000 messages of 2 KB gets them in four chunks), large enough that the thread hop per
# chunk does not count.
MAX_RENDER_BYTES: Final = 512 * 1024
# Body text decoded per message part for SEARCH BODY/TEXT (a search over a huge
# attachment does not decode all of it).
MAX_SEARCH_BODY: Final = 4 * 1024 * 1024

_MODE: Final = {
    c.StoreMode.REPLACE: FlagMode.REPLACE,
    c.StoreMode.ADD: FlagMode.ADD,
    c.StoreMode.REMOVE: FlagMode.REMOVE,
}


class BadSequence(Exception):
    """A message sequence number beyond EXISTS (RFC 3501 9: BAD)."""


def _selected(s: ImapSession) -> SelectedFolder:
    assert s.selected is not None  # the state table admits these only when selected
    return s.selected


def resolve_positions(sel: SelectedFolder, seqset: SequenceSet, *, uid: bool) -> list[int]:
    """0-based view positions a sequence set names, ascending."""
    uids = sel.uids
    if seqset.saved:  # RFC 5182 2.1: "$" holds UIDs
        out = []
        for u in sel.saved:
            pos = bisect.bisect_left(uids, u)
            if pos < len(uids) and uids[pos] == u:
                out.append(pos)
        return out
    positions: list[int] = []
    if uid:
        if not uids:
            return []
        for lo, hi in seqset.intervals(uids[-1]):
            positions.extend(range(bisect.bisect_left(uids, lo), bisect.bisect_right(uids, hi)))
        return positions
    n = len(uids)
    spans = seqset.intervals(n)
    if not n or spans[-1][1] > n:
        raise BadSequence("invalid message sequence number")
    for lo, hi in spans:
        positions.extend(range(lo - 1, hi))
    return positions


class _Columns:
    """A snapshot's per-position columns (flag bits, keywords, MODSEQs, sizes): reading
    them by position avoids a bisect per message in ``UID FETCH 1:* (FLAGS)``."""

    __slots__ = ("flags", "keywords", "modseqs", "sizes", "snap")

    def __init__(self, snap: FolderSnapshot) -> None:
        self.snap = snap
        self.flags = snap.flag_bits
        self.keywords = snap.keywords_by_uid
        self.modseqs = snap.modseqs
        self.sizes = snap.sizes

    def flag_set(self, spos: int, uid: int) -> frozenset[Flag]:
        return bits_to_flags(self.flags[spos])

    def keyword_set(self, spos: int, uid: int) -> frozenset[str]:
        return self.keywords.get(uid, _NO_KEYWORDS)

    def modseq(self, spos: int, uid: int) -> int:
        return self.modseqs[spos]

    def size(self, spos: int, uid: int) -> int:
        return self.sizes[spos]


_NO_KEYWORDS: Final[frozenset[str]] = frozenset()


def _summary(snap: FolderSnapshot, pos: int, uid: int) -> MessageSummary | None:
    """The snapshot entry of ``uid``, which usually sits at the view's position."""
    if pos < len(snap.uids) and snap.uids[pos] == uid:
        return snap.summary_at(pos)
    spos = snap.index_of(uid)
    return snap.summary_at(spos) if spos is not None else None


# --- FETCH -------------------------------------------------------------------------------

_META_ITEMS: Final = frozenset({c.FetchItem.BODY, c.FetchItem.BODYSTRUCTURE})
_BODY_ITEMS: Final = frozenset(
    {
        c.FetchItem.BODY_SECTION,
        c.FetchItem.BINARY,
        c.FetchItem.BINARY_SIZE,
        c.FetchItem.RFC822,
        c.FetchItem.RFC822_HEADER,
        c.FetchItem.RFC822_TEXT,
    }
)
_RFC822_SECTIONS: Final = {
    c.FetchItem.RFC822: c.Section(),
    c.FetchItem.RFC822_HEADER: c.Section(text=c.SectionText.HEADER),
    c.FetchItem.RFC822_TEXT: c.Section(text=c.SectionText.TEXT),
}


def _whole(attr: c.FetchAttribute) -> bool:
    """Whether the item is the entire message with no partial (no metadata needed)."""
    if attr.item is c.FetchItem.RFC822:
        return True
    if attr.item in (c.FetchItem.BODY_SECTION, c.FetchItem.BINARY):
        sec = attr.section
        return (sec is None or (not sec.part and sec.text is None)) and attr.partial is None
    return False


_HEADER_TEXTS: Final = frozenset(
    {c.SectionText.HEADER, c.SectionText.HEADER_FIELDS, c.SectionText.HEADER_FIELDS_NOT}
)
# How the content an item returns is bounded: by the message size, by the top-level header
# size (from metadata), or by the partial's count.
_B_SIZE, _B_HEADER, _B_PARTIAL = range(3)


def _content_bound(attr: c.FetchAttribute) -> tuple[int, int] | None:
    """(bound kind, partial count) of an item that returns message content; None for the
    others. Decoding (BINARY) and header filtering only shrink what they are given."""
    item = attr.item
    if item not in _BODY_ITEMS or item is c.FetchItem.BINARY_SIZE:
        return None
    if attr.partial is not None and item in (c.FetchItem.BODY_SECTION, c.FetchItem.BINARY):
        return _B_PARTIAL, attr.partial.count
    section = _RFC822_SECTIONS.get(item) or attr.section or c.Section()
    if not section.part and section.text in _HEADER_TEXTS:
        return _B_HEADER, 0
    return _B_SIZE, 0


class _FetchJob:
    """One FETCH command's plan, rendered chunk by chunk in worker threads."""

    def __init__(
        self,
        s: ImapSession,
        sel: SelectedFolder,
        cmd: c.FetchCommand,
        opts: ViewOptions,
    ) -> None:
        self.sel = sel
        self.cmd = cmd
        self.opts = opts
        self.shared: ImapShared = s.shared
        self.attrs = cmd.attributes
        # Response names of the body items (``BODY[1]<0>``), rendered once per command.
        self.names = {id(a): a.response_name() for a in cmd.attributes if a.item in _BODY_ITEMS}
        # Items that are the whole message as stored (BODY[], RFC822, BINARY[]): one read.
        self.whole = {id(a) for a in cmd.attributes if _whole(a)}
        items = {a.item for a in cmd.attributes}
        self.add_uid = cmd.uid
        # RFC 7162 3.1.4.1: CHANGEDSINCE implies MODSEQ in the responses.
        self.add_modseq = cmd.changedsince is not None and c.FetchItem.MODSEQ not in items
        self.envelope = c.FetchItem.ENVELOPE in items
        body = [a for a in cmd.attributes if a.item in _BODY_ITEMS]
        self.body = bool(body)
        self.meta = bool(items & _META_ITEMS) or any(not _whole(a) for a in body)
        self.bounds = [b for b in map(_content_bound, body) if b is not None]
        # Metadata read for messages beyond the last chunk's end, kept for the next one.
        self.metas_ahead: dict[int, MessageMetadata] = {}
        self.set_seen = not sel.readonly and any(a.sets_seen for a in cmd.attributes)
        self.snapshot: FolderSnapshot | None = None
        self.flag_cache: dict[tuple[frozenset[Flag], frozenset[str], bool], bytes] = {}
        # Items the index holds, and whole messages read straight from their files
        # (``UID FETCH 1:1000 (UID FLAGS BODY.PEEK[])``, how mail programs download).
        self.index_plan: tuple[int, ...] | None = None
        self.whole_items: list[tuple[bytes, bool]] = []  # (response name, BINARY[])
        if not self.meta and not self.set_seen:
            self.index_plan = _index_plan(cmd, self.whole_items, self.names)
        self.expunged = False
        self.bad_encoding = False
        self.paths: dict[int, str] = {}

    def _open(self, uid: int) -> BinaryIO:
        """The message file: by the path looked up for this batch, or through the store
        when a flag change in another session renamed it meanwhile."""
        path = self.paths.get(uid)
        if path is not None:
            try:
                # Unbuffered: each item reads its span in one call (see _read_span), and
                # a buffer per message costs more than the reads it would save.
                return open(path, "rb", buffering=0)
            except FileNotFoundError:
                pass
        return self.sel.folder.open_message(uid)

    def _flags(self, summary: MessageSummary) -> bytes:
        recent = not self.opts.rev2 and bool(self.sel.recent) and self.sel.is_recent(summary.uid)
        key = (summary.flags, summary.keywords, recent)
        value = self.flag_cache.get(key)
        if value is None:
            names = storemap.flag_names(summary.flags, summary.keywords)
            value = r.flag_list((*names, "\\Recent") if recent else names)
            self.flag_cache[key] = value
        return value

    def content_bound(self, summary: MessageSummary, meta: MessageMetadata | None) -> int:
        """An upper bound on the message content this FETCH returns for one message."""
        size = summary.size
        total = 0
        for kind, count in self.bounds:
            if kind == _B_PARTIAL:
                total += min(size, count)
            elif kind == _B_HEADER and meta is not None and not meta.parse_failed:
                total += min(size, meta.header_size)
            else:
                total += size
        return total

    def _metadata(self, uids: list[int]) -> dict[int, MessageMetadata]:
        ahead = self.metas_ahead
        missing = [u for u in uids if u not in ahead]
        metas = self.sel.folder.metadata(missing) if missing else {}
        for uid in uids:
            if uid not in metas and uid in ahead:
                metas[uid] = ahead[uid]
        return metas

    def render(self, positions: Sequence[int], start: int) -> tuple[list[bytes], int]:
        """Blocking: the FETCH responses of the next chunk of ``positions`` (view
        positions) from ``start``, and how many positions the chunk took."""
        sel = self.sel
        folder = sel.folder
        if self.snapshot is None:
            self.snapshot = folder.snapshot()
        snap = self.snapshot
        end = min(len(positions), start + FETCH_CHUNK)
        if self.index_plan is not None:
            return self._render_index(snap, positions[start:end], self.index_plan)
        changedsince = self.cmd.changedsince
        rows: list[tuple[int, MessageSummary]] = []  # (index in positions, summary)
        for i in range(start, end):
            pos = positions[i]
            summary = _summary(snap, pos, sel.uids[pos])
            if summary is None:
                self.expunged = True  # gone, not yet announced (RFC 3501 7.4.1)
                continue
            if changedsince is not None and summary.modseq <= changedsince:
                continue
            rows.append((i, summary))
        if not rows:
            return [], end - start
        metas: dict[int, MessageMetadata] = {}
        if self.meta:
            metas = self._metadata([s.uid for _, s in rows])
        if self.bounds:
            # The chunk ends before the message that would take it past MAX_RENDER_BYTES,
            # decided from sizes before any file is read.
            total = 0
            for k, (i, summary) in enumerate(rows):
                total += self.content_bound(summary, metas.get(summary.uid))
                if k and total > MAX_RENDER_BYTES:
                    end = i
                    self.metas_ahead = {s.uid: metas[s.uid] for _, s in rows[k:] if s.uid in metas}
                    rows = rows[:k]
                    break
            else:
                self.metas_ahead = {}
        rows = [(positions[i] + 1, summary) for i, summary in rows]
        uids = [s.uid for _, s in rows]
        seen_now: set[int] = set()
        if self.set_seen:
            unseen = [s.uid for _, s in rows if Flag.SEEN not in s.flags]
            if unseen:
                update = folder.store_flags(unseen, FlagMode.ADD, [Flag.SEEN])
                changed = {s.uid: s for s in update.changed}
                for uid_, s in changed.items():
                    sel.reported[uid_] = s.modseq  # already told: no second FETCH at sync
                seen_now = set(changed)
                rows = [(seq, changed.get(s.uid, s)) for seq, s in rows]
        envelopes: dict[int, bytes] = {}
        if self.envelope:
            envelopes = self.shared.metadata.envelopes(folder, sel.key, uids, utf8=self.opts.utf8)
        # Where the files are, in one store call for the batch (one lock, not one each).
        self.paths = folder.message_paths(uids) if self.body else {}
        out: list[bytes] = []
        for seq, summary in rows:
            line = self._one(seq, summary, envelopes, metas, summary.uid in seen_now)
            if line is None:
                continue
            if isinstance(line, bytes):
                out.append(line)
            else:
                out.extend(line)
        return out, end - start

    def _render_index(
        self, snap: FolderSnapshot, positions: Sequence[int], plan: tuple[int, ...]
    ) -> tuple[list[bytes], int]:
        """The fast path for items the index holds (``UID FETCH 1:* (FLAGS)``,
        ``FETCH 1:* (ENVELOPE)``) and whole messages: per message only the columns the
        items need, no summary objects (a 100k-message FETCH is a loop of dict and array
        lookups), and a message file is read with one open and one read. The FETCH
        responses and how many of ``positions`` they took (whole messages end a chunk
        at MAX_RENDER_BYTES, decided from the sizes before any file is read)."""
        sel = self.sel
        uids = sel.uids
        snap_uids = snap.uids
        count = len(snap_uids)
        changedsince = self.cmd.changedsince
        cols = _Columns(snap)
        whole = self.whole_items
        if whole:
            positions = self._within_render_bound(snap, cols, positions, len(whole))
            self.paths = sel.folder.message_paths([uids[p] for p in positions])
        envelopes: dict[int, bytes] = {}
        if self.envelope:
            wanted = [uids[p] for p in positions]
            envelopes = self.shared.metadata.envelopes(
                sel.folder, sel.key, wanted, utf8=self.opts.utf8
            )
        recent_ok = not self.opts.rev2 and bool(sel.recent)
        flag_bits = cols.flags
        keywords_of = cols.keywords.get
        flag_cache: dict[tuple[int, frozenset[str]], bytes] = {}  # (flag bits, keywords)
        out: list[bytes] = []
        append = out.append
        for pos in positions:
            uid = uids[pos]
            if pos < count and snap_uids[pos] == uid:
                spos = pos
            else:
                found = snap.index_of(uid)
                if found is None:
                    self.expunged = True  # gone, not yet announced (RFC 3501 7.4.1)
                    continue
                spos = found
            if changedsince is not None and cols.modseq(spos, uid) <= changedsince:
                continue
            if self.envelope and uid not in envelopes:
                continue  # expunged meanwhile
            content = b""
            if whole:
                read = self._read_whole(uid, cols.size(spos, uid))
                if read is None:
                    continue  # expunged meanwhile
                content = read
            parts: list[bytes] = []
            started = False  # whether pieces of this response went out already
            next_whole = 0
            for kind in plan:
                if kind == _P_UID:
                    parts.append(b"UID %d" % uid)
                elif kind == _P_FLAGS:
                    key = (flag_bits[spos], keywords_of(uid, _NO_KEYWORDS))
                    if recent_ok and sel.is_recent(uid):
                        names = storemap.flag_names(bits_to_flags(key[0]), key[1])
                        parts.append(b"FLAGS " + r.flag_list((*names, "\\Recent")))
                    else:
                        value = flag_cache.get(key)
                        if value is None:
                            names = storemap.flag_names(bits_to_flags(key[0]), key[1])
                            value = flag_cache[key] = b"FLAGS " + r.flag_list(names)
                        parts.append(value)
                elif kind == _P_MODSEQ:
                    parts.append(b"MODSEQ (%d)" % cols.modseq(spos, uid))  # RFC 7162 3.1.4
                elif kind == _P_SIZE:
                    parts.append(b"RFC822.SIZE %d" % cols.size(spos, uid))
                elif kind == _P_DATE:
                    date = snap.summary_at(spos).internal_date
                    parts.append(b"INTERNALDATE " + r.internal_date(date))
                elif kind == _P_ENVELOPE:
                    parts.append(b"ENVELOPE " + envelopes[uid])
                elif kind == _P_SAVEDATE:  # RFC 8514 4
                    saved = snap.summary_at(spos).save_date
                    value = b"NIL" if saved is None else r.internal_date(saved)
                    parts.append(b"SAVEDATE " + value)
                else:  # _P_WHOLE: the message as stored, BODY[] / RFC822 / BINARY[]
                    name, binary = whole[next_whole]
                    next_whole += 1
                    if len(content) < SEND_AS_IS_BYTES:
                        parts.append(name + b" " + r.section_data(content, binary=binary))
                    else:
                        # A large literal leaves as it was read (see _pieces).
                        parts.append(name + b" " + r.literal_prefix(content, binary=binary))
                        lead = b" " if started else b"* %d FETCH (" % (pos + 1)
                        append(lead + b" ".join(parts))
                        append(content)
                        parts = []
                        started = True
            if not started:
                append(b"* %d FETCH (%s)\r\n" % (pos + 1, b" ".join(parts)))
            elif parts:
                append(b" " + b" ".join(parts) + b")\r\n")
            else:
                append(b")\r\n")
        return out, len(positions)

    def _within_render_bound(
        self, snap: FolderSnapshot, cols: _Columns, positions: Sequence[int], copies: int
    ) -> Sequence[int]:
        """The leading positions whose messages (``copies`` times each) fit in
        MAX_RENDER_BYTES; at least one."""
        uids = self.sel.uids
        snap_uids = snap.uids
        count = len(snap_uids)
        total = 0
        for k, pos in enumerate(positions):
            uid = uids[pos]
            spos = pos if pos < count and snap_uids[pos] == uid else snap.index_of(uid)
            if spos is None:
                continue  # expunged: the render loop notes it
            total += copies * cols.size(spos, uid)
            if k and total > MAX_RENDER_BYTES:
                return positions[:k]
        return positions

    def _read_whole(self, uid: int, size: int) -> bytes | None:
        """The message file's ``size`` octets, by the path looked up for this chunk (one
        open, one read), or through the store when another session renamed it
        meanwhile; None when the message is gone."""
        path = self.paths.get(uid)
        if path is not None:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass
            else:
                try:
                    return _read_all(partial(os.read, fd), size)
                finally:
                    os.close(fd)
        try:
            with self.sel.folder.open_message(uid) as handle:
                return _read_span(handle, 0, size)
        except MessageNotFound:
            self.expunged = True
            return None

    def _one(
        self,
        seq: int,
        summary: MessageSummary,
        envelopes: dict[int, bytes],
        metas: dict[int, MessageMetadata],
        seen_now: bool,
    ) -> bytes | list[bytes] | None:
        """One message's FETCH response: one line, or pieces when a literal is large
        enough to leave on its own (see :func:`_pieces`); None when it cannot be read."""
        uid = summary.uid
        items: list[tuple[bytes, bytes]] = []
        names: set[bytes] = set()
        apart: dict[int, bytes] = {}  # item index -> literal content sent after its value

        def add(name: bytes, value: bytes, content: bytes | None = None) -> None:
            if name not in names:
                names.add(name)
                if content is not None:
                    apart[len(items)] = content
                items.append((name, value))

        if self.add_uid:
            add(b"UID", str(uid).encode())
        handle: IO[bytes] | None = None
        try:
            for attr in self.attrs:
                item = attr.item
                if item is c.FetchItem.FLAGS:
                    add(b"FLAGS", self._flags(summary))
                elif item is c.FetchItem.UID:
                    add(b"UID", str(uid).encode())
                elif item is c.FetchItem.INTERNALDATE:
                    add(b"INTERNALDATE", r.internal_date(summary.internal_date))
                elif item is c.FetchItem.RFC822_SIZE:
                    add(b"RFC822.SIZE", str(summary.size).encode())
                elif item is c.FetchItem.MODSEQ:
                    add(b"MODSEQ", b"(" + str(summary.modseq).encode() + b")")  # RFC 7162 3.1.4
                elif item is c.FetchItem.SAVEDATE:
                    saved = summary.save_date  # RFC 8514 4
                    add(b"SAVEDATE", b"NIL" if saved is None else r.internal_date(saved))
                elif item is c.FetchItem.ENVELOPE:
                    env = envelopes.get(uid)
                    if env is None:
                        return None  # expunged meanwhile
                    add(b"ENVELOPE", env)
                elif item in _META_ITEMS:
                    meta = metas.get(uid)
                    if meta is None:
                        return None
                    add(
                        item.value.encode(),
                        r.body_structure(
                            storemap.body_structure(meta.structure),
                            extensible=item is c.FetchItem.BODYSTRUCTURE,
                            utf8=self.opts.utf8,
                        ),
                    )
                else:
                    if handle is None:
                        handle = self._open(uid)
                    value, content = self._body_item(attr, handle, summary, metas.get(uid))
                    add(self.names[id(attr)], value, content)
        except MessageNotFound:
            self.expunged = True
            return None
        except UnknownTransferEncoding:
            self.bad_encoding = True
            return None
        finally:
            if handle is not None:
                handle.close()
        if self.add_modseq:
            add(b"MODSEQ", b"(" + str(summary.modseq).encode() + b")")
        if seen_now:
            add(b"FLAGS", self._flags(summary))  # RFC 3501 6.4.5: \Seen set as a side effect
        if apart:
            return _pieces(seq, items, apart)
        return r.fetch(seq, items)

    def _body_item(
        self,
        attr: c.FetchAttribute,
        handle: IO[bytes],
        summary: MessageSummary,
        meta: MessageMetadata | None,
    ) -> tuple[bytes, bytes | None]:
        """The item's value, and for a literal of SEND_AS_IS_BYTES or more its content
        apart (the value is then only the literal's ``{n}`` prefix): that content goes out
        as read, never copied into a joined response line."""
        item = attr.item
        if id(attr) in self.whole:
            data = _read_span(handle, 0, summary.size)
            binary = item is c.FetchItem.BINARY
            if len(data) >= SEND_AS_IS_BYTES:
                return r.literal_prefix(data, binary=binary), data
            return r.section_data(data, binary=binary), None
        binary = item in (c.FetchItem.BINARY, c.FetchItem.BINARY_SIZE)
        section = _RFC822_SECTIONS.get(item) or attr.section or c.Section()
        partial = attr.partial if item in (c.FetchItem.BODY_SECTION, c.FetchItem.BINARY) else None
        if _whole(attr) or (not section.part and section.text is None):
            start, end, fields, exclude, encoding = 0, summary.size, None, False, None
        else:
            spans = self._spans(handle, summary, meta)
            rng = resolve_section(spans, section, binary=binary)
            if rng is None:
                return (b"0" if item is c.FetchItem.BINARY_SIZE else r.section_data(None)), None
            start, end = rng.start, rng.end
            fields, exclude, encoding = rng.fields, rng.exclude, rng.encoding
        if partial is not None and fields is None and encoding is None:
            # Read only the octets asked for (RFC 3501 6.4.5 <origin.count>).
            start = min(end, start + partial.origin)
            end = min(end, start + partial.count)
            partial = None
        data = _read_span(handle, start, max(0, end - start))
        if fields is not None:
            data = filter_header_fields(data, fields, exclude=exclude)
        if encoding is not None:
            data = decode_transfer_encoding(data, encoding)  # RFC 3516 4.1
        if item is c.FetchItem.BINARY_SIZE:
            return str(len(data)).encode(), None  # RFC 3516 4.2
        if partial is not None:
            data = apply_partial(data, partial)
        binary = item is c.FetchItem.BINARY
        if len(data) >= SEND_AS_IS_BYTES:
            return r.literal_prefix(data, binary=binary), data
        return r.section_data(data, binary=binary), None

    @staticmethod
    def _spans(
        handle: IO[bytes], summary: MessageSummary, meta: MessageMetadata | None
    ) -> PartSpan:
        if meta is not None and not meta.parse_failed:
            return storemap.part_spans(meta.structure)
        handle.seek(0)
        return parse_spans(handle.read())  # no usable cached structure: locate the parts


def _read_span(handle: IO[bytes], start: int, length: int) -> bytes:
    """``length`` octets from ``start`` (fewer at the end of the file). An unbuffered
    file reads with one system call, which may return less than asked: go on until done."""
    handle.seek(start)
    return _read_all(handle.read, length)


def _read_all(read: Callable[[int], bytes], length: int) -> bytes:
    """``length`` octets from ``read`` (fewer at the end of the file), asking again after
    a short read."""
    data = read(length)
    if len(data) >= length or not data:
        return data
    parts = [data]
    got = len(data)
    while got < length:
        more = read(length - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _pieces(seq: int, items: list[tuple[bytes, bytes]], apart: dict[int, bytes]) -> list[bytes]:
    """The octets of ``r.fetch(seq, items)`` with the literal content of the items in
    ``apart`` inserted after their values, as separate pieces (no copy of the content)."""
    out: list[bytes] = []
    line: list[bytes] = [b"* %d FETCH (" % seq]
    for index, (name, value) in enumerate(items):
        line.append(b"%s%s %s" % (b" " if index else b"", name, value))
        content = apart.get(index)
        if content is not None:
            out.append(b"".join(line))
            out.append(content)
            line = []
    line.append(b")\r\n")
    out.append(b"".join(line))
    return out


_P_UID, _P_FLAGS, _P_MODSEQ, _P_SIZE, _P_DATE, _P_ENVELOPE, _P_SAVEDATE, _P_WHOLE = range(8)
_PLAN_KINDS: Final = {
    c.FetchItem.UID: _P_UID,
    c.FetchItem.FLAGS: _P_FLAGS,
    c.FetchItem.MODSEQ: _P_MODSEQ,
    c.FetchItem.RFC822_SIZE: _P_SIZE,
    c.FetchItem.INTERNALDATE: _P_DATE,
    c.FetchItem.ENVELOPE: _P_ENVELOPE,
    c.FetchItem.SAVEDATE: _P_SAVEDATE,
}


def _index_plan(
    cmd: c.FetchCommand, whole: list[tuple[bytes, bool]], names: dict[int, bytes]
) -> tuple[int, ...] | None:
    """The column kinds of a FETCH of index items and whole messages, in response order
    (UID first for UID FETCH, RFC 3501 6.4.8; MODSEQ added by CHANGEDSINCE, RFC 7162
    3.1.4.1); None when an item needs more. Each _P_WHOLE has its (response name,
    BINARY[]) appended to ``whole``."""
    plan: list[int] = [_P_UID] if cmd.uid else []
    seen: set[bytes] = set()
    for attr in cmd.attributes:
        if _whole(attr):
            name = names[id(attr)]
            if name not in seen:  # one response item per name, as _one adds them
                seen.add(name)
                plan.append(_P_WHOLE)
                whole.append((name, attr.item is c.FetchItem.BINARY))
            continue
        kind = _PLAN_KINDS.get(attr.item)
        if kind is None:
            whole.clear()
            return None
        if kind not in plan:
            plan.append(kind)
    if cmd.changedsince is not None and _P_MODSEQ not in plan:
        plan.append(_P_MODSEQ)
    return tuple(plan)


async def fetch(s: ImapSession, cmd: c.FetchCommand) -> bytes:
    sel = _selected(s)
    try:
        positions = resolve_positions(sel, cmd.sequence, uid=cmd.uid)
    except BadSequence as exc:
        return r.tagged(cmd.tag, Status.BAD, str(exc))
    if cmd.changedsince is not None or any(a.item is c.FetchItem.MODSEQ for a in cmd.attributes):
        s.condstore = True  # RFC 7162 3.1: CONDSTORE-enabling
    job = _FetchJob(s, sel, cmd, s.view_options)
    if cmd.vanished and cmd.changedsince is not None:
        # RFC 7162 3.2.6: expunged UIDs of the set since CHANGEDSINCE, before the FETCHes.
        changes = await s.run_sync(sel.folder.changes_since, cmd.changedsince)
        top = sel.max_uid
        gone = (
            [u for u in changes.vanished if u <= top and cmd.sequence.contains(u, top)]
            if not cmd.sequence.saved
            else []
        )
        if gone:
            s.emit(r.vanished(gone, earlier=True))
    # Chunks are rendered one ahead of the one being sent: a rendezvous channel (no
    # buffer), so at most the chunk being sent and the next one are held.
    send_chunk, receive_chunk = trio.open_memory_channel[tuple[list[bytes], bool]](0)

    async def render_chunks() -> None:
        async with send_chunk:
            done = 0
            while done < len(positions):
                lines, taken = await s.run_sync(job.render, positions, done)
                done += taken
                await send_chunk.send((lines, done < len(positions)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(render_chunks)
        async with receive_chunk:
            async for lines, more in receive_chunk:
                s.emit_all(lines)
                if more or s.flush_due:
                    await s.flush()  # all of it, while the next chunk is read
    if job.bad_encoding:
        return r.tagged(cmd.tag, Status.NO, "unknown Content-Transfer-Encoding", r.UNKNOWN_CTE)
    if job.expunged and not cmd.uid:
        return r.tagged(cmd.tag, Status.NO, "some messages were expunged", r.EXPUNGEISSUED)
    return r.tagged(cmd.tag, Status.OK, "FETCH completed")


# --- STORE -------------------------------------------------------------------------------


async def store(s: ImapSession, cmd: c.StoreCommand) -> bytes:
    sel = _selected(s)
    if sel.readonly:
        return r.tagged(cmd.tag, Status.NO, "mailbox is read-only", r.READ_ONLY)
    try:
        positions = resolve_positions(sel, cmd.sequence, uid=cmd.uid)
    except BadSequence as exc:
        return r.tagged(cmd.tag, Status.BAD, str(exc))
    if cmd.unchangedsince is not None:
        s.condstore = True
    opts = s.view_options
    flags, keywords = storemap.split_flags(cmd.flags)
    uids = [sel.uids[p] for p in positions]

    def run() -> tuple[list[bytes], list[int]]:
        update = sel.folder.store_flags(
            uids, _MODE[cmd.mode], flags, keywords, unchanged_since=cmd.unchangedsince
        )
        changed = {s.uid: s for s in update.changed}
        for uid, new in changed.items():
            sel.reported[uid] = new.modseq
        snap = sel.folder.snapshot() if not cmd.silent else None
        out: list[bytes] = []
        for pos in positions:
            uid = sel.uids[pos]
            summary: MessageSummary | None = changed.get(uid)
            if snap is not None and summary is None:
                summary = _summary(snap, pos, uid)
            if summary is None:
                continue
            items: list[tuple[bytes, bytes]] = []
            if cmd.uid or opts.qresync:
                items.append((b"UID", str(uid).encode()))
            if not cmd.silent:
                items.append((b"FLAGS", r.flag_list(sel.flags_of(summary, opts.rev2))))
            elif uid not in changed or not opts.condstore:
                continue
            if opts.condstore:
                items.append((b"MODSEQ", b"(" + str(summary.modseq).encode() + b")"))
            out.append(r.fetch(pos + 1, items))
        return out, list(update.failed)

    lines, failed = await s.run_sync(run)
    s.emit_all(lines)
    if failed:
        numbers = failed if cmd.uid else [sel.seq_of(u) or 0 for u in failed]
        code = ResponseCode.modified([n for n in numbers if n])  # RFC 7162 3.1.3
        return r.tagged(cmd.tag, Status.OK, "conditional STORE failed", code)
    return r.tagged(cmd.tag, Status.OK, "STORE completed")


# --- COPY / MOVE -------------------------------------------------------------------------


async def copy(s: ImapSession, cmd: c.CopyCommand | c.MoveCommand) -> bytes:
    sel = _selected(s)
    moving = isinstance(cmd, c.MoveCommand)
    if moving and sel.readonly:
        return r.tagged(cmd.tag, Status.NO, "mailbox is read-only", r.READ_ONLY)
    try:
        positions = resolve_positions(sel, cmd.sequence, uid=cmd.uid)
    except BadSequence as exc:
        return r.tagged(cmd.tag, Status.BAD, str(exc))
    mailbox = s.mailbox
    assert mailbox is not None
    try:
        dest = await s.run_sync(open_folder, mailbox, cmd.mailbox)
    except FolderNotFound:
        return r.tagged(cmd.tag, Status.NO, "no such mailbox", r.TRYCREATE)  # RFC 3501 6.4.7
    uids = [sel.uids[p] for p in positions]
    if not uids:
        return r.tagged(cmd.tag, Status.OK, f"{cmd.name} completed (nothing to do)")
    if moving:
        result = await s.run_sync(sel.folder.move_to, uids, dest)
    else:
        result = await s.run_sync(sel.folder.copy_to, uids, dest)
    if not result.mapping:
        return r.tagged(cmd.tag, Status.NO, "messages were expunged", r.EXPUNGEISSUED)
    code = ResponseCode.copyuid(result.uidvalidity, result.source_uids, result.dest_uids)
    if not moving:
        return r.tagged(cmd.tag, Status.OK, "COPY completed", code)
    # RFC 6851 4.3: COPYUID in an untagged OK, then the expunges, then the tagged OK.
    s.emit(r.untagged_status(Status.OK, "moved", code))
    s.emit_all(sel.remove(sorted(result.source_uids), s.view_options))
    return r.tagged(cmd.tag, Status.OK, "MOVE completed")


# --- EXPUNGE / CLOSE / UNSELECT ----------------------------------------------------------


def _deleted_uids(sel: SelectedFolder, only: SequenceSet | None) -> list[int]:
    snap = sel.folder.snapshot()
    top = sel.max_uid
    out = []
    for uid in snap.uids:
        if only is not None and not only.contains(uid, top):
            continue
        if Flag.DELETED in snap.flags(uid) and sel.seq_of(uid) is not None:
            out.append(uid)
    return out


async def _expunge_deleted(
    s: ImapSession, sel: SelectedFolder, only: SequenceSet | None
) -> list[int]:
    def run() -> list[int]:
        uids = _deleted_uids(sel, only)
        if not uids:
            return []
        return list(sel.folder.expunge(uids).uids)

    return await s.run_sync(run)


async def expunge(s: ImapSession, cmd: c.ExpungeCommand) -> bytes:
    sel = _selected(s)
    if sel.readonly:
        return r.tagged(cmd.tag, Status.NO, "mailbox is read-only", r.READ_ONLY)
    only = cmd.uids
    if only is not None and only.saved:
        only = SequenceSet.of(sel.saved) if sel.saved else None
        if only is None:
            return r.tagged(cmd.tag, Status.OK, "EXPUNGE completed")
    gone = await _expunge_deleted(s, sel, only)
    s.emit_all(sel.remove(sorted(gone), s.view_options))
    if s.view_options.condstore:
        status = await s.run_sync(sel.folder.status)
        code = ResponseCode.highestmodseq(status.highestmodseq)  # RFC 7162 3.2.7 (and 3.1.8)
        return r.tagged(cmd.tag, Status.OK, "EXPUNGE completed", code)
    return r.tagged(cmd.tag, Status.OK, "EXPUNGE completed")


async def close(s: ImapSession, cmd: c.CloseCommand | c.UnselectCommand) -> bytes:
    sel = _selected(s)
    if isinstance(cmd, c.CloseCommand) and not sel.readonly:
        await _expunge_deleted(s, sel, None)  # RFC 3501 6.4.2: silently, no EXPUNGE responses
    s.selected = None
    s.unsubscribe()
    s.transition(Outcome.UNSELECTED)
    return r.tagged(cmd.tag, Status.OK, f"{cmd.name} completed")


# --- SEARCH / SORT / THREAD --------------------------------------------------------------


class _SearchSource:
    """What the records of one SEARCH share: the snapshot, cached fields, metadata."""

    def __init__(self, s: ImapSession, sel: SelectedFolder, needs: set[str]) -> None:
        self.sel = sel
        self.folder = sel.folder
        self.snapshot = sel.folder.snapshot()
        self.columns = _Columns(self.snapshot)
        self.shared = s.shared
        self.needs = needs
        self.fields: dict[int, str] = {}
        self.metas: dict[int, MessageMetadata] = {}

    def prepare(self, uids: list[int]) -> None:
        if "fields" in self.needs:
            self.fields = self.shared.metadata.search_fields(self.folder, self.sel.key, uids)
        if "meta" in self.needs:
            self.metas = self.folder.metadata(uids)


class _Record:
    """A :class:`~protocols.imap.evaluate.MessageRecord` over the snapshot, lazily: a
    search over 100k messages builds no summaries it does not look at."""

    __slots__ = ("_header", "_spos", "_src", "_summary", "seq", "uid")

    def __init__(self, src: _SearchSource, seq: int, spos: int, uid: int) -> None:
        self._src = src
        self.seq = seq
        self.uid = uid
        self._spos = spos
        self._summary: MessageSummary | None = None
        self._header: bytes | None = None

    def _get_summary(self) -> MessageSummary:
        if self._summary is None:
            self._summary = self._src.snapshot.summary_at(self._spos)
        return self._summary

    @property
    def flags(self) -> frozenset[str]:
        cols = self._src.columns
        names = storemap.flag_names(
            cols.flag_set(self._spos, self.uid), cols.keyword_set(self._spos, self.uid)
        )
        return frozenset(names)

    @property
    def recent(self) -> bool:
        return self._src.sel.is_recent(self.uid)

    @property
    def size(self) -> int:
        return self._src.columns.size(self._spos, self.uid)

    @property
    def internal_date(self) -> dt.datetime:
        return self._get_summary().internal_date

    @property
    def save_date(self) -> dt.datetime | None:
        return self._get_summary().save_date

    @property
    def modseq(self) -> int:
        return self._src.columns.modseq(self._spos, self.uid)

    def _meta(self) -> MessageMetadata | None:
        meta = self._src.metas.get(self.uid)
        if meta is None:
            found = self._src.folder.metadata([self.uid])
            meta = found.get(self.uid)
        return meta

    @property
    def sent_date(self) -> dt.datetime | None:
        meta = self._meta()
        return meta.sent_date if meta is not None else None

    @property
    def subject(self) -> str:
        meta = self._meta()
        return meta.subject if meta is not None else ""

    @property
    def envelope(self) -> Envelope:
        meta = self._meta()
        return storemap.envelope(meta.envelope) if meta is not None else Envelope()

    def _header_bytes(self) -> bytes:
        if self._header is None:
            meta = self._meta()
            length = meta.header_size if meta is not None else None
            try:
                self._header = self._src.folder.read_message(self.uid, 0, length)
            except MessageNotFound:
                self._header = b""
        return self._header

    def header_values(self, name: str) -> Sequence[str]:
        fields = self._src.fields.get(self.uid)
        if fields is not None and name in SEARCH_FIELDS:
            value = fields.split("\n")[SEARCH_FIELDS.index(name)]
            return (value,) if value else ()
        if name == "references":
            meta = self._meta()
            if meta is not None and meta.references:
                return (" ".join(f"<{ref}>" for ref in meta.references),)
            return ()
        header = self._header_bytes()
        block = parse_header_block(header, 0, len(header))
        return [decode_words(v) for v in block.get_all(name)]

    def header_text(self) -> str:
        return decode_words(self._header_bytes().decode("utf-8", "replace"))

    def body_text(self) -> str:
        meta = self._meta()
        try:
            raw = self._src.folder.read_message(self.uid)
        except MessageNotFound:
            return ""
        if meta is None:
            return raw.decode("utf-8", "replace")
        texts = []
        for _, part in meta.structure.walk():
            if part.is_multipart:
                continue
            if part.type == "text" or part.type == "message":
                texts.append(decode_body(raw, part, MAX_SEARCH_BODY))
        return "\n".join(texts)


def _single_cached_field(key: object) -> tuple[str, str] | None:
    """(field, value) when the whole search is one non-empty header key the metadata
    cache holds."""
    while isinstance(key, AndKey) and len(key.keys) == 1:
        key = key.keys[0]
    if isinstance(key, HeaderKey) and key.field in SEARCH_FIELDS and key.value:
        return key.field, key.value
    return None


def _needs(key: object) -> set[str]:
    needs: set[str] = set()
    for node in iter_keys(key):  # type: ignore[arg-type]  # SearchKey union
        if isinstance(node, HeaderKey):
            needs.add("fields" if node.field in SEARCH_FIELDS else "meta")
        elif isinstance(node, BodyKey | TextKey) or (
            isinstance(node, DateKey) and node.field is DateField.SENT
        ):
            needs.add("meta")
    return needs


def _run_search(
    s: ImapSession,
    sel: SelectedFolder,
    key: object,
    extra_needs: set[str],
    finish: Callable[[list[_Record]], list[_Record]] | None = None,
) -> list[_Record]:
    """Blocking: the records matching ``key``, in mailbox order (or ``finish``'s order)."""
    src = _SearchSource(s, sel, _needs(key) | extra_needs)
    snap = src.snapshot
    snap_uids = snap.uids
    count = len(snap_uids)
    records: list[_Record] = []
    for pos, uid in enumerate(sel.uids):
        if pos < count and snap_uids[pos] == uid:
            records.append(_Record(src, pos + 1, pos, uid))
        else:
            spos = snap.index_of(uid)
            if spos is not None:
                records.append(_Record(src, pos + 1, spos, uid))
    src.prepare([rec.uid for rec in records])
    field = _single_cached_field(key)
    if field is not None and finish is None:
        # The common client search (FROM x, SUBJECT y): one substring test per message
        # over the cached, case-folded fields.
        index = SEARCH_FIELDS.index(field[0])
        needle = field[1].casefold()
        fields = src.fields
        hits = []
        for rec in records:
            text = fields.get(rec.uid)
            if text is not None and needle in text.split("\n")[index]:
                hits.append(rec)
        return hits
    ctx = SearchContext(
        max_seq=len(sel.uids),
        max_uid=sel.max_uid,
        saved_uids=frozenset(sel.saved),
        save_dates=True,  # the store keeps a save date in every mail folder
    )
    match = compile_search(key, ctx)  # type: ignore[arg-type]  # SearchKey union
    found = [rec for rec in records if match(rec)]
    return finish(found) if finish is not None else found


async def search(s: ImapSession, cmd: c.SearchCommand) -> bytes:
    sel = _selected(s)
    if uses_modseq(cmd.key):
        s.condstore = True  # RFC 7162 3.1
    found = await s.run_sync(_run_search, s, sel, cmd.key, set())
    numbers = [rec.uid if cmd.uid else rec.seq for rec in found]
    modseq = max((rec.modseq for rec in found), default=None) if uses_modseq(cmd.key) else None
    returns = cmd.returns
    if returns is None and s.rev2:
        returns = frozenset({c.SearchReturn.ALL})  # RFC 9051 6.4.4: ESEARCH in rev2
    if returns is not None and c.SearchReturn.SAVE in returns:
        # RFC 5182 2.4: with MIN/MAX only those are saved.
        saved = found
        if c.SearchReturn.MIN in returns or c.SearchReturn.MAX in returns:
            picks = []
            if found and c.SearchReturn.MIN in returns:
                picks.append(found[0])
            if found and c.SearchReturn.MAX in returns:
                picks.append(found[-1])
            saved = picks
        sel.saved = tuple(sorted({rec.uid for rec in saved}))
    if returns is None:
        s.emit(r.search(numbers, modseq=modseq))
    else:
        # RFC 4731 3.1 (RFC 5182 2.1: nothing at all when SAVE is the only option).
        wanted = returns or frozenset({c.SearchReturn.ALL})
        s.emit(r.esearch(cmd.tag, numbers, wanted, uid=cmd.uid, modseq=modseq))
    return r.tagged(cmd.tag, Status.OK, "SEARCH completed")


_SORT_META: Final = frozenset(
    {c.SortKey.CC, c.SortKey.DATE, c.SortKey.FROM, c.SortKey.SUBJECT, c.SortKey.TO}
)


async def sort(s: ImapSession, cmd: c.SortCommand) -> bytes:
    sel = _selected(s)
    needs = {"meta"} if any(cr.key in _SORT_META for cr in cmd.criteria) else set()
    criteria = cmd.criteria

    def finish(found: list[_Record]) -> list[_Record]:
        return sort_messages(found, criteria)

    found = await s.run_sync(_run_search, s, sel, cmd.key, needs, finish)
    s.emit(r.sort(rec.uid if cmd.uid else rec.seq for rec in found))
    return r.tagged(cmd.tag, Status.OK, "SORT completed")


async def thread(s: ImapSession, cmd: c.ThreadCommand) -> bytes:
    sel = _selected(s)
    found = await s.run_sync(_run_search, s, sel, cmd.key, {"meta"})
    if cmd.algorithm is c.ThreadAlgorithm.REFERENCES:
        roots = await s.run_sync(lambda: thread_references(found, uid=cmd.uid))
    else:
        roots = await s.run_sync(lambda: thread_orderedsubject(found, uid=cmd.uid))
    s.emit(r.thread(roots))
    return r.tagged(cmd.tag, Status.OK, "THREAD completed")


HANDLERS: Final[dict[type[c.Command], Handler]] = {
    c.FetchCommand: fetch,
    c.StoreCommand: store,
    c.CopyCommand: copy,
    c.MoveCommand: copy,
    c.ExpungeCommand: expunge,
    c.CloseCommand: close,
    c.UnselectCommand: close,
    c.SearchCommand: search,
    c.SortCommand: sort,
    c.ThreadCommand: thread,
}
