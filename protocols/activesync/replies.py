"""The smallest correct answer of each command carrying only a status.

From 14.0 on, an error that is not the command's own (provisioning needed, remote wipe,
a server error, too many devices) goes into the command's top-level Status as one of the
common codes (MS-ASCMD 2.2.2, 3.1.5.1): `<FolderSync><Status>142</Status></FolderSync>`.
This table says where that Status lives for each command; a command without one
(GetAttachment, which only exists up to 12.1) gets the HTTP form instead.
"""

from __future__ import annotations

from typing import Final

from .wbxml import E, Element

# command -> path of elements from the root to the Status element (each "Namespace:Tag").
STATUS_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "Sync": ("AirSync:Sync", "AirSync:Status"),  # MS-ASCMD 2.2.3.177.17
    "SendMail": ("ComposeMail:SendMail", "ComposeMail:Status"),  # 2.2.3.177.15
    "SmartForward": ("ComposeMail:SmartForward", "ComposeMail:Status"),
    "SmartReply": ("ComposeMail:SmartReply", "ComposeMail:Status"),
    "FolderSync": ("FolderHierarchy:FolderSync", "FolderHierarchy:Status"),  # 2.2.3.177.5
    "FolderCreate": ("FolderHierarchy:FolderCreate", "FolderHierarchy:Status"),
    "FolderDelete": ("FolderHierarchy:FolderDelete", "FolderHierarchy:Status"),
    "FolderUpdate": ("FolderHierarchy:FolderUpdate", "FolderHierarchy:Status"),
    "MoveItems": ("Move:MoveItems", "Move:Status"),  # MoveItemsResponse.xsd: optional Status
    "GetItemEstimate": ("GetItemEstimate:GetItemEstimate", "GetItemEstimate:Status"),
    # MeetingResponseResponse.xsd has no top-level Status: it goes in a Result.
    "MeetingResponse": (
        "MeetingResponse:MeetingResponse",
        "MeetingResponse:Result",
        "MeetingResponse:Status",
    ),
    "Search": ("Search:Search", "Search:Status"),
    "Settings": ("Settings:Settings", "Settings:Status"),
    "Ping": ("Ping:Ping", "Ping:Status"),
    "ItemOperations": ("ItemOperations:ItemOperations", "ItemOperations:Status"),
    "Provision": ("Provision:Provision", "Provision:Status"),
    "ResolveRecipients": ("ResolveRecipients:ResolveRecipients", "ResolveRecipients:Status"),
    "ValidateCert": ("ValidateCert:ValidateCert", "ValidateCert:Status"),
    "Find": ("Find:Find", "Find:Status"),
}


def status_document(command: str, status: int) -> Element | None:
    """`<Root><Status>status</Status></Root>` for `command`; None if it has no Status."""
    path = STATUS_PATHS.get(command)
    if path is None:
        return None
    element = E(path[-1], int(status))
    for qname in reversed(path[:-1]):
        element = E(qname, element)
    return element
