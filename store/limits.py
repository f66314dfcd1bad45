"""Every bound the store enforces, in one place, each with its source.

Crossing one of these is a defined outcome (an `InvalidFolderName`, a message stored with a
simplified structure, a `PermanentFailure`), never a MemoryError, a hang or a traceback.
"""

from __future__ import annotations

from typing import Final

# --- folder names -------------------------------------------------------------------------

# Linux NAME_MAX (limits.h): the longest single directory entry. maildir++ keeps the whole
# hierarchy in one directory name (".Parent.Child"), so the escaped, dot-joined name of a
# folder must fit in it.
MAX_FOLDER_DIR_BYTES: Final = 255
# Levels of hierarchy. Dovecot's mailbox_list_depth_limit defaults to 16; EAS clients nest
# far less. Deeper names are refused.
MAX_FOLDER_DEPTH: Final = 16
# Folders per mailbox. Exchange's default folder-count warning sits at 1000 per folder;
# this bounds the hierarchy file and LIST output.
MAX_FOLDERS: Final = 5000

# --- mailbox ids --------------------------------------------------------------------------

# Mailbox ids are opaque (a GUID in hex); bounded so a directory name always fits NAME_MAX.
MAX_MAILBOX_ID_LENGTH: Final = 128

# --- UIDs, MODSEQs ------------------------------------------------------------------------

MAX_UID: Final = 2**32 - 1  # RFC 3501 2.3.1.1 / RFC 9051 2.3.1.1: 32-bit UIDs
MAX_UIDVALIDITY: Final = 2**32 - 1  # RFC 3501 2.3.1.1: nz-number, 32 bits

# Expunged UIDs remembered for QRESYNC VANISHED (RFC 7162 3.2.10) and EAS deletes. Older
# ones are forgotten and `changes_since` then reports the answer as incomplete.
MAX_EXPUNGE_HISTORY: Final = 1_000_000

# --- keywords -----------------------------------------------------------------------------

# Distinct keywords per folder. Dovecot has no hard cap but warns about huge keyword lists
# (each is a line in dovecot-keywords and a column in its index); EAS categories and IMAP
# keywords seen in practice number in the tens.
MAX_KEYWORDS_PER_FOLDER: Final = 1000
MAX_KEYWORD_LENGTH: Final = 128  # characters; Exchange category names are at most 255
# Keywords that fit in a maildir file name: 'a'..'z' as in Dovecot's dovecot-keywords.
MAILDIR_KEYWORD_LETTERS: Final = 26

# --- journal and cache records ------------------------------------------------------------

# Largest single journal/cache record. A COPY of 100k messages is one transaction of about
# 15 MB; anything bigger is split by the writer or is garbage on read.
MAX_RECORD_BYTES: Final = 64 * 1024 * 1024
# Compact the journal into a new index once it is larger than this and larger than a
# quarter of the index, so replaying it at open stays a fraction of loading the index.
JOURNAL_COMPACT_MIN_BYTES: Final = 256 * 1024

# --- message parsing ----------------------------------------------------------------------

# Postfix mime_nesting_limit = 100: MIME parts nested deeper are not descended into and are
# described as application/octet-stream leaves.
MAX_MIME_DEPTH: Final = 100
# MIME parts per message. Postfix does not cap this; 10,000 parts is far beyond any real
# message and keeps the structure record (and BODYSTRUCTURE output) bounded.
MAX_MIME_PARTS: Final = 10_000
# Postfix header_size_limit = 102400: one logical header field (with its continuation
# lines). Longer fields are truncated.
MAX_HEADER_FIELD_BYTES: Final = 102_400
# Header fields kept per header section; more are ignored. Dovecot's message parser has no
# such cap; 1000 headers per part is ample for trace fields on a long relay path.
MAX_HEADER_FIELDS: Final = 1000
# Lines of a header section read for fields; what follows is not (the body still starts
# after the blank line). A header that never ends (25 MB of short lines, no blank line)
# would otherwise cost seconds. It is room for MAX_HEADER_FIELDS fields of 100 lines each;
# real headers have a few hundred lines.
MAX_HEADER_LINES: Final = 100_000
# Addresses kept per address header (To, Cc, ...); the rest are ignored.
MAX_ADDRESSES: Final = 1000
# RFC 2046 5.1.1: boundary := 0*69<bchars> bcharnospace, i.e. 1 to 70 characters. Longer
# boundaries are accepted up to this bound because real mailers exceed 70.
MAX_BOUNDARY_LENGTH: Final = 200
# Bytes of a text part decoded for the preview. EAS Preview is at most 255 characters
# (MS-ASAIRS 2.2.2.37); 64 KiB of source is plenty to find them.
PREVIEW_CHARS: Final = 255
MAX_PREVIEW_SOURCE_BYTES: Final = 64 * 1024
# Longest raw header value we try to RFC 2047-decode in one go.
MAX_DECODE_INPUT: Final = 16 * 1024

# --- PIM items ----------------------------------------------------------------------------

# Largest iCalendar/vCard/note body accepted as an item. Exchange caps attachments and
# items by the message size limit; a calendar item or card is far smaller.
MAX_ITEM_BYTES: Final = 4 * 1024 * 1024
# Content lines of an item that the tolerant parser looks at.
MAX_ITEM_LINES: Final = 20_000

# --- import -------------------------------------------------------------------------------

# Largest single message taken from an mbox file; bigger ones are skipped and counted.
MAX_IMPORT_MESSAGE_BYTES: Final = 256 * 1024 * 1024
# Messages committed per transaction during import (one fsync per batch).
IMPORT_BATCH: Final = 200
