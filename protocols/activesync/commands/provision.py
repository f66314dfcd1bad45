"""The Provision command (MS-ASPROV): the handshake runs inside the registry's
transaction (see `provision.provision`), so the stored record and the answer agree."""

from __future__ import annotations

import logging

from ..context import CommandContext, CommandReply
from ..devices import Device
from ..provision import ProvisionOutcome, ProvisionParseError, parse_provision, provision
from ..replies import status_document
from ..status import ProvisionStatus

log = logging.getLogger("mailhost.activesync")


async def handle_provision(ctx: CommandContext) -> CommandReply:
    try:
        request = parse_provision(ctx.document)
    except ProvisionParseError as exc:
        log.info("eas provision: %s device=%s: %s", ctx.account.address, ctx.query.device_id, exc)
        document = status_document("Provision", ProvisionStatus.PROTOCOL_ERROR)
        assert document is not None
        return CommandReply.wbxml(document)
    now = ctx.clock()
    outcomes: list[ProvisionOutcome] = []

    def change(device: Device) -> Device:
        outcome = provision(device, request, ctx.policy, version=ctx.version, now=now)
        outcomes.append(outcome)
        return outcome.device

    await ctx.devices.modify(ctx.device.owner, ctx.device.device_id, change)
    outcome = outcomes[-1]
    log.info(
        "eas provision: user=%s device=%s type=%s version=%s policy=%s: %s",
        ctx.account.address,
        ctx.query.device_id,
        ctx.query.device_type,
        ctx.version.value,
        ctx.policy.name,
        outcome.event,
    )
    return CommandReply.wbxml(outcome.response)
