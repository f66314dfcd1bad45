"""Property tests: valid commands round-trip; no input makes the reader raise."""

from __future__ import annotations

import datetime as dt
import string as stdstring

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.imap import commands as c
from protocols.imap import search as s
from protocols.imap.mutf7 import encode_mutf7
from protocols.imap.names import decode_mailbox_name
from protocols.imap.parser import (
    NEED_DATA,
    BadCommand,
    CommandReader,
    ContinuationLine,
    ContinuationNeeded,
    Event,
    ParseContext,
    parse_command,
)
from protocols.imap.sequence import SeqRange, SequenceSet
from protocols.imap.serialize import serialize_command

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TAG_CHARS = stdstring.ascii_letters + stdstring.digits + ".-_!#&'"
ATOM_CHARS = stdstring.ascii_letters + stdstring.digits + "$-_.!#&'+,/:;<=>?@^`|~["
U32 = 2**32 - 1
U63 = 2**63 - 1

tags = st.text(TAG_CHARS, min_size=1, max_size=12)
atoms = st.text(ATOM_CHARS, min_size=1, max_size=12)
upper_atoms = atoms.map(str.upper)
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
octets = st.binary(max_size=40).filter(lambda b: b"\x00" not in b)
modseqs = st.integers(0, U63)
numbers = st.integers(1, U32)

mailboxes = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=15,
).map(lambda name: decode_mailbox_name(encode_mutf7(name)))

seq_numbers = st.one_of(numbers, st.none())
seq_ranges = st.tuples(seq_numbers, seq_numbers).map(lambda t: SeqRange(*t))
sequence_sets = st.one_of(
    st.lists(seq_ranges, min_size=1, max_size=5).map(lambda r: SequenceSet(tuple(r))),
    st.just(SequenceSet(saved=True)),
)
static_sets = st.lists(
    st.tuples(numbers, numbers).map(lambda t: SeqRange(*t)), min_size=1, max_size=4
).map(lambda r: SequenceSet(tuple(r)))

system_flags = st.sampled_from(["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"])
keywords = st.text(stdstring.ascii_letters + "$_-", min_size=1, max_size=10)
flags = st.lists(st.one_of(system_flags, keywords), unique=True, max_size=5).map(tuple)

dates = st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31))
date_times = st.builds(
    lambda d, h, m, sec, off: dt.datetime(
        d.year, d.month, d.day, h, m, sec, tzinfo=dt.timezone(dt.timedelta(minutes=off))
    ),
    dates,
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(-23 * 60, 23 * 60),
)
header_names = st.text(
    "".join(chr(i) for i in range(0x21, 0x7F) if chr(i) != ":"), min_size=1, max_size=10
)

leaf_keys = st.one_of(
    st.just(s.AllKey()),
    st.builds(s.FlagKey, flag=st.one_of(system_flags, keywords), present=st.booleans()),
    st.sampled_from([s.RecentKey(), s.NewKey(), s.OldKey(), s.SaveDateSupportedKey()]),
    st.builds(s.HeaderKey, field=header_names.map(str.lower), value=texts),
    st.builds(s.BodyKey, value=texts),
    st.builds(s.TextKey, value=texts),
    st.builds(
        s.DateKey, field=st.sampled_from(s.DateField), op=st.sampled_from(s.DateOp), date=dates
    ),
    st.builds(s.SizeKey, larger=st.booleans(), size=st.integers(0, U63)),
    st.builds(s.SequenceKey, sequence=sequence_sets, uid=st.booleans()),
    st.builds(s.ModSeqKey, modseq=modseqs),
    st.builds(
        s.ModSeqKey,
        modseq=modseqs,
        entry_name=st.sampled_from(["/flags/\\Seen", "/flags/$Junk"]),
        entry_type=st.sampled_from(["priv", "shared", "all"]),
    ),
)
search_keys = st.recursive(
    leaf_keys,
    lambda inner: st.one_of(
        st.builds(s.NotKey, key=inner),
        st.builds(s.OrKey, left=inner, right=inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda ks: s.AndKey(keys=tuple(ks))),
    ),
    max_leaves=8,
)

parts = st.lists(st.integers(1, 50), min_size=1, max_size=4).map(tuple)
sections = st.one_of(
    st.just(c.Section()),
    st.builds(c.Section, part=parts),
    st.builds(
        c.Section,
        part=st.one_of(st.just(()), parts),
        text=st.sampled_from([c.SectionText.HEADER, c.SectionText.TEXT]),
    ),
    st.builds(c.Section, part=parts, text=st.just(c.SectionText.MIME)),
    st.builds(
        c.Section,
        part=st.one_of(st.just(()), parts),
        text=st.sampled_from([c.SectionText.HEADER_FIELDS, c.SectionText.HEADER_FIELDS_NOT]),
        fields=st.lists(header_names, min_size=1, max_size=3).map(tuple),
    ),
)
partials = st.one_of(st.none(), st.builds(c.Partial, origin=st.integers(0, U32), count=numbers))
simple_items = st.sampled_from(
    [
        i
        for i in c.FetchItem
        if i not in (c.FetchItem.BODY_SECTION, c.FetchItem.BINARY, c.FetchItem.BINARY_SIZE)
    ]
)
fetch_attributes = st.one_of(
    st.builds(c.FetchAttribute, item=simple_items),
    st.builds(
        c.FetchAttribute,
        item=st.just(c.FetchItem.BODY_SECTION),
        section=sections,
        partial=partials,
        peek=st.booleans(),
    ),
    st.builds(
        c.FetchAttribute,
        item=st.just(c.FetchItem.BINARY),
        section=st.builds(c.Section, part=st.one_of(st.just(()), parts)),
        partial=partials,
        peek=st.booleans(),
    ),
    st.builds(
        c.FetchAttribute,
        item=st.just(c.FetchItem.BINARY_SIZE),
        section=st.builds(c.Section, part=st.one_of(st.just(()), parts)),
    ),
)


@st.composite
def fetch_commands(draw: st.DrawFn) -> c.FetchCommand:
    uid = draw(st.booleans())
    changedsince = draw(st.one_of(st.none(), modseqs))
    vanished = uid and changedsince is not None and draw(st.booleans())
    return c.FetchCommand(
        tag=draw(tags),
        uid=uid,
        sequence=draw(sequence_sets),
        attributes=tuple(draw(st.lists(fetch_attributes, min_size=1, max_size=5, unique=True))),
        changedsince=changedsince,
        vanished=vanished,
    )


@st.composite
def list_commands(draw: st.DrawFn) -> c.ListCommand:
    selection = set(draw(st.lists(st.sampled_from(c.ListSelect), unique=True, max_size=3)))
    if selection and selection <= {c.ListSelect.RECURSIVEMATCH, c.ListSelect.REMOTE}:
        selection.add(c.ListSelect.SUBSCRIBED)
    returns = frozenset(draw(st.lists(st.sampled_from(c.ListReturn), unique=True, max_size=3)))
    status_items: tuple[c.StatusItem, ...] = ()
    if c.ListReturn.STATUS in returns:
        status_items = tuple(
            draw(st.lists(st.sampled_from(c.StatusItem), min_size=1, unique=True, max_size=4))
        )
    patterns = tuple(draw(st.lists(texts, min_size=1, max_size=3)))
    extended = bool(selection or returns or len(patterns) > 1 or draw(st.booleans()))
    return c.ListCommand(
        tag=draw(tags),
        reference=draw(texts),
        patterns=patterns,
        selection=frozenset(selection),
        returns=returns,
        status_items=status_items,
        extended=extended,
    )


qresync = st.builds(
    c.QResyncParams,
    uidvalidity=numbers,
    modseq=modseqs,
    known_uids=st.one_of(st.none(), static_sets),
    seq_match=st.one_of(st.none(), st.tuples(static_sets, static_sets)),
)
append_messages = st.one_of(
    st.builds(
        c.AppendMessage,
        data=octets,
        flags=flags,
        internal_date=st.one_of(st.none(), date_times),
        utf8=st.booleans(),
    ),
    st.builds(c.AppendMessage, data=st.binary(max_size=20), binary=st.just(True)),
)
search_returns = st.one_of(
    st.none(),
    st.lists(st.sampled_from(c.SearchReturn), min_size=1, unique=True).map(frozenset),
)
id_params = st.one_of(
    st.none(),
    st.lists(
        st.tuples(
            st.text(stdstring.ascii_letters, min_size=1, max_size=30),
            st.one_of(st.none(), texts),
        ),
        max_size=5,
    ).map(tuple),
)

commands = st.one_of(
    st.builds(c.CapabilityCommand, tag=tags),
    st.builds(c.NoopCommand, tag=tags),
    st.builds(c.LogoutCommand, tag=tags),
    st.builds(c.StartTLSCommand, tag=tags),
    st.builds(c.NamespaceCommand, tag=tags),
    st.builds(c.IdleCommand, tag=tags),
    st.builds(c.CheckCommand, tag=tags),
    st.builds(c.CloseCommand, tag=tags),
    st.builds(c.UnselectCommand, tag=tags),
    st.builds(c.IdCommand, tag=tags, params=id_params),
    st.builds(
        c.EnableCommand,
        tag=tags,
        capabilities=st.lists(upper_atoms, min_size=1, unique=True, max_size=4).map(tuple),
    ),
    st.builds(c.CompressCommand, tag=tags, mechanism=upper_atoms),
    st.builds(
        c.AuthenticateCommand,
        tag=tags,
        mechanism=upper_atoms,
        initial_response=st.one_of(st.none(), st.binary(max_size=30)),
    ),
    st.builds(c.LoginCommand, tag=tags, username=texts, password=octets),
    st.builds(
        c.SelectCommand,
        tag=tags,
        mailbox=mailboxes,
        condstore=st.booleans(),
        qresync=st.one_of(st.none(), qresync),
    ),
    st.builds(c.ExamineCommand, tag=tags, mailbox=mailboxes, condstore=st.booleans()),
    st.builds(
        c.CreateCommand,
        tag=tags,
        mailbox=mailboxes,
        special_use=st.lists(atoms.map(lambda a: "\\" + a), max_size=2).map(tuple),
    ),
    st.builds(c.DeleteCommand, tag=tags, mailbox=mailboxes),
    st.builds(c.RenameCommand, tag=tags, mailbox=mailboxes, new_mailbox=mailboxes),
    st.builds(c.SubscribeCommand, tag=tags, mailbox=mailboxes),
    st.builds(c.UnsubscribeCommand, tag=tags, mailbox=mailboxes),
    list_commands(),
    st.builds(c.LsubCommand, tag=tags, reference=texts, pattern=texts),
    st.builds(
        c.StatusCommand,
        tag=tags,
        mailbox=mailboxes,
        items=st.lists(st.sampled_from(c.StatusItem), min_size=1, unique=True).map(tuple),
    ),
    st.builds(
        c.AppendCommand,
        tag=tags,
        mailbox=mailboxes,
        messages=st.lists(append_messages, min_size=1, max_size=3).map(tuple),
    ),
    st.builds(c.GetQuotaCommand, tag=tags, root=texts),
    st.builds(c.GetQuotaRootCommand, tag=tags, mailbox=mailboxes),
    st.builds(
        c.SetQuotaCommand,
        tag=tags,
        root=texts,
        limits=st.lists(st.tuples(upper_atoms, modseqs), max_size=3).map(tuple),
    ),
    st.builds(c.ExpungeCommand, tag=tags, uids=st.one_of(st.none(), sequence_sets)),
    st.builds(
        c.SearchCommand,
        tag=tags,
        uid=st.booleans(),
        charset=st.sampled_from([None, "UTF-8"]),
        key=search_keys,
        returns=search_returns,
    ),
    fetch_commands(),
    st.builds(
        c.StoreCommand,
        tag=tags,
        uid=st.booleans(),
        sequence=sequence_sets,
        mode=st.sampled_from(c.StoreMode),
        silent=st.booleans(),
        flags=flags,
        unchangedsince=st.one_of(st.none(), modseqs),
    ),
    st.builds(
        c.CopyCommand, tag=tags, uid=st.booleans(), sequence=sequence_sets, mailbox=mailboxes
    ),
    st.builds(
        c.MoveCommand, tag=tags, uid=st.booleans(), sequence=sequence_sets, mailbox=mailboxes
    ),
    st.builds(
        c.SortCommand,
        tag=tags,
        uid=st.booleans(),
        criteria=st.lists(
            st.builds(c.SortCriterion, key=st.sampled_from(c.SortKey), reverse=st.booleans()),
            min_size=1,
            max_size=4,
        ).map(tuple),
        charset=st.just("UTF-8"),
        key=search_keys,
    ),
    st.builds(
        c.ThreadCommand,
        tag=tags,
        uid=st.booleans(),
        algorithm=st.sampled_from(c.ThreadAlgorithm),
        charset=st.just("UTF-8"),
        key=search_keys,
    ),
)


def read_all(data: bytes, chunk: int) -> list[Event]:
    reader = CommandReader(literal_plus=True)
    events: list[Event] = []
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, ContinuationNeeded):
                reader.accept_literal()
            else:
                events.append(event)
    return events


@SETTINGS
@given(commands, st.integers(1, 50))
def test_commands_round_trip(cmd: c.Command, chunk: int) -> None:
    wire = serialize_command(cmd)
    assert parse_command(wire[:-2], ParseContext()) == cmd
    assert read_all(wire, chunk) == [cmd]


ALPHABET = st.sampled_from(
    [
        b" ",
        b"\r\n",
        b"\n",
        b"\r",
        b"(",
        b")",
        b"[",
        b"]",
        b"{",
        b"}",
        b"~",
        b"+",
        b'"',
        b"\\",
        b"*",
        b"$",
        b":",
        b",",
        b"<",
        b">",
        b".",
        b"\x00",
        b"\xff",
        b"A1",
        b"UID",
        b"FETCH",
        b"SEARCH",
        b"APPEND",
        b"LOGIN",
        b"NOT",
        b"OR",
        b"BODY",
        b"{5}",
        b"{2+}",
        b"~{3}",
        b"{99999999999999999999}",
        b"1:*",
        b"0",
        b"7",
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.one_of(ALPHABET, st.binary(max_size=8)), max_size=60).map(b"".join),
    st.integers(1, 16),
    st.lists(st.booleans(), max_size=8),
    st.booleans(),
)
def test_no_input_crashes_the_reader(
    data: bytes, chunk: int, decisions: list[bool], continuation: bool
) -> None:
    reader = CommandReader(literal_plus=continuation)
    choices = iter(decisions)
    for i in range(0, len(data), chunk):
        reader.receive_data(data[i : i + chunk])
        while (event := reader.next_event()) is not NEED_DATA:
            assert isinstance(event, c.Command | BadCommand | ContinuationNeeded | ContinuationLine)
            if isinstance(event, ContinuationNeeded):
                if next(choices, True):
                    reader.accept_literal()
                else:
                    reader.reject_literal()
            elif isinstance(event, c.IdleCommand) and continuation:
                reader.expect_continuation()


@SETTINGS
@given(commands, st.integers(0, 200), st.binary(min_size=1, max_size=3))
def test_mutated_commands_never_crash(cmd: c.Command, where: int, junk: bytes) -> None:
    wire = serialize_command(cmd)
    where %= len(wire)
    mutated = wire[:where] + junk + wire[where:] + b"Z9 NOOP\r\n"
    events = read_all(mutated, 7)
    assert all(isinstance(e, c.Command | BadCommand) for e in events)
