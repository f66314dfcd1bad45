"""Command handlers and the table that registers them.

    table = {**default_commands(recipients=lookup), "Sync": CommandSpec(handle_sync)}
    app = make_app(..., commands=table)

Only registered commands are advertised in OPTIONS (MS-ASProtocolCommands) and served;
any other gets 501.
"""

from __future__ import annotations

from ..context import CommandSpec
from .provision import handle_provision
from .resolverecipients import Recipient, RecipientLookup, resolve_recipients_handler
from .settings import OofHandler, oof_not_available, settings_handler
from .validatecert import TrustStore, validate_cert_handler


def default_commands(
    *,
    recipients: RecipientLookup | None = None,
    trust: TrustStore | None = None,
    oof: OofHandler | None = None,
) -> dict[str, CommandSpec]:
    """The commands of the front end itself. ResolveRecipients needs a directory lookup and
    is left out without one; ValidateCert trusts the system's CA bundle unless told."""
    table = {
        # MS-ASPROV 3.2.5.1: Provision runs whatever the device's key.
        "Provision": CommandSpec(handle_provision, needs_provisioning=False),
        "Settings": CommandSpec(settings_handler(oof)),
        "ValidateCert": CommandSpec(validate_cert_handler(trust or TrustStore.system())),
    }
    if recipients is not None:
        table["ResolveRecipients"] = CommandSpec(resolve_recipients_handler(recipients))
    return table


__all__ = [
    "OofHandler",
    "Recipient",
    "RecipientLookup",
    "TrustStore",
    "default_commands",
    "handle_provision",
    "oof_not_available",
    "resolve_recipients_handler",
    "settings_handler",
    "validate_cert_handler",
]
