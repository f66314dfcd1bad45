"""Command handlers and the table that registers them.

    table = default_commands(recipients=lookup, mail=MailServices(store, states, ...))
    app = make_app(..., commands=table)

Only registered commands are advertised in OPTIONS (MS-ASProtocolCommands) and served;
any other gets 501. The mail commands (FolderSync and folder edits, Sync, Ping,
GetItemEstimate, MoveItems, ItemOperations, Search, Find, and with a submitter SendMail,
SmartReply, SmartForward) come with `mail`.
"""

from __future__ import annotations

from pathlib import Path

from store import Store
from transport.hub import Hub
from transport.submission import DEFAULT_MAX_MESSAGE_SIZE, Submitter

from ..context import CommandSpec
from ..request import ProtocolVersion
from ..syncstate import SyncStateStore
from .common import MailServices
from .drafts import DraftStore
from .find import find_handler
from .foldersync import folder_edit_handler, folder_sync_handler
from .getitemestimate import get_item_estimate_handler
from .itemoperations import get_attachment_handler, item_operations_handler
from .moveitems import move_items_handler
from .oof import oof_handler
from .ping import ping_handler
from .provision import handle_provision
from .resolverecipients import Recipient, RecipientLookup, resolve_recipients_handler
from .search import search_handler
from .sendmail import compose_handler
from .settings import OofHandler, oof_not_available, settings_handler
from .sync import sync_handler
from .validatecert import TrustStore, validate_cert_handler


def default_commands(
    *,
    recipients: RecipientLookup | None = None,
    trust: TrustStore | None = None,
    oof: OofHandler | None = None,
    mail: MailServices | None = None,
    store: Store | None = None,
    hub: Hub | None = None,
    state_dir: Path | None = None,
    hostname: str = "localhost",
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
) -> dict[str, CommandSpec]:
    """The commands of the front end itself. ResolveRecipients needs a directory lookup and
    is left out without one; ValidateCert trusts the system's CA bundle unless told; the
    mail commands need `mail` (the store, the sync state folder, the push hub, and for
    sending, a submitter): pass them built, or pass `store` and `state_dir` (and `hub` to
    send mail) and they are built here."""
    table = {
        # MS-ASPROV 3.2.5.1: Provision runs whatever the device's key.
        "Provision": CommandSpec(handle_provision, needs_provisioning=False),
        "Settings": CommandSpec(settings_handler(oof)),
        "ValidateCert": CommandSpec(validate_cert_handler(trust or TrustStore.system())),
    }
    if recipients is not None:
        table["ResolveRecipients"] = CommandSpec(resolve_recipients_handler(recipients))
    if mail is None and store is not None and state_dir is not None:
        submitter = None
        if hub is not None:
            submitter = Submitter(hub, hostname=hostname, max_size=max_message_size)
        mail = MailServices(
            store=store,
            states=SyncStateStore(state_dir),
            submitter=submitter,
            recipients=recipients,
        )
    if mail is not None:
        table.update(mail_commands(mail))
    return table


def mail_commands(mail: MailServices) -> dict[str, CommandSpec]:
    """The e-mail commands over one store (MS-ASCMD 2.2.1)."""
    drafts = None
    if mail.submitter is not None:
        drafts = DraftStore(mail, mail.submitter.hostname)
    table = {
        "FolderSync": CommandSpec(folder_sync_handler(mail)),
        "FolderCreate": CommandSpec(folder_edit_handler(mail, "Create")),
        "FolderUpdate": CommandSpec(folder_edit_handler(mail, "Update")),
        "FolderDelete": CommandSpec(folder_edit_handler(mail, "Delete")),
        "Sync": CommandSpec(sync_handler(mail, drafts)),
        "Ping": CommandSpec(ping_handler(mail)),
        "GetItemEstimate": CommandSpec(get_item_estimate_handler(mail)),
        "MoveItems": CommandSpec(move_items_handler(mail)),
        "ItemOperations": CommandSpec(item_operations_handler(mail)),
        "GetAttachment": CommandSpec(
            get_attachment_handler(mail), max_version=ProtocolVersion.V12_1
        ),
        "Search": CommandSpec(search_handler(mail)),
        "Find": CommandSpec(find_handler(mail), min_version=ProtocolVersion.V16_1),
    }
    if mail.submitter is not None:
        compose = compose_handler(mail)
        table["SendMail"] = CommandSpec(compose)
        table["SmartReply"] = CommandSpec(compose)
        table["SmartForward"] = CommandSpec(compose)
    return table


__all__ = [
    "MailServices",
    "OofHandler",
    "Recipient",
    "RecipientLookup",
    "TrustStore",
    "default_commands",
    "handle_provision",
    "mail_commands",
    "oof_handler",
    "oof_not_available",
    "resolve_recipients_handler",
    "settings_handler",
    "validate_cert_handler",
]
