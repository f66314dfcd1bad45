"""The Provision command (MS-ASPROV): the handshake runs inside the registry's
transaction (see `provision.provision`), so the stored record and the answer agree."""

from __future__ import annotations

import logging

from ..context import CommandContext, CommandReply
from ..devices import Device
from ..notices import wipe_notice
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
    if outcome.device.wipe.finished and not ctx.device.wipe.finished:
        await _tell_wiped(ctx, outcome.device)
    return CommandReply.wbxml(outcome.response)


async def _tell_wiped(ctx: CommandContext, device: Device) -> None:
    """The device reported the wipe: record it in the log and tell the user by mail (the
    phone is gone; they read it elsewhere)."""
    log.warning(
        "eas remote wipe acknowledged: user=%s device=%s state=%s",
        ctx.account.address,
        device.device_id,
        device.wipe.value,
    )
    notice = wipe_notice(device)
    if notice is None or ctx.notices is None:
        return
    try:
        await ctx.notices.notify(ctx.account, notice.subject, notice.text)
    except Exception:
        log.exception("eas: wipe notice to %s failed", ctx.account.address)
