"""The Settings command (MS-ASCMD 2.2.1.18): any mix of Oof, DeviceInformation,
DevicePassword, UserInformation and RightsManagementInformation blocks, each answered
with its own Status, under a global Status.

Out of office is served by an `OofHandler` when one is given; without one, Get answers
"auto-replies off" and Set is refused with AccessDenied, so clients show a clear state.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from ..context import CommandContext, CommandReply, Handler
from ..devices import Device, parse_device_information
from ..request import ProtocolVersion
from ..status import SettingsStatus
from ..wbxml import E, Element

log = logging.getLogger("mailhost.activesync")

MAX_RECOVERY_PASSWORD: Final = 255  # MS-ASCMD 2.2.3.130: Password is at most 255 characters
OOF_DISABLED: Final = 0  # MS-ASCMD 2.2.3.115 OofState

# Given the request's `Settings:Oof` element, the response's `Settings:Oof` element.
OofHandler = Callable[[CommandContext, Element], Awaitable[Element]]


async def oof_not_available(ctx: CommandContext, request: Element) -> Element:
    """No out-of-office service: Get says auto-replies are off (the truth); Set is denied."""
    if request.find("Get") is not None:
        return E(
            "Settings:Oof",
            E("Settings:Status", SettingsStatus.SUCCESS),
            E("Settings:Get", E("Settings:OofState", OOF_DISABLED)),
        )
    if request.find("Set") is not None:
        return E("Settings:Oof", E("Settings:Status", SettingsStatus.ACCESS_DENIED))
    return E("Settings:Oof", E("Settings:Status", SettingsStatus.PROTOCOL_ERROR))


def settings_handler(oof: OofHandler | None = None) -> Handler:
    oof_handler = oof or oof_not_available

    async def handle_settings(ctx: CommandContext) -> CommandReply:
        document = ctx.document
        if document is None or document.qname != "Settings:Settings":
            return _global(SettingsStatus.PROTOCOL_ERROR)
        blocks: list[Element] = []
        for block in document.children:
            if block.ns != "Settings":
                return _global(SettingsStatus.PROTOCOL_ERROR)
            if block.tag == "Oof":
                blocks.append(await oof_handler(ctx, block))
            elif block.tag in _BLOCKS:
                blocks.append(await _BLOCKS[block.tag](ctx, block))
            else:
                return _global(SettingsStatus.PROTOCOL_ERROR)
        return CommandReply.wbxml(
            E("Settings:Settings", E("Settings:Status", SettingsStatus.SUCCESS), blocks)
        )

    return handle_settings


def _global(status: SettingsStatus) -> CommandReply:
    return CommandReply.wbxml(E("Settings:Settings", E("Settings:Status", status)))


async def _device_information(ctx: CommandContext, block: Element) -> Element:
    set_element = block.find("Set")
    if set_element is None:
        return E("Settings:DeviceInformation", E("Settings:Status", SettingsStatus.PROTOCOL_ERROR))
    information = parse_device_information(set_element)

    def change(device: Device) -> Device:
        return dataclasses.replace(device, info=information.merged_into(device.info))

    await ctx.devices.modify(ctx.device.owner, ctx.device.device_id, change)
    return E("Settings:DeviceInformation", E("Settings:Status", SettingsStatus.SUCCESS))


async def _device_password(ctx: CommandContext, block: Element) -> Element:
    password = block.text_of("Set/Password")
    if password is None or len(password) > MAX_RECOVERY_PASSWORD:
        status = SettingsStatus.PROTOCOL_ERROR
    elif not ctx.policy.password_recovery_enabled:
        status = SettingsStatus.DENIED_BY_POLICY  # MS-ASCMD 2.2.3.177.14: 7
    else:
        await ctx.devices.set_recovery_password(ctx.device.owner, ctx.device.device_id, password)
        log.info(
            "eas recovery password stored: user=%s device=%s",
            ctx.account.address,
            ctx.device.device_id,
        )
        status = SettingsStatus.SUCCESS
    return E("Settings:DevicePassword", E("Settings:Status", status))


async def _user_information(ctx: CommandContext, block: Element) -> Element:
    if block.find("Get") is None:
        return E("Settings:UserInformation", E("Settings:Status", SettingsStatus.PROTOCOL_ERROR))
    account = ctx.account
    addresses = list(dict.fromkeys((account.address, *account.addresses)))
    if ctx.version >= ProtocolVersion.V14_1:
        # MS-ASCMD 2.2.3.1: from 14.1 the addresses come per account. One account, the
        # primary one, so no AccountId (MS-ASCMD 2.2.3.2: absent for the primary account).
        details: Element = E(
            "Settings:Accounts",
            E(
                "Settings:Account",
                E("Settings:AccountName", account.address),
                E("Settings:UserDisplayName", account.display_name or account.address),
                E("Settings:SendDisabled", "0"),
                E(
                    "Settings:EmailAddresses",
                    (E("Settings:SMTPAddress", a) for a in addresses),
                    E("Settings:PrimarySmtpAddress", account.address),
                ),
            ),
        )
    else:
        # 12.1 and 14.0: the plain list (MS-ASCMD 2.2.3.58.2).
        details = E("Settings:EmailAddresses", (E("Settings:SMTPAddress", a) for a in addresses))
    return E(
        "Settings:UserInformation",
        E("Settings:Status", SettingsStatus.SUCCESS),
        E("Settings:Get", details),
    )


async def _rights_management(ctx: CommandContext, block: Element) -> Element:
    # MS-ASRM is not offered: no templates (MS-ASCMD 2.2.3.152: the list may be empty).
    return E(
        "Settings:RightsManagementInformation",
        E("Settings:Status", SettingsStatus.SUCCESS),
        E("Settings:Get", E("RightsManagement:RightsManagementTemplates")),
    )


_BLOCKS: Final[dict[str, Callable[[CommandContext, Element], Awaitable[Element]]]] = {
    "DeviceInformation": _device_information,
    "DevicePassword": _device_password,
    "UserInformation": _user_information,
    "RightsManagementInformation": _rights_management,
}
