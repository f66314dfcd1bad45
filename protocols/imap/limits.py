"""Every bound the IMAP protocol layer enforces, in one place, each with its source.

Crossing any of these produces a defined protocol reply (BAD, NO [TOOBIG], or BYE for the
few cases where the only safe way out is to close), never a MemoryError or a traceback.
"""

from __future__ import annotations

from typing import Final

# Longest command line segment (bytes between two CRLFs, outside literals), and the largest
# total of a command's non-APPEND bytes (its lines plus any literal strings in it).
# Dovecot's imap_max_line_length defaults to 64k; RFC 7162 3.2.6 (formerly RFC 4551) asks
# servers to accept command lines of at least 8192 octets so large UID sets fit.
MAX_LINE_LENGTH: Final = 65_536
MAX_COMMAND_SIZE: Final = 65_536

# RFC 7888 5: with LITERAL-, a non-synchronizing literal may be at most 4096 octets; a larger
# one is refused with BAD [TOOBIG] after the server has consumed it (or closed).
LITERAL_MINUS_MAX: Final = 4096

# APPENDLIMIT (RFC 7889) is configured per server; this default is Postfix's
# message_size_limit (10240000) rounded to 10 MiB, so SMTP and IMAP agree out of the box.
DEFAULT_APPEND_LIMIT: Final = 10 * 1024 * 1024

# RFC 3501 4.2 / 9 "number": an unsigned 32-bit integer. Literal sizes, sequence numbers,
# UIDs, UIDVALIDITY and partial offsets above this are malformed.
MAX_NUMBER: Final = 2**32 - 1
# RFC 7162 7 "mod-sequence-value": 1*DIGIT representing a 63-bit unsigned number.
MAX_MODSEQ: Final = 2**63 - 1
# Digits we read before deciding a number is out of range: 20 digits hold 2**64, so a
# `{99999999999999999999999}` literal marker is refused without building a huge int.
MAX_NUMBER_DIGITS: Final = 20

# Nesting of parenthesised groups plus OR/NOT chains in search keys. CVE-2026-27857: 4000
# nested "(" cost Dovecot about 1 MB per pre-auth connection. No client nests search keys
# anywhere near this; it also keeps the recursive-descent parser far from Python's
# recursion limit.
MAX_NESTING_DEPTH: Final = 100

# Search keys in one SEARCH/SORT/THREAD command: evaluation cost is keys x messages.
MAX_SEARCH_KEYS: Final = 1000

# Comma-separated items in one sequence set. A 64 KiB line holds at most ~32k of them; a
# bound keeps resolution (k log n) and the memory of the parsed set small.
MAX_SEQUENCE_RANGES: Final = 10_000

# Items in any other parenthesised list: fetch attributes, flags, status items,
# capabilities of ENABLE, LIST patterns, header field names.
MAX_LIST_ITEMS: Final = 1000

# Tags are short counters in every client we know ("A0001"); the RFC sets no bound.
MAX_TAG_LENGTH: Final = 64

# A mailbox name: Linux NAME_MAX is 255 per path component; the whole name is capped so a
# hierarchy cannot produce an ENAMETOOLONG path under the store root.
MAX_MAILBOX_NAME_BYTES: Final = 1024
MAX_MAILBOX_COMPONENT_BYTES: Final = 255

# RFC 2971 3.3: field strings at most 30 octets, values at most 1024, at most 30 pairs.
MAX_ID_FIELD: Final = 30
MAX_ID_VALUE: Final = 1024
MAX_ID_PAIRS: Final = 30

# MULTIAPPEND (RFC 3502): messages in one APPEND command, and the bound on all their octets
# together, as a multiple of APPENDLIMIT (which RFC 7889 defines per message).
MAX_APPEND_MESSAGES: Final = 1000
MULTIAPPEND_TOTAL_FACTOR: Final = 4

# MIME trees we walk (section resolution, BODYSTRUCTURE rendering, the span parser).
# Postfix mime_nesting_limit is 100.
MAX_MIME_DEPTH: Final = 100
MAX_MIME_PARTS: Final = 10_000

# Strings longer than this are sent as literals even when they could be quoted, so a
# response line stays short and the client's quoted-string parser is not stressed.
MAX_QUOTED_RESPONSE: Final = 1024

# Messages a SORT or THREAD reference chain may walk: the References header of one message
# is capped when threading so a hostile header cannot make threading quadratic.
MAX_THREAD_REFERENCES: Final = 1000
