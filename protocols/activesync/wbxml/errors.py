"""The one error family of the WBXML codec.

A request body that is not EAS WBXML is the client's fault: the HTTP layer answers 400,
or from 14.0 on the common status 102 InvalidWBXML (MS-ASCMD 2.2.2), and logs the
message. `WbxmlLimitError` marks a document refused for its size, so the front end can
log it apart from garbage. Nothing else ever escapes `decode()`.
"""

from __future__ import annotations


class WbxmlError(ValueError):
    """Malformed or unsupported WBXML. `offset` is the byte where the decoder stopped;
    `page` and `token` name the code page and tag token involved, when there is one."""

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        page: int | None = None,
        token: int | None = None,
    ) -> None:
        self.reason = message
        self.offset = offset
        self.page = page
        self.token = token
        super().__init__(message if offset is None else f"{message} (at byte {offset})")


class WbxmlLimitError(WbxmlError):
    """The document crosses one of the decoder's limits (size, depth, element count, ...)."""


class WbxmlEncodeError(WbxmlError):
    """An element tree that cannot be written as EAS WBXML (a NUL in a string, a lone
    surrogate, or a tag the code pages do not have)."""
