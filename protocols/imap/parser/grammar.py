"""Command grammar: one parse function per verb, dispatched through :data:`COMMAND_PARSERS`.

Each function receives a :class:`~.lexer.Cursor` positioned just after the verb and
returns the frozen command dataclass, or raises :class:`~.lexer.ParseError`. Section
numbers on the lines point to the ABNF being implemented.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..commands import (
    AppendCommand,
    AppendMessage,
    AuthenticateCommand,
    CapabilityCommand,
    CheckCommand,
    CloseCommand,
    Command,
    CompressCommand,
    CopyCommand,
    CreateCommand,
    DeleteCommand,
    EnableCommand,
    ExamineCommand,
    ExpungeCommand,
    FetchAttribute,
    FetchCommand,
    FetchItem,
    GetQuotaCommand,
    GetQuotaRootCommand,
    IdCommand,
    IdleCommand,
    ListCommand,
    ListReturn,
    ListSelect,
    LoginCommand,
    LogoutCommand,
    LsubCommand,
    MoveCommand,
    NamespaceCommand,
    NoopCommand,
    Partial,
    QResyncParams,
    RenameCommand,
    SearchCommand,
    SearchReturn,
    Section,
    SectionText,
    SelectCommand,
    SetQuotaCommand,
    SortCommand,
    SortCriterion,
    SortKey,
    StartTLSCommand,
    StatusCommand,
    StatusItem,
    StoreCommand,
    StoreMode,
    SubscribeCommand,
    ThreadAlgorithm,
    ThreadCommand,
    UnselectCommand,
    UnsubscribeCommand,
)
from ..limits import (
    MAX_APPEND_MESSAGES,
    MAX_ID_FIELD,
    MAX_ID_PAIRS,
    MAX_ID_VALUE,
    MAX_LIST_ITEMS,
    MAX_MODSEQ,
    MAX_SEARCH_KEYS,
)
from ..mutf7 import MUTF7Error, decode_mutf7
from ..names import DEFAULT_SEPARATOR, MailboxName, decode_mailbox_name
from ..search import (
    AllKey,
    AndKey,
    BodyKey,
    DateField,
    DateKey,
    DateOp,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NewKey,
    NotKey,
    OldKey,
    OrKey,
    RecentKey,
    SaveDateSupportedKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)
from ..sequence import SequenceSet, SequenceSetError
from .lexer import Cursor, ParseError

__all__ = [
    "COMMAND_PARSERS",
    "SEARCH_CHARSETS",
    "SYSTEM_FLAGS",
    "ParseContext",
    "parse_command",
]

# RFC 3501 2.3.2 system flags a client may set; \Recent is server-managed.
SYSTEM_FLAGS: Final = {
    f.upper(): f for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
}
# RFC 3501 6.4.4 / RFC 9051 6.4.4: US-ASCII and UTF-8 are the charsets a server must know.
SEARCH_CHARSETS: Final = ("UTF-8", "US-ASCII")
_BADCHARSET_CODE: Final = "BADCHARSET (" + " ".join(SEARCH_CHARSETS) + ")"

_FETCH_NAME: Final = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT: Final = re.compile(rb"[A-Za-z.]+")
_BASE64: Final = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_HEADER_NAME: Final = re.compile(r"[!-9;-~]+")  # RFC 5322 3.6.8 ftext


@dataclass(frozen=True, slots=True)
class ParseContext:
    """Session facts the grammar depends on.

    ``utf8`` is set once the client has sent ``ENABLE UTF8=ACCEPT`` (RFC 6855 3): mailbox
    names may then be UTF-8.
    """

    utf8: bool = False
    separator: str = DEFAULT_SEPARATOR


# --- shared pieces ---------------------------------------------------------------------


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"invalid UTF-8 in {what}") from exc


def _mailbox(c: Cursor, ctx: ParseContext) -> MailboxName:
    return decode_mailbox_name(c.astring(), utf8=ctx.utf8, separator=ctx.separator)


def _pattern(raw: bytes, ctx: ParseContext) -> str:
    """A LIST reference or pattern, decoded like a mailbox name but wildcards kept."""
    try:
        if ctx.utf8 and not raw.isascii():
            return raw.decode("utf-8")
        return decode_mutf7(raw)
    except (MUTF7Error, UnicodeDecodeError):
        if ctx.utf8 and raw.isascii():
            return raw.decode("ascii")
        raise ParseError("mailbox pattern is not valid modified UTF-7") from None


def _sequence_set(c: Cursor, *, star: bool = True, saved: bool = True) -> SequenceSet:
    try:
        seq = SequenceSet.parse(c.sequence_set_bytes())
    except SequenceSetError as exc:
        raise ParseError(str(exc)) from exc
    if seq.saved and not saved:
        raise ParseError("'$' is not allowed here")
    if not star and seq.uses_star:
        raise ParseError("'*' is not allowed here")  # RFC 7162 3.2.5 known-uids
    return seq


def _flag(c: Cursor, *, allow_wildcard: bool = False) -> str:
    """RFC 3501 9 ``flag``: a system flag (canonical spelling) or a keyword atom."""
    if c.peek() == 0x5C:  # "\"
        c.pos += 1
        if allow_wildcard and c.peek() == 0x2A:
            c.pos += 1
            return "\\*"
        name = "\\" + c.atom().decode("ascii")
        canonical = SYSTEM_FLAGS.get(name.upper())
        if canonical is None:
            if name.upper() == "\\RECENT":
                raise ParseError("\\Recent cannot be set by a client")  # RFC 3501 2.3.2
            raise ParseError(f"unknown system flag {name}")
        return canonical
    return c.atom().decode("ascii")


def _flag_list(c: Cursor) -> tuple[str, ...]:
    """RFC 3501 9 ``flag-list = "(" [flag *(SP flag)] ")"``."""
    c.open_paren()
    flags: list[str] = []
    if c.peek() != 0x29:
        flags.append(_flag(c))
        while c.maybe_sp():
            flags.append(_flag(c))
            if len(flags) > MAX_LIST_ITEMS:
                raise ParseError("too many flags")
    c.close_paren()
    return tuple(dict.fromkeys(flags))


def _paren_atoms(c: Cursor, *, allow_empty: bool = False) -> list[bytes]:
    c.open_paren()
    items: list[bytes] = []
    if c.peek() != 0x29 or not allow_empty:
        items.append(c.atom().upper())
        while c.maybe_sp():
            items.append(c.atom().upper())
            if len(items) > MAX_LIST_ITEMS:
                raise ParseError("too many items in list")
    c.close_paren()
    return items


def _status_items(c: Cursor) -> tuple[StatusItem, ...]:
    out: list[StatusItem] = []
    for atom in _paren_atoms(c):
        try:
            out.append(StatusItem(atom.decode("ascii")))
        except ValueError:
            raise ParseError(f"unknown STATUS item {atom.decode('ascii', 'replace')}") from None
    return tuple(dict.fromkeys(out))


# --- any state -------------------------------------------------------------------------


def _no_args(cls: type[Command]) -> Callable[[Cursor, ParseContext, str], Command]:
    def parse(c: Cursor, ctx: ParseContext, tag: str) -> Command:
        c.end()
        return cls(tag=tag)

    return parse


def parse_id(c: Cursor, ctx: ParseContext, tag: str) -> IdCommand:
    """RFC 2971 4: ``id = "ID" SP id-params-list``."""
    c.sp()
    if c.peek_word(b"NIL"):
        c.pos += 3
        c.end()
        return IdCommand(tag=tag, params=None)
    c.open_paren()
    params: list[tuple[str, str | None]] = []
    while c.peek() != 0x29:
        if params:
            c.sp()
        field = c.string()
        c.sp()
        value = c.nstring()
        if len(field) > MAX_ID_FIELD or (value is not None and len(value) > MAX_ID_VALUE):
            raise ParseError("ID field or value too long")  # RFC 2971 3.3
        params.append((_utf8(field, "ID"), None if value is None else _utf8(value, "ID")))
        if len(params) > MAX_ID_PAIRS:
            raise ParseError("too many ID pairs")  # RFC 2971 3.3
    c.close_paren()
    c.end()
    return IdCommand(tag=tag, params=tuple(params))


def parse_enable(c: Cursor, ctx: ParseContext, tag: str) -> EnableCommand:
    """RFC 5161 4: ``"ENABLE" 1*(SP capability)``."""
    caps: list[str] = []
    c.sp()
    caps.append(c.atom().upper().decode("ascii"))
    while c.maybe_sp():
        caps.append(c.atom().upper().decode("ascii"))
        if len(caps) > MAX_LIST_ITEMS:
            raise ParseError("too many capabilities")
    c.end()
    return EnableCommand(tag=tag, capabilities=tuple(dict.fromkeys(caps)))


def parse_compress(c: Cursor, ctx: ParseContext, tag: str) -> CompressCommand:
    """RFC 4978 5: ``compress = "COMPRESS" SP algorithm``."""
    c.sp()
    mechanism = c.atom().upper().decode("ascii")
    c.end()
    return CompressCommand(tag=tag, mechanism=mechanism)


# --- not authenticated -----------------------------------------------------------------


def parse_authenticate(c: Cursor, ctx: ParseContext, tag: str) -> AuthenticateCommand:
    """RFC 3501 9 ``authenticate``, with RFC 4959 3 initial response (``=`` is empty)."""
    c.sp()
    mechanism = c.atom().upper().decode("ascii")
    initial: bytes | None = None
    if c.maybe_sp():
        if c.peek_is(b"=") and c.pos + 1 == len(c.data):
            c.pos += 1
            initial = b""
        else:
            start = c.pos
            raw = c.match_pattern(_BASE64, "base64")
            if not raw or c.pos != len(c.data):
                c.pos = start
                raise ParseError("invalid base64 initial response")
            try:
                initial = base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise ParseError("invalid base64 initial response") from None
    c.end()
    return AuthenticateCommand(tag=tag, mechanism=mechanism, initial_response=initial)


def parse_login(c: Cursor, ctx: ParseContext, tag: str) -> LoginCommand:
    """RFC 3501 9: ``login = "LOGIN" SP userid SP password``."""
    c.sp()
    user = _utf8(c.astring(), "user name")
    c.sp()
    password = c.astring()
    c.end()
    return LoginCommand(tag=tag, username=user, password=password)


# --- authenticated ---------------------------------------------------------------------


def _select_like(c: Cursor, ctx: ParseContext) -> tuple[MailboxName, bool, QResyncParams | None]:
    """RFC 3501 9 ``select``; RFC 7162 7 ``select-params``."""
    c.sp()
    mailbox = _mailbox(c, ctx)
    condstore = False
    qresync: QResyncParams | None = None
    if c.maybe_sp():
        c.open_paren()
        while True:
            word = c.atom().upper()
            if word == b"CONDSTORE" and not condstore:
                condstore = True
            elif word == b"QRESYNC" and qresync is None:
                c.sp()
                qresync = _qresync_params(c)
            else:
                raise ParseError(f"unknown SELECT parameter {word.decode('ascii', 'replace')}")
            if not c.maybe_sp():
                break
        c.close_paren()
    c.end()
    return mailbox, condstore, qresync


def _qresync_params(c: Cursor) -> QResyncParams:
    """RFC 7162 7: ``"(" uidvalidity SP mod-sequence-value [SP known-uids]
    [SP seq-match-data] ")"``."""
    c.open_paren()
    uidvalidity = c.number(nonzero=True)
    c.sp()
    modseq = c.modseq()
    known: SequenceSet | None = None
    match: tuple[SequenceSet, SequenceSet] | None = None
    if c.maybe_sp():
        if c.peek() != 0x28:
            known = _sequence_set(c, star=False, saved=False)
            if c.maybe_sp():
                match = _seq_match(c)
        else:
            match = _seq_match(c)
    c.close_paren()
    return QResyncParams(uidvalidity=uidvalidity, modseq=modseq, known_uids=known, seq_match=match)


def _seq_match(c: Cursor) -> tuple[SequenceSet, SequenceSet]:
    c.open_paren()
    seqs = _sequence_set(c, star=False, saved=False)
    c.sp()
    uids = _sequence_set(c, star=False, saved=False)
    c.close_paren()
    return seqs, uids


def parse_select(c: Cursor, ctx: ParseContext, tag: str) -> SelectCommand:
    mailbox, condstore, qresync = _select_like(c, ctx)
    return SelectCommand(tag=tag, mailbox=mailbox, condstore=condstore, qresync=qresync)


def parse_examine(c: Cursor, ctx: ParseContext, tag: str) -> ExamineCommand:
    mailbox, condstore, qresync = _select_like(c, ctx)
    return ExamineCommand(tag=tag, mailbox=mailbox, condstore=condstore, qresync=qresync)


def parse_create(c: Cursor, ctx: ParseContext, tag: str) -> CreateCommand:
    """RFC 3501 9 ``create``; RFC 6154 6 ``create-param =/ "USE" SP "(" ... ")"``."""
    c.sp()
    mailbox = _mailbox(c, ctx)
    uses: list[str] = []
    if c.maybe_sp():
        c.open_paren()
        c.expect_word(b"USE")
        c.sp()
        c.open_paren()
        while c.peek() == 0x5C:
            c.pos += 1
            uses.append("\\" + c.atom().decode("ascii"))
            if not c.maybe_sp():
                break
            if len(uses) > MAX_LIST_ITEMS:
                raise ParseError("too many special-use attributes")
        c.close_paren()
        c.close_paren()
    c.end()
    return CreateCommand(tag=tag, mailbox=mailbox, special_use=tuple(uses))


def _one_mailbox(c: Cursor, ctx: ParseContext) -> MailboxName:
    c.sp()
    mailbox = _mailbox(c, ctx)
    c.end()
    return mailbox


def parse_delete(c: Cursor, ctx: ParseContext, tag: str) -> DeleteCommand:
    return DeleteCommand(tag=tag, mailbox=_one_mailbox(c, ctx))


def parse_subscribe(c: Cursor, ctx: ParseContext, tag: str) -> SubscribeCommand:
    return SubscribeCommand(tag=tag, mailbox=_one_mailbox(c, ctx))


def parse_unsubscribe(c: Cursor, ctx: ParseContext, tag: str) -> UnsubscribeCommand:
    return UnsubscribeCommand(tag=tag, mailbox=_one_mailbox(c, ctx))


def parse_getquotaroot(c: Cursor, ctx: ParseContext, tag: str) -> GetQuotaRootCommand:
    return GetQuotaRootCommand(tag=tag, mailbox=_one_mailbox(c, ctx))


def parse_rename(c: Cursor, ctx: ParseContext, tag: str) -> RenameCommand:
    c.sp()
    old = _mailbox(c, ctx)
    c.sp()
    new = _mailbox(c, ctx)
    c.end()
    return RenameCommand(tag=tag, mailbox=old, new_mailbox=new)


_LIST_SELECT: Final = {s.value.encode(): s for s in ListSelect}
_LIST_RETURN: Final = {r.value.encode(): r for r in ListReturn}


def parse_list(c: Cursor, ctx: ParseContext, tag: str) -> ListCommand:
    """RFC 5258 6: ``list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
    [SP list-return-opts]``."""
    c.sp()
    extended = False
    selection: set[ListSelect] = set()
    if c.peek() == 0x28:
        extended = True
        for word in _paren_atoms(c, allow_empty=True):
            opt = _LIST_SELECT.get(word)
            if opt is None:
                raise ParseError(f"unknown LIST selection option {word.decode('ascii', 'replace')}")
            selection.add(opt)
        if ListSelect.RECURSIVEMATCH in selection and not selection - {
            ListSelect.RECURSIVEMATCH,
            ListSelect.REMOTE,
        }:
            raise ParseError("RECURSIVEMATCH needs another selection option")  # RFC 5258 3.1
        c.sp()
    reference = _pattern(c.astring(), ctx)
    c.sp()
    patterns: list[str] = []
    if c.peek() == 0x28:
        extended = True
        c.open_paren()
        patterns.append(_pattern(c.list_mailbox(), ctx))
        while c.maybe_sp():
            patterns.append(_pattern(c.list_mailbox(), ctx))
            if len(patterns) > MAX_LIST_ITEMS:
                raise ParseError("too many LIST patterns")
        c.close_paren()
    else:
        patterns.append(_pattern(c.list_mailbox(), ctx))
    returns: set[ListReturn] = set()
    status_items: tuple[StatusItem, ...] = ()
    if c.maybe_sp():
        extended = True
        c.expect_word(b"RETURN")
        c.sp()
        c.open_paren()
        while c.peek() != 0x29:
            if returns:
                c.sp()
            word = c.atom().upper()
            ret = _LIST_RETURN.get(word)
            if ret is None:
                raise ParseError(f"unknown LIST return option {word.decode('ascii', 'replace')}")
            if ret is ListReturn.STATUS:
                c.sp()
                status_items = _status_items(c)  # RFC 5819 3
            returns.add(ret)
        c.close_paren()
    c.end()
    return ListCommand(
        tag=tag,
        reference=reference,
        patterns=tuple(patterns),
        selection=frozenset(selection),
        returns=frozenset(returns),
        status_items=status_items,
        extended=extended,
    )


def parse_lsub(c: Cursor, ctx: ParseContext, tag: str) -> LsubCommand:
    """RFC 3501 9: ``lsub = "LSUB" SP mailbox SP list-mailbox``."""
    c.sp()
    reference = _pattern(c.astring(), ctx)
    c.sp()
    pattern = _pattern(c.list_mailbox(), ctx)
    c.end()
    return LsubCommand(tag=tag, reference=reference, pattern=pattern)


def parse_status(c: Cursor, ctx: ParseContext, tag: str) -> StatusCommand:
    """RFC 3501 9: ``status = "STATUS" SP mailbox SP "(" status-att *(SP status-att) ")"``."""
    c.sp()
    mailbox = _mailbox(c, ctx)
    c.sp()
    items = _status_items(c)
    c.end()
    return StatusCommand(tag=tag, mailbox=mailbox, items=items)


def parse_append(c: Cursor, ctx: ParseContext, tag: str) -> AppendCommand:
    """RFC 3502 6 ``append = "APPEND" SP mailbox 1*append-message``; RFC 3516 literal8,
    RFC 6855 4 ``"UTF8" SP "(" literal8 ")"``."""
    c.sp()
    mailbox = _mailbox(c, ctx)
    messages: list[AppendMessage] = []
    while True:
        c.sp()
        flags: tuple[str, ...] = ()
        date = None
        if c.peek() == 0x28:
            flags = _flag_list(c)
            c.sp()
        if c.peek() == 0x22:
            date = c.date_time()
            c.sp()
        # todo(rfc 4469): CATENATE parts are not parsed; CATENATE is not advertised.
        utf8 = c.peek_word(b"UTF8")
        if utf8:
            c.pos += 4
            c.sp()
            c.open_paren()
        if not c.is_literal():
            raise ParseError("APPEND message data must be a literal")
        data, binary = c.literal(allow_binary=True)
        if utf8:
            c.close_paren()
        messages.append(
            AppendMessage(data=data, flags=flags, internal_date=date, binary=binary, utf8=utf8)
        )
        if len(messages) > MAX_APPEND_MESSAGES:
            raise ParseError("too many messages in one APPEND")
        if c.at_end():
            break
    return AppendCommand(tag=tag, mailbox=mailbox, messages=tuple(messages))


def parse_getquota(c: Cursor, ctx: ParseContext, tag: str) -> GetQuotaCommand:
    """RFC 9208 7: ``getquota = "GETQUOTA" SP quota-root-name``."""
    c.sp()
    root = _utf8(c.astring(), "quota root")
    c.end()
    return GetQuotaCommand(tag=tag, root=root)


def parse_setquota(c: Cursor, ctx: ParseContext, tag: str) -> SetQuotaCommand:
    """RFC 9208 7: ``setquota = "SETQUOTA" SP quota-root-name SP setquota-list``."""
    c.sp()
    root = _utf8(c.astring(), "quota root")
    c.sp()
    c.open_paren()
    limits: list[tuple[str, int]] = []
    while c.peek() != 0x29:
        if limits:
            c.sp()
        resource = c.atom().upper().decode("ascii")
        c.sp()
        limits.append((resource, c.number(maximum=MAX_MODSEQ)))
        if len(limits) > MAX_LIST_ITEMS:
            raise ParseError("too many quota resources")
    c.close_paren()
    c.end()
    return SetQuotaCommand(tag=tag, root=root, limits=tuple(limits))


# --- selected: SEARCH ------------------------------------------------------------------


@dataclass(slots=True)
class _SearchState:
    charset: str
    keys: int = 0

    def text(self, raw: bytes) -> str:
        try:
            if self.charset == "US-ASCII":
                return raw.decode("ascii")
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"search string is not valid {self.charset}") from None


def _charset(c: Cursor) -> str:
    raw = c.astring().upper()
    name = raw.decode("ascii", "replace")
    name = {"UTF8": "UTF-8", "ASCII": "US-ASCII"}.get(name, name)
    if name not in SEARCH_CHARSETS:
        # RFC 3501 6.4.4: tagged NO with [BADCHARSET] listing what we support.
        raise ParseError(f"unsupported charset {name}", code=_BADCHARSET_CODE, status="NO")
    return name


def _k_flag(flag: str, present: bool) -> Callable[[Cursor, _SearchState], SearchKey]:
    def parse(c: Cursor, s: _SearchState) -> SearchKey:
        return FlagKey(flag=flag, present=present)

    return parse


def _k_const(key: SearchKey) -> Callable[[Cursor, _SearchState], SearchKey]:
    def parse(c: Cursor, s: _SearchState) -> SearchKey:
        return key

    return parse


def _k_header(field: str) -> Callable[[Cursor, _SearchState], SearchKey]:
    def parse(c: Cursor, s: _SearchState) -> SearchKey:
        c.sp()
        return HeaderKey(field=field, value=s.text(c.astring()))

    return parse


def _k_date(field: DateField, op: DateOp) -> Callable[[Cursor, _SearchState], SearchKey]:
    def parse(c: Cursor, s: _SearchState) -> SearchKey:
        c.sp()
        return DateKey(field=field, op=op, date=c.date())

    return parse


def _k_size(larger: bool) -> Callable[[Cursor, _SearchState], SearchKey]:
    def parse(c: Cursor, s: _SearchState) -> SearchKey:
        c.sp()
        return SizeKey(larger=larger, size=c.number(maximum=MAX_MODSEQ))  # RFC 9051 number64

    return parse


def _k_keyword(present: bool) -> Callable[[Cursor, _SearchState], SearchKey]:
    def parse(c: Cursor, s: _SearchState) -> SearchKey:
        c.sp()
        return FlagKey(flag=_flag(c), present=present)

    return parse


def _k_header_any(c: Cursor, s: _SearchState) -> SearchKey:
    c.sp()
    name = s.text(c.astring())
    if _HEADER_NAME.fullmatch(name) is None:
        raise ParseError("invalid header field name")
    c.sp()
    return HeaderKey(field=name.lower(), value=s.text(c.astring()))


def _k_body(c: Cursor, s: _SearchState) -> SearchKey:
    c.sp()
    return BodyKey(value=s.text(c.astring()))


def _k_text(c: Cursor, s: _SearchState) -> SearchKey:
    c.sp()
    return TextKey(value=s.text(c.astring()))


def _k_uid(c: Cursor, s: _SearchState) -> SearchKey:
    c.sp()
    return SequenceKey(sequence=_sequence_set(c), uid=True)


def _k_not(c: Cursor, s: _SearchState) -> SearchKey:
    c.sp()
    c.enter()
    key = _search_key(c, s)
    c.leave()
    return NotKey(key=key)


def _k_or(c: Cursor, s: _SearchState) -> SearchKey:
    c.sp()
    c.enter()
    left = _search_key(c, s)
    c.sp()
    right = _search_key(c, s)
    c.leave()
    return OrKey(left=left, right=right)


def _k_modseq(c: Cursor, s: _SearchState) -> SearchKey:
    """RFC 7162 7: ``"MODSEQ" [search-modseq-ext] SP mod-sequence-valzer``."""
    c.sp()
    entry_name: str | None = None
    entry_type: str | None = None
    if c.peek() == 0x22:
        entry_name = _utf8(c.quoted(), "MODSEQ entry")
        c.sp()
        entry_type = c.atom().lower().decode("ascii")
        if entry_type not in ("priv", "shared", "all"):
            raise ParseError("MODSEQ entry type must be priv, shared or all")
        c.sp()
    return ModSeqKey(modseq=c.modseq(), entry_name=entry_name, entry_type=entry_type)


_SEARCH_KEYS: Final[dict[bytes, Callable[[Cursor, _SearchState], SearchKey]]] = {
    b"ALL": _k_const(AllKey()),
    b"ANSWERED": _k_flag("\\Answered", True),
    b"UNANSWERED": _k_flag("\\Answered", False),
    b"DELETED": _k_flag("\\Deleted", True),
    b"UNDELETED": _k_flag("\\Deleted", False),
    b"DRAFT": _k_flag("\\Draft", True),
    b"UNDRAFT": _k_flag("\\Draft", False),
    b"FLAGGED": _k_flag("\\Flagged", True),
    b"UNFLAGGED": _k_flag("\\Flagged", False),
    b"SEEN": _k_flag("\\Seen", True),
    b"UNSEEN": _k_flag("\\Seen", False),
    b"KEYWORD": _k_keyword(True),
    b"UNKEYWORD": _k_keyword(False),
    b"RECENT": _k_const(RecentKey()),
    b"NEW": _k_const(NewKey()),
    b"OLD": _k_const(OldKey()),
    b"BCC": _k_header("bcc"),
    b"CC": _k_header("cc"),
    b"FROM": _k_header("from"),
    b"SUBJECT": _k_header("subject"),
    b"TO": _k_header("to"),
    b"HEADER": _k_header_any,
    b"BODY": _k_body,
    b"TEXT": _k_text,
    b"BEFORE": _k_date(DateField.INTERNAL, DateOp.BEFORE),
    b"ON": _k_date(DateField.INTERNAL, DateOp.ON),
    b"SINCE": _k_date(DateField.INTERNAL, DateOp.SINCE),
    b"SENTBEFORE": _k_date(DateField.SENT, DateOp.BEFORE),
    b"SENTON": _k_date(DateField.SENT, DateOp.ON),
    b"SENTSINCE": _k_date(DateField.SENT, DateOp.SINCE),
    b"SAVEDBEFORE": _k_date(DateField.SAVED, DateOp.BEFORE),  # RFC 8514 4.2
    b"SAVEDON": _k_date(DateField.SAVED, DateOp.ON),
    b"SAVEDSINCE": _k_date(DateField.SAVED, DateOp.SINCE),
    b"SAVEDATESUPPORTED": _k_const(SaveDateSupportedKey()),
    b"LARGER": _k_size(True),
    b"SMALLER": _k_size(False),
    b"UID": _k_uid,
    b"NOT": _k_not,
    b"OR": _k_or,
    b"MODSEQ": _k_modseq,  # RFC 7162 3.1.5
    # todo(rfc 5032): OLDER/YOUNGER (WITHIN) are not parsed; WITHIN is not advertised.
}


def _search_key(c: Cursor, s: _SearchState) -> SearchKey:
    """RFC 3501 9 / RFC 9051 9 ``search-key``."""
    s.keys += 1
    if s.keys > MAX_SEARCH_KEYS:
        raise ParseError(f"more than {MAX_SEARCH_KEYS} search keys")
    ch = c.peek()
    if ch == 0x28:  # "(" search-key *(SP search-key) ")"
        c.open_paren()
        keys = [_search_key(c, s)]
        while c.maybe_sp():
            keys.append(_search_key(c, s))
        c.close_paren()
        return AndKey(keys=tuple(keys))
    if 0x30 <= ch <= 0x39 or ch in (0x2A, 0x24):  # sequence-set, "*", "$"
        return SequenceKey(sequence=_sequence_set(c))
    word = c.atom().upper()
    handler = _SEARCH_KEYS.get(word)
    if handler is None:
        raise ParseError(f"unknown search key {word[:32].decode('ascii', 'replace')}")
    return handler(c, s)


def _search_keys(c: Cursor, s: _SearchState) -> SearchKey:
    """``1*(SP search-key)`` as one key (an implicit AND when several)."""
    keys: list[SearchKey] = []
    while c.maybe_sp():
        keys.append(_search_key(c, s))
    if not keys:
        raise ParseError("missing search criteria")
    c.end()
    return keys[0] if len(keys) == 1 else AndKey(keys=tuple(keys))


_SEARCH_RETURN: Final = {r.value.encode(): r for r in SearchReturn}


def _search(c: Cursor, tag: str, uid: bool) -> SearchCommand:
    """RFC 4731 7: ``search = "SEARCH" [search-return-opts] [SP "CHARSET" SP charset]
    1*(SP search-key)``."""
    returns: frozenset[SearchReturn] | None = None
    charset: str | None = None
    start = c.pos
    if c.maybe_sp() and c.peek_word(b"RETURN"):
        c.pos += 6
        c.sp()
        opts: set[SearchReturn] = set()
        for word in _paren_atoms(c, allow_empty=True):
            opt = _SEARCH_RETURN.get(word)
            if opt is None:
                raise ParseError(f"unknown SEARCH return option {word.decode('ascii', 'replace')}")
            opts.add(opt)
        # RFC 4731 3.1: RETURN () is RETURN (ALL); SAVE alone returns nothing else.
        returns = frozenset(opts) if opts else frozenset({SearchReturn.ALL})
        start = c.pos
    c.pos = start
    if c.maybe_sp() and c.peek_word(b"CHARSET"):
        c.pos += 7
        c.sp()
        charset = _charset(c)
    else:
        c.pos = start
    key = _search_keys(c, _SearchState(charset=charset or "UTF-8"))
    return SearchCommand(tag=tag, uid=uid, charset=charset, key=key, returns=returns)


_SORT_KEYS: Final = {k.value.encode(): k for k in SortKey}


def _sort(c: Cursor, tag: str, uid: bool) -> SortCommand:
    """RFC 5256 5: ``sort = ["UID" SP] "SORT" SP sort-criteria SP search-criteria``."""
    c.sp()
    c.open_paren()
    criteria: list[SortCriterion] = []
    while True:
        reverse = False
        word = c.atom().upper()
        if word == b"REVERSE":
            reverse = True
            c.sp()
            word = c.atom().upper()
        sort_key = _SORT_KEYS.get(word)
        if sort_key is None:
            raise ParseError(f"unknown sort key {word[:32].decode('ascii', 'replace')}")
        criteria.append(SortCriterion(key=sort_key, reverse=reverse))
        if len(criteria) > len(SortKey) * 2:
            raise ParseError("too many sort criteria")
        if not c.maybe_sp():
            break
    c.close_paren()
    c.sp()
    charset = _charset(c)
    key = _search_keys(c, _SearchState(charset=charset))
    return SortCommand(tag=tag, uid=uid, criteria=tuple(criteria), charset=charset, key=key)


def _thread(c: Cursor, tag: str, uid: bool) -> ThreadCommand:
    """RFC 5256 5: ``thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria``."""
    c.sp()
    word = c.atom().upper()
    try:
        algorithm = ThreadAlgorithm(word.decode("ascii"))
    except ValueError:
        raise ParseError(
            f"unknown threading algorithm {word[:32].decode('ascii', 'replace')}"
        ) from None
    c.sp()
    charset = _charset(c)
    key = _search_keys(c, _SearchState(charset=charset))
    return ThreadCommand(tag=tag, uid=uid, algorithm=algorithm, charset=charset, key=key)


# --- selected: FETCH -------------------------------------------------------------------

_FETCH_SIMPLE: Final = {
    b"FLAGS": FetchItem.FLAGS,
    b"UID": FetchItem.UID,
    b"INTERNALDATE": FetchItem.INTERNALDATE,
    b"RFC822.SIZE": FetchItem.RFC822_SIZE,
    b"ENVELOPE": FetchItem.ENVELOPE,
    b"BODYSTRUCTURE": FetchItem.BODYSTRUCTURE,
    b"RFC822": FetchItem.RFC822,
    b"RFC822.HEADER": FetchItem.RFC822_HEADER,
    b"RFC822.TEXT": FetchItem.RFC822_TEXT,
    b"MODSEQ": FetchItem.MODSEQ,  # RFC 7162 3.1.4
    b"SAVEDATE": FetchItem.SAVEDATE,  # RFC 8514 4.3
}
_A = FetchAttribute
# RFC 3501 6.4.5 macros.
_FAST: Final = (
    _A(item=FetchItem.FLAGS),
    _A(item=FetchItem.INTERNALDATE),
    _A(item=FetchItem.RFC822_SIZE),
)
_FETCH_MACROS: Final = {
    b"FAST": _FAST,
    b"ALL": (*_FAST, _A(item=FetchItem.ENVELOPE)),
    b"FULL": (*_FAST, _A(item=FetchItem.ENVELOPE), _A(item=FetchItem.BODY)),
}
_SECTION_TEXTS: Final = {t.value.encode(): t for t in SectionText}


def _section(c: Cursor, *, binary: bool) -> Section:
    """RFC 3501 9 ``section``; RFC 3516 ``section-binary = "[" [section-part] "]"``."""
    c.expect(b"[")
    part: list[int] = []
    text: SectionText | None = None
    fields: tuple[str, ...] = ()
    if c.peek() != 0x5D:
        if 0x30 <= c.peek() <= 0x39:
            part.append(c.number(nonzero=True))
            while c.peek_is(b"."):
                c.pos += 1
                if 0x30 <= c.peek() <= 0x39:
                    part.append(c.number(nonzero=True))
                    if len(part) > 100:
                        raise ParseError("section part path too deep")
                else:
                    text = _section_text(c, allow_mime=True)
                    break
        else:
            text = _section_text(c, allow_mime=False)
        if text in (SectionText.HEADER_FIELDS, SectionText.HEADER_FIELDS_NOT):
            fields = _header_list(c)
    if binary and text is not None:
        raise ParseError("BINARY sections take part numbers only")  # RFC 3516 4.1
    c.expect(b"]")
    return Section(part=tuple(part), text=text, fields=fields)


def _section_text(c: Cursor, *, allow_mime: bool) -> SectionText:
    raw = c.match_pattern(_SECTION_TEXT, "a section text").upper()
    text = _SECTION_TEXTS.get(raw)
    if text is None or (text is SectionText.MIME and not allow_mime):
        raise ParseError(f"invalid section {raw[:32].decode('ascii', 'replace')}")
    return text


def _header_list(c: Cursor) -> tuple[str, ...]:
    """RFC 3501 9: ``header-list = "(" header-fld-name *(SP header-fld-name) ")"``."""
    c.sp()
    c.open_paren()
    names: list[str] = []
    while True:
        name = c.astring().decode("ascii", "replace")
        if _HEADER_NAME.fullmatch(name) is None:
            raise ParseError("invalid header field name")
        names.append(name)
        if len(names) > MAX_LIST_ITEMS:
            raise ParseError("too many header field names")
        if not c.maybe_sp():
            break
    c.close_paren()
    return tuple(names)


def _partial(c: Cursor) -> Partial | None:
    """RFC 3501 9: ``"<" number "." nz-number ">"``."""
    if c.peek() != 0x3C:
        return None
    c.pos += 1
    origin = c.number()
    c.expect(b".")
    count = c.number(nonzero=True)
    c.expect(b">")
    return Partial(origin=origin, count=count)


def _fetch_att(c: Cursor) -> FetchAttribute:
    name = c.match_pattern(_FETCH_NAME, "a fetch attribute").upper()
    if name in (b"BODY", b"BODY.PEEK"):
        if c.peek() == 0x5B:
            section = _section(c, binary=False)
            return FetchAttribute(
                item=FetchItem.BODY_SECTION,
                section=section,
                partial=_partial(c),
                peek=name == b"BODY.PEEK",
            )
        if name == b"BODY":
            return FetchAttribute(item=FetchItem.BODY)
        raise ParseError("BODY.PEEK needs a section")
    if name in (b"BINARY", b"BINARY.PEEK"):  # RFC 3516 4.1
        section = _section(c, binary=True)
        return FetchAttribute(
            item=FetchItem.BINARY, section=section, partial=_partial(c), peek=name == b"BINARY.PEEK"
        )
    if name == b"BINARY.SIZE":  # RFC 3516 4.2
        return FetchAttribute(item=FetchItem.BINARY_SIZE, section=_section(c, binary=True))
    item = _FETCH_SIMPLE.get(name)
    if item is None:
        raise ParseError(f"unknown fetch attribute {name[:32].decode('ascii', 'replace')}")
    return FetchAttribute(item=item)


def _fetch(c: Cursor, tag: str, uid: bool) -> FetchCommand:
    """RFC 3501 9 ``fetch``; RFC 7162 7 ``fetch-modifiers``."""
    c.sp()
    seq = _sequence_set(c)
    c.sp()
    attrs: list[FetchAttribute]
    if c.peek() == 0x28:
        c.open_paren()
        attrs = [_fetch_att(c)]
        while c.maybe_sp():
            attrs.append(_fetch_att(c))
            if len(attrs) > MAX_LIST_ITEMS:
                raise ParseError("too many fetch attributes")
        c.close_paren()
    else:
        word = c.match_pattern(_FETCH_NAME, "a fetch attribute")
        macro = _FETCH_MACROS.get(word.upper())
        if macro is not None and c.peek() != 0x5B:
            attrs = list(macro)
        else:
            c.pos -= len(word)
            attrs = [_fetch_att(c)]
    changedsince: int | None = None
    vanished = False
    if c.maybe_sp():
        c.open_paren()
        while True:
            word = c.atom().upper()
            if word == b"CHANGEDSINCE" and changedsince is None:
                c.sp()
                changedsince = c.modseq()
            elif word == b"VANISHED" and not vanished:
                vanished = True
            else:
                raise ParseError(f"unknown FETCH modifier {word[:32].decode('ascii', 'replace')}")
            if not c.maybe_sp():
                break
        c.close_paren()
    c.end()
    if vanished and (not uid or changedsince is None):
        # RFC 7162 3.2.6: only in UID FETCH, and only with CHANGEDSINCE.
        raise ParseError("VANISHED needs UID FETCH and CHANGEDSINCE")
    return FetchCommand(
        tag=tag,
        uid=uid,
        sequence=seq,
        attributes=tuple(dict.fromkeys(attrs)),
        changedsince=changedsince,
        vanished=vanished,
    )


# --- selected: the rest ----------------------------------------------------------------

_STORE_MODES: Final = {m.value.encode(): m for m in StoreMode}
_STORE_ATT: Final = re.compile(rb"[+-]?[A-Za-z.]+")


def _store(c: Cursor, tag: str, uid: bool) -> StoreCommand:
    """RFC 3501 9 ``store``; RFC 7162 7 ``store-modifiers`` (UNCHANGEDSINCE)."""
    c.sp()
    seq = _sequence_set(c)
    c.sp()
    unchangedsince: int | None = None
    if c.peek() == 0x28:
        c.open_paren()
        c.expect_word(b"UNCHANGEDSINCE")
        c.sp()
        unchangedsince = c.modseq()
        c.close_paren()
        c.sp()
    word = c.match_pattern(_STORE_ATT, "FLAGS").upper()
    silent = word.endswith(b".SILENT")
    mode = _STORE_MODES.get(word[:-7] if silent else word)
    if mode is None:
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    c.sp()
    if c.peek() == 0x28:
        flags = _flag_list(c)
    else:
        found = [_flag(c)]
        while c.maybe_sp():
            found.append(_flag(c))
            if len(found) > MAX_LIST_ITEMS:
                raise ParseError("too many flags")
        flags = tuple(dict.fromkeys(found))
    c.end()
    return StoreCommand(
        tag=tag,
        uid=uid,
        sequence=seq,
        mode=mode,
        silent=silent,
        flags=flags,
        unchangedsince=unchangedsince,
    )


def _copy_args(c: Cursor, ctx: ParseContext) -> tuple[SequenceSet, MailboxName]:
    c.sp()
    seq = _sequence_set(c)
    c.sp()
    mailbox = _mailbox(c, ctx)
    c.end()
    return seq, mailbox


def _expunge(c: Cursor, tag: str, uid: bool) -> ExpungeCommand:
    if uid:  # RFC 4315 2.1: "UID EXPUNGE" SP sequence-set
        c.sp()
        uids = _sequence_set(c)
        c.end()
        return ExpungeCommand(tag=tag, uids=uids)
    c.end()
    return ExpungeCommand(tag=tag)


Parser = Callable[[Cursor, ParseContext, str], Command]


def _uid_variants(
    name: bytes, build: Callable[[Cursor, ParseContext, str, bool], Command]
) -> dict[bytes, Parser]:
    def plain(c: Cursor, ctx: ParseContext, tag: str) -> Command:
        return build(c, ctx, tag, False)

    def with_uid(c: Cursor, ctx: ParseContext, tag: str) -> Command:
        return build(c, ctx, tag, True)

    return {name: plain, b"UID " + name: with_uid}


def _b_fetch(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    return _fetch(c, tag, uid)


def _b_store(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    return _store(c, tag, uid)


def _b_search(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    return _search(c, tag, uid)


def _b_sort(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    return _sort(c, tag, uid)


def _b_thread(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    return _thread(c, tag, uid)


def _b_copy(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    seq, mailbox = _copy_args(c, ctx)
    return CopyCommand(tag=tag, uid=uid, sequence=seq, mailbox=mailbox)


def _b_move(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    seq, mailbox = _copy_args(c, ctx)
    return MoveCommand(tag=tag, uid=uid, sequence=seq, mailbox=mailbox)


def _b_expunge(c: Cursor, ctx: ParseContext, tag: str, uid: bool) -> Command:
    return _expunge(c, tag, uid)


# The dispatch table: verb (with "UID " prefix for UID variants) -> parse function.
COMMAND_PARSERS: Final[dict[bytes, Parser]] = {
    b"CAPABILITY": _no_args(CapabilityCommand),
    b"NOOP": _no_args(NoopCommand),
    b"LOGOUT": _no_args(LogoutCommand),
    b"ID": parse_id,
    b"ENABLE": parse_enable,
    b"COMPRESS": parse_compress,
    b"STARTTLS": _no_args(StartTLSCommand),
    b"AUTHENTICATE": parse_authenticate,
    b"LOGIN": parse_login,
    b"SELECT": parse_select,
    b"EXAMINE": parse_examine,
    b"CREATE": parse_create,
    b"DELETE": parse_delete,
    b"RENAME": parse_rename,
    b"SUBSCRIBE": parse_subscribe,
    b"UNSUBSCRIBE": parse_unsubscribe,
    b"LIST": parse_list,
    b"LSUB": parse_lsub,
    b"NAMESPACE": _no_args(NamespaceCommand),
    b"STATUS": parse_status,
    b"APPEND": parse_append,
    b"IDLE": _no_args(IdleCommand),
    b"GETQUOTA": parse_getquota,
    b"GETQUOTAROOT": parse_getquotaroot,
    b"SETQUOTA": parse_setquota,
    b"CHECK": _no_args(CheckCommand),
    b"CLOSE": _no_args(CloseCommand),
    b"UNSELECT": _no_args(UnselectCommand),
    **_uid_variants(b"EXPUNGE", _b_expunge),
    **_uid_variants(b"FETCH", _b_fetch),
    **_uid_variants(b"STORE", _b_store),
    **_uid_variants(b"SEARCH", _b_search),
    **_uid_variants(b"SORT", _b_sort),
    **_uid_variants(b"THREAD", _b_thread),
    **_uid_variants(b"COPY", _b_copy),
    **_uid_variants(b"MOVE", _b_move),
}


def parse_command(data: bytes, ctx: ParseContext) -> Command:
    """Parse one framed command (no final CRLF). Raises :class:`ParseError`."""
    c = Cursor(data)
    tag = c.tag().decode("ascii")
    c.sp()
    verb = c.atom().upper()
    if verb == b"UID":
        c.sp()
        verb = b"UID " + c.atom().upper()
    parser = COMMAND_PARSERS.get(verb)
    if parser is None:
        raise ParseError(f"unknown command {verb[:32].decode('ascii', 'replace')}")
    return parser(c, ctx, tag)
