"""IMAP4rev1/IMAP4rev2: a sans-IO protocol layer and the trio session bound to the store.

The server (impure: trio and the store):

``server`` — :func:`~protocols.imap.server.serve_imap`, what the service calls per
connection, and :class:`~protocols.imap.settings.ImapSettings`.

``session`` — :class:`~protocols.imap.session.ImapSession`: the command loop, TLS and
STARTTLS, COMPRESS (``compress``), timeouts, throttle, and the dispatch table over
``mailboxes`` (authenticated-state commands) and ``messages`` (selected-state commands).

``selected`` — one session's view of its selected folder and how it catches up with the
change bus; ``shared`` — process-wide \\Recent claims and the metadata cache; ``storemap``
— store names, flags, metadata and errors in IMAP terms (the one error table);
``listing`` — LIST/LSUB matching.

The sans-IO pieces (pure: no trio, no store, no transport):

``parser`` — :class:`~protocols.imap.parser.CommandReader`, the h11-shaped reader::

    reader = CommandReader(append_limit=cfg.append_limit, literal_plus=False)
    reader.receive_data(data)
    while (event := reader.next_event()) is not NEED_DATA:
        match event:
            case ContinuationNeeded():  # "{n}": check size, quota and state, then
                ...                     # "+ Ready" and reader.accept_literal(), or
                                        # "<tag> NO [TOOBIG] ..." and reader.reject_literal()
            case BadCommand():          # "<tag or *> BAD|NO [code] reason"; fatal: BYE, close
                ...
            case ContinuationLine():    # only after reader.expect_continuation():
                ...                     # IDLE's DONE, AUTHENTICATE responses
            case Command():             # a frozen dataclass from ``commands``
                ...

  After ``ENABLE UTF8=ACCEPT`` call ``reader.set_utf8()``. After STARTTLS or COMPRESS,
  ``reader.take_buffered()`` returns unread bytes (discard them after STARTTLS,
  CVE-2011-0411; inflate and re-feed after COMPRESS). ``reader.capability`` is the
  LITERAL+/LITERAL- capability to advertise. ``max_line``/``max_command`` are plain
  attributes the session may lower before login.

``commands`` — one frozen dataclass per command, grouped by gate (``CommandAny``,
``CommandNonAuth``, ``CommandAuth``, ``CommandSelect``). Mailbox arguments are
:class:`~protocols.imap.names.MailboxName` (decoded; ``problem`` set for names the store
must refuse: traversal, NUL, bad modified UTF-7).

``state`` — the one state table: :func:`~protocols.imap.state.gate_refusal` (BAD reason or
None), :func:`~protocols.imap.state.literal_refusal` (for ContinuationNeeded),
:func:`~protocols.imap.state.next_state` (transitions by reported Outcome).

``responses`` — rendering to bytes: tagged/untagged/continuation lines,
:class:`~protocols.imap.responses.ResponseCode` (all RFC 3501/4315/5530/7162/7889 codes),
strings (quoted vs literal, UTF-8 aware), CAPABILITY, ENABLED, FLAGS, EXISTS, EXPUNGE,
VANISHED, LIST/LSUB (extended data), STATUS, NAMESPACE, QUOTA, ID, SEARCH, ESEARCH, SORT,
THREAD, ENVELOPE, BODY/BODYSTRUCTURE and FETCH.

``model`` — the neutral input types the session fills from store metadata:
:class:`~protocols.imap.model.Envelope`, :class:`~protocols.imap.model.Address`,
:class:`~protocols.imap.model.BodyStructure`, :class:`~protocols.imap.model.ThreadNode`.

``fetch`` — :func:`~protocols.imap.fetch.build_fetch` renders one message's FETCH response
from a :class:`~protocols.imap.fetch.FetchSource`; ``needs_body``/``sets_seen`` let the
session avoid opening files and manage \\Seen.

``sections`` — RFC 3501 6.4.5 part numbering over a :class:`~protocols.imap.sections.PartSpan`
tree: ``resolve_section`` (byte range, for reading only part of a file),
``extract_section``, ``apply_partial``, ``filter_header_fields``,
``decode_transfer_encoding`` (BINARY), and ``parse_spans`` (bounded MIME locator).

``search`` / ``evaluate`` — the search key tree, and ``compile_search``/``run_search`` over
:class:`~protocols.imap.evaluate.MessageRecord` records (``SimpleMessage`` is a ready
implementation), with :class:`~protocols.imap.evaluate.SearchContext` for ``*`` and ``$``.

``sortthread`` — RFC 5256: ``sort_messages``, ``thread_references``,
``thread_orderedsubject``, ``base_subject``.

``sequence`` — :class:`~protocols.imap.sequence.SequenceSet` (``*``, reversed ranges,
``$``), ``resolve`` against ascending UIDs or 1..n, ``format_numbers`` for responses.

``mutf7`` / ``names`` — strict modified UTF-7 and mailbox-name decoding/flagging.

``serialize`` — commands back to wire bytes (tests, a future client).

``limits`` — every bound, with its source.
"""
