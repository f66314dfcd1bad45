"""Settings Oof (MS-ASCMD 2.2.3.119-2.2.3.121): the phone reads and sets the user's
out-of-office state and its three messages (internal, known external, unknown external).

Get answers in the body type the device asks for (Text or HTML; a message stored as
HTML is converted for a Text request). Set replaces what it carries: a message block the
device leaves out keeps its previous text, and saving starts a new out-of-office period
(each sender may be answered once again). Times are MS-ASDTYPE dateTime in UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Final

import trio

from transport.autoreply import OofReply, OofSettings, OofState, OofStore

from ..context import CommandContext
from ..mail import eas_datetime, parse_eas_datetime
from ..numbers import NumberError, parse_uint
from ..status import SettingsStatus
from ..wbxml import E, Element

log = logging.getLogger("mailhost.activesync")

# MS-ASCMD 2.2.3.120 OofState values.
_STATE_CODES: Final = {
    OofState.DISABLED: 0,
    OofState.ENABLED: 1,
    OofState.SCHEDULED: 2,
}
_STATES: Final = {code: state for state, code in _STATE_CODES.items()}
# MS-ASCMD 2.2.3.119 OofMessage: which audience a block applies to, and the setting.
_AUDIENCES: Final = {
    "AppliesToInternal": "internal",
    "AppliesToExternalKnown": "known_external",
    "AppliesToExternalUnknown": "unknown_external",
}
BODY_TEXT: Final = "Text"  # MS-ASCMD 2.2.3.18.2 BodyType
BODY_HTML: Final = "HTML"
THREADS: Final = 2


class OofRequestError(ValueError):
    """A malformed Oof block; answered with Status 2 (protocol error)."""


def oof_handler(store: OofStore) -> Callable[[CommandContext, Element], Awaitable[Element]]:
    """The `settings_handler(oof=...)` for an `OofStore` (blocking; run in threads)."""
    limiter = trio.CapacityLimiter(THREADS)

    async def handle(ctx: CommandContext, block: Element) -> Element:
        mailbox_id = ctx.account.mailbox_id
        get = block.find("Get")
        set_ = block.find("Set")
        if get is not None:
            wanted = (get.text_of("BodyType") or BODY_TEXT).strip()
            if wanted.lower() not in ("text", "html"):
                return _status(SettingsStatus.PROTOCOL_ERROR)
            settings = await trio.to_thread.run_sync(
                store.oof_settings, mailbox_id, limiter=limiter
            )
            return E(
                "Settings:Oof",
                E("Settings:Status", SettingsStatus.SUCCESS),
                render_get(settings, html=wanted.lower() == "html"),
            )
        if set_ is None:
            return _status(SettingsStatus.PROTOCOL_ERROR)
        current = await trio.to_thread.run_sync(store.oof_settings, mailbox_id, limiter=limiter)
        try:
            wanted_settings = parse_set(set_, current)
        except OofRequestError as exc:
            log.info("eas oof: %s: %s", ctx.account.address, exc)
            return _status(SettingsStatus.PROTOCOL_ERROR)
        if wanted_settings.errors():
            log.info("eas oof: %s: %s", ctx.account.address, wanted_settings.errors()[0])
            return _status(SettingsStatus.INVALID_ARGUMENTS)
        await trio.to_thread.run_sync(
            store.set_oof_settings, mailbox_id, wanted_settings, limiter=limiter
        )
        log.info(
            "eas oof: %s set out of office %s (device %s)",
            ctx.account.address,
            wanted_settings.state.value,
            ctx.device.device_id,
        )
        return _status(SettingsStatus.SUCCESS)

    return handle


def _status(status: SettingsStatus) -> Element:
    return E("Settings:Oof", E("Settings:Status", status))


def render_get(settings: OofSettings, *, html: bool) -> Element:
    """MS-ASCMD 2.2.3.75.1 Get in a response: OofState, StartTime, EndTime, OofMessage x3."""
    scheduled = settings.state is OofState.SCHEDULED
    messages = []
    for tag, name in _AUDIENCES.items():
        reply: OofReply = getattr(settings, name)
        messages.append(
            E(
                "Settings:OofMessage",
                E(f"Settings:{tag}"),
                E("Settings:Enabled", 1 if reply.enabled else 0),
                E("Settings:ReplyMessage", reply.as_html() if html else reply.as_text())
                if reply.text
                else None,
                E("Settings:BodyType", BODY_HTML if html else BODY_TEXT),
            )
        )
    return E(
        "Settings:Get",
        E("Settings:OofState", _STATE_CODES[settings.state]),
        E("Settings:StartTime", _time(settings.start)) if scheduled and settings.start else None,
        E("Settings:EndTime", _time(settings.end)) if scheduled and settings.end else None,
        messages,
    )


def _time(value: float | None) -> str:
    assert value is not None
    return eas_datetime(dt.datetime.fromtimestamp(value, dt.UTC))


def parse_set(block: Element, current: OofSettings) -> OofSettings:
    """MS-ASCMD 2.2.3.159.1 Set -> the settings to save (`current` fills what is left out)."""
    state_text = block.text_of("OofState") or ""
    try:
        state_number = parse_uint(state_text, max_digits=1, what="OofState")
    except NumberError:
        state_number = -1
    if state_number not in _STATES:
        raise OofRequestError(f"OofState {state_text[:10]!r} is not 0, 1 or 2")
    state = _STATES[state_number]
    start, end = current.start, current.end
    for tag in ("StartTime", "EndTime"):
        text = block.text_of(tag)
        if text is None:
            continue
        parsed = parse_eas_datetime(text)
        if parsed is None:
            raise OofRequestError(f"{tag} {text[:40]!r} is not a dateTime")
        if tag == "StartTime":
            start = parsed.timestamp()
        else:
            end = parsed.timestamp()
    changes: dict[str, OofReply] = {}
    for message in block.findall("OofMessage"):
        audiences = [name for tag, name in _AUDIENCES.items() if message.find(tag) is not None]
        if len(audiences) != 1:
            raise OofRequestError("an OofMessage needs exactly one AppliesTo element")
        name = audiences[0]
        previous: OofReply = changes.get(name) or getattr(current, name)
        enabled_text = message.text_of("Enabled")
        enabled = previous.enabled if enabled_text is None else enabled_text.strip() == "1"
        text = message.text_of("ReplyMessage")
        body_type = (message.text_of("BodyType") or BODY_TEXT).strip().lower()
        if body_type not in ("text", "html"):
            raise OofRequestError(f"BodyType {body_type[:10]!r}")
        if text is None:
            changes[name] = dataclasses.replace(previous, enabled=enabled)
        else:
            changes[name] = OofReply(enabled=enabled, text=text, html=body_type == "html")
    return dataclasses.replace(
        current,
        state=state,
        start=start,
        end=end,
        internal=changes.get("internal", current.internal),
        known_external=changes.get("known_external", current.known_external),
        unknown_external=changes.get("unknown_external", current.unknown_external),
    )
