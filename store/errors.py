"""Protocol-neutral store errors.

Every front end maps these to its replies in one table (SMTP 4xx/5xx, IMAP NO with a response
code, POP3 -ERR, EAS status codes). `TemporaryFailure` means "try again later" (disk full, I/O
error, lock trouble); `PermanentFailure` means retrying the same request will fail again.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the store raises on purpose."""


class TemporaryFailure(StoreError):
    """An I/O or resource problem; the same request may succeed later (SMTP 4xx)."""


class PermanentFailure(StoreError):
    """The request cannot succeed as made (SMTP 5xx)."""


class QuotaExceeded(StoreError):
    """The mailbox's storage quota does not leave room for this message or copy."""

    def __init__(self, message: str, *, usage: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.usage = usage
        self.limit = limit


class InvalidName(PermanentFailure):
    """A name given to the store cannot be used; the message says why."""


class InvalidFolderName(InvalidName):
    """A folder name that is empty, dangerous, too long or otherwise unusable."""


class InvalidMailboxId(InvalidName):
    """A mailbox id outside [A-Za-z0-9_-] or too long."""


class InvalidKeyword(InvalidName):
    """A keyword (IMAP keyword / EAS category) that cannot be stored."""


class InvalidItem(PermanentFailure):
    """A PIM item whose data is not what its folder holds (no VEVENT in an event, ...)."""


class NotFound(PermanentFailure):
    """Something named in a request does not exist."""


class MailboxNotFound(NotFound):
    """No mailbox with that id (and the caller asked not to create one)."""


class FolderNotFound(NotFound):
    """No folder with that name or id."""


class MessageNotFound(NotFound):
    """No message with that UID in the folder (expunged, perhaps by another session)."""


class FolderExists(PermanentFailure):
    """A folder with that name already exists."""


class FolderHasChildren(PermanentFailure):
    """A folder with subfolders can only be deleted recursively."""


class FolderProtected(PermanentFailure):
    """Default folders (Inbox, Sent Items, Calendar, ...) cannot be deleted or renamed."""
