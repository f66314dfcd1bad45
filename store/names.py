"""Folder names in the API and the maildir++ directory names they map to.

In the API a folder name is Unicode (NFC), with ``/`` separating hierarchy levels:
``"Inbox"``, ``"Projects/2024/Q1"``. ``Inbox`` is matched case-insensitively as its first
component (IMAP's INBOX, RFC 3501 5.1) and always spelled ``Inbox``.

On disk (maildir++, as Courier and Dovecot lay it out) Inbox is the mailbox directory
itself and every other folder is one directory directly below it named ``.`` followed by the
escaped components joined with ``.``: ``Projects/2024/Q1`` is ``.Projects.2024.Q1``.
Components are kept as UTF-8, except that these characters are written as ``%`` and two
upper-case hex digits of their UTF-8 bytes:

====  ======================================================================
``.``  the maildir++ hierarchy separator (so a name can never contain one)
``/``  the path separator (cannot occur in a component, escaped for safety)
``%``  the escape character itself
``~``  home-directory expansion in shells and some tools
``&``  the modified UTF-7 shift character, so no tool reads our names as mUTF-7
``\\``  a path separator elsewhere
``:``  the maildir info separator
====  ======================================================================

Because every folder directory starts with ``.`` and no escaped name contains ``/`` or a
bare ``.``, a folder directory can only ever be a direct child of the mailbox directory and
can never be ``.``, ``..``, ``tmp``, ``new`` or ``cur``; folders named ``tmp`` or ``New`` are
therefore allowed. Refused with `InvalidFolderName`: empty names or components (``a//b``,
``/a``, ``a/``), ``.`` and ``..`` components, control characters (Unicode categories Cc, Cs,
Zl, Zp: NUL, CR, LF, DEL, C1, surrogates, line separators), components with leading or
trailing white space (``"Inbox "`` next to ``"Inbox"`` is a spoofing aid), more than
`MAX_FOLDER_DEPTH` levels, and names whose directory name exceeds NAME_MAX.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import InvalidFolderName, InvalidMailboxId
from .limits import MAX_FOLDER_DEPTH, MAX_FOLDER_DIR_BYTES, MAX_MAILBOX_ID_LENGTH

INBOX = "Inbox"
SEPARATOR = "/"
ESCAPE_CHAR = "%"
ESCAPED_CHARACTERS = frozenset("./%~&\\:")

_MAILBOX_ID = re.compile(r"[A-Za-z0-9_-]+")
_BAD_CATEGORIES = frozenset(("Cc", "Cs", "Zl", "Zp"))
_ESCAPE_SEQUENCE = re.compile(r"(?:%[0-9A-F]{2})+")


def validate_mailbox_id(mailbox_id: str) -> str:
    if (
        not isinstance(mailbox_id, str)
        or not 0 < len(mailbox_id) <= MAX_MAILBOX_ID_LENGTH
        or not _MAILBOX_ID.fullmatch(mailbox_id)
    ):
        raise InvalidMailboxId(
            f"mailbox ids are 1 to {MAX_MAILBOX_ID_LENGTH} characters of A-Z a-z 0-9 _ -"
        )
    return mailbox_id


def normalize_folder_name(name: str) -> str:
    """The canonical form of a folder name, or InvalidFolderName saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise InvalidFolderName("a folder name may not be empty")
    name = unicodedata.normalize("NFC", name)
    components = name.split(SEPARATOR)
    if len(components) > MAX_FOLDER_DEPTH:
        raise InvalidFolderName(f"folders nest at most {MAX_FOLDER_DEPTH} levels deep")
    for component in components:
        if not component:
            raise InvalidFolderName(f"empty hierarchy level in {name!r}")
        if component in (".", ".."):
            raise InvalidFolderName(f"{component!r} is not a folder name")
        if component != component.strip():
            raise InvalidFolderName(f"{component!r} starts or ends with white space")
        if component.isascii() and component.isprintable():
            continue  # printable ASCII has none of the refused categories
        for ch in component:
            if unicodedata.category(ch) in _BAD_CATEGORIES:
                raise InvalidFolderName(f"control character U+{ord(ch):04X} in folder name")
    if components[0].casefold() == INBOX.casefold():
        components[0] = INBOX
    canonical = SEPARATOR.join(components)
    if canonical != INBOX and len(folder_dir_name(canonical).encode()) > MAX_FOLDER_DIR_BYTES:
        raise InvalidFolderName(f"folder name too long (at most {MAX_FOLDER_DIR_BYTES} bytes)")
    return canonical


def escape_component(component: str) -> str:
    out = []
    for ch in component:
        if ch in ESCAPED_CHARACTERS:
            out.append("".join(f"%{byte:02X}" for byte in ch.encode()))
        else:
            out.append(ch)
    return "".join(out)


def unescape_component(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        data = bytes.fromhex(match.group(0).replace("%", ""))
        return data.decode("utf-8", errors="replace")

    return _ESCAPE_SEQUENCE.sub(replace, text)


def folder_dir_name(name: str) -> str:
    """The maildir++ directory name below the mailbox directory ("" for Inbox).

    `name` must already be canonical (see `normalize_folder_name`).
    """
    if name == INBOX:
        return ""
    return "." + ".".join(escape_component(c) for c in name.split(SEPARATOR))


def folder_name_from_dir(dir_name: str) -> str:
    """The folder name a maildir++ directory stands for, or InvalidFolderName.

    Used to adopt folders another maildir tool created. Components are split on the bare
    dots and unescaped; the result is validated like any other name.
    """
    if not dir_name.startswith(".") or dir_name in (".", ".."):
        raise InvalidFolderName(f"{dir_name!r} is not a maildir++ folder directory")
    components = [unescape_component(c) for c in dir_name[1:].split(".")]
    return normalize_folder_name(SEPARATOR.join(components))


def parent_name(name: str) -> str | None:
    head, sep, _ = name.rpartition(SEPARATOR)
    return head if sep else None


def is_descendant(name: str, ancestor: str) -> bool:
    return name.startswith(ancestor + SEPARATOR)
