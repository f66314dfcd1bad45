"""Lookups over the EAS code pages: namespace <-> page, (page, token) <-> tag name.

The tables are built once at import from the generated `codepages` module. Names are the
MS-ASWBXML ones; the libwbxml spellings are kept for cross-checks against `wbxml2xml`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from .codepages import NAMESPACES, TAGS, TagDef

PAGE_COUNT: Final = 26  # MS-ASWBXML 2.1.2.1: code pages 0-25
FIRST_TAG_TOKEN: Final = 0x05  # WBXML 1.3 5.8.2: 0x00-0x04 are global tokens on every page
TOKEN_MASK: Final = 0x3F  # WBXML 1.3 5.8.2: the low six bits of a tag byte are its identity


class Namespace(StrEnum):
    """The code page namespaces by their MS-ASWBXML names (value = name = XML namespace)."""

    AIRSYNC = "AirSync"
    CONTACTS = "Contacts"
    EMAIL = "Email"
    AIRNOTIFY = "AirNotify"  # page 3: no longer used (MS-ASWBXML 2.1.2.1.4)
    CALENDAR = "Calendar"
    MOVE = "Move"
    GET_ITEM_ESTIMATE = "GetItemEstimate"
    FOLDER_HIERARCHY = "FolderHierarchy"
    MEETING_RESPONSE = "MeetingResponse"
    TASKS = "Tasks"
    RESOLVE_RECIPIENTS = "ResolveRecipients"
    VALIDATE_CERT = "ValidateCert"
    CONTACTS2 = "Contacts2"
    PING = "Ping"
    PROVISION = "Provision"
    SEARCH = "Search"
    GAL = "GAL"
    AIRSYNCBASE = "AirSyncBase"
    SETTINGS = "Settings"
    DOCUMENT_LIBRARY = "DocumentLibrary"
    ITEM_OPERATIONS = "ItemOperations"
    COMPOSE_MAIL = "ComposeMail"
    EMAIL2 = "Email2"
    NOTES = "Notes"
    RIGHTS_MANAGEMENT = "RightsManagement"
    FIND = "Find"


_PAGE_OF: Final[dict[str, int]] = {name: page for page, name in enumerate(NAMESPACES)}
_BY_PAGE_TOKEN: Final[dict[tuple[int, int], TagDef]] = {(t.page, t.token): t for t in TAGS}
# _BY_TOKEN[page][token] for the decoder's hot loop; None where the page has no such tag.
_BY_TOKEN: Final[tuple[tuple[TagDef | None, ...], ...]] = tuple(
    tuple(_BY_PAGE_TOKEN.get((page, token)) for token in range(TOKEN_MASK + 1))
    for page in range(len(NAMESPACES))
)
_BY_NAME: Final[dict[tuple[str, str], TagDef]] = {(NAMESPACES[t.page], t.name): t for t in TAGS}
_BY_LIBWBXML_NAME: Final[dict[tuple[str, str], TagDef]] = {
    (NAMESPACES[t.page], t.libwbxml_name): t for t in TAGS if t.libwbxml_name is not None
}


def namespace_of(page: int) -> str | None:
    return NAMESPACES[page] if 0 <= page < len(NAMESPACES) else None


def page_of(namespace: str) -> int | None:
    return _PAGE_OF.get(namespace)


def tag_at(page: int, token: int) -> TagDef | None:
    """The tag with this identity (content bit already masked off) on this page."""
    if 0 <= page < len(_BY_TOKEN) and 0 <= token <= TOKEN_MASK:
        return _BY_TOKEN[page][token]
    return None


def tag_named(namespace: str, name: str) -> TagDef | None:
    """The tag by its canonical (MS-ASWBXML) name."""
    return _BY_NAME.get((namespace, name))


def tag_by_libwbxml_name(namespace: str, name: str) -> TagDef | None:
    """The tag by the name Debian's libwbxml 0.11.8 gives it (for `wbxml2xml` output)."""
    return _BY_LIBWBXML_NAME.get((namespace, name))


def tags_of(namespace: str) -> tuple[TagDef, ...]:
    page = _PAGE_OF.get(namespace)
    return () if page is None else tuple(t for t in _BY_TOKEN[page] if t is not None)
