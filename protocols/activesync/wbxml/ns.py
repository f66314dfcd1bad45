"""One builder per EAS namespace, for response code that reads like the XML it makes:

    from protocols.activesync.wbxml.ns import AirSync, AirSyncBase

    AirSync.Sync(AirSync.Collections(AirSync.Collection(AirSync.SyncKey(key), ...)))

`AirSync.Sync(...)` is `E("AirSync:Sync", ...)`; a tag the code page does not have is an
AttributeError at the call site.
"""

from __future__ import annotations

from typing import Final

from .element import Builder
from .tags import Namespace

AirSync: Final = Builder(Namespace.AIRSYNC)
Contacts: Final = Builder(Namespace.CONTACTS)
Email: Final = Builder(Namespace.EMAIL)
AirNotify: Final = Builder(Namespace.AIRNOTIFY)
Calendar: Final = Builder(Namespace.CALENDAR)
Move: Final = Builder(Namespace.MOVE)
GetItemEstimate: Final = Builder(Namespace.GET_ITEM_ESTIMATE)
FolderHierarchy: Final = Builder(Namespace.FOLDER_HIERARCHY)
MeetingResponse: Final = Builder(Namespace.MEETING_RESPONSE)
Tasks: Final = Builder(Namespace.TASKS)
ResolveRecipients: Final = Builder(Namespace.RESOLVE_RECIPIENTS)
ValidateCert: Final = Builder(Namespace.VALIDATE_CERT)
Contacts2: Final = Builder(Namespace.CONTACTS2)
Ping: Final = Builder(Namespace.PING)
Provision: Final = Builder(Namespace.PROVISION)
Search: Final = Builder(Namespace.SEARCH)
GAL: Final = Builder(Namespace.GAL)
AirSyncBase: Final = Builder(Namespace.AIRSYNCBASE)
Settings: Final = Builder(Namespace.SETTINGS)
DocumentLibrary: Final = Builder(Namespace.DOCUMENT_LIBRARY)
ItemOperations: Final = Builder(Namespace.ITEM_OPERATIONS)
ComposeMail: Final = Builder(Namespace.COMPOSE_MAIL)
Email2: Final = Builder(Namespace.EMAIL2)
Notes: Final = Builder(Namespace.NOTES)
RightsManagement: Final = Builder(Namespace.RIGHTS_MANAGEMENT)
Find: Final = Builder(Namespace.FIND)
