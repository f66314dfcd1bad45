"""Settings Oof (MS-ASCMD 2.2.3.119-121) over the front end with an out-of-office store:
Get in Text and HTML, Set of every state with its messages, and malformed requests."""

from __future__ import annotations

from typing import Any

import pytest
from eas_env import ALICE, EasEnv

from protocols.activesync.commands import TrustStore, default_commands, oof_handler
from protocols.activesync.wbxml import E, Element
from transport.autoreply import MAX_REPLY_MESSAGE, MemoryOofStore, OofState


@pytest.fixture
def oof() -> MemoryOofStore:
    return MemoryOofStore()


@pytest.fixture
def phone(make_env: Any, oof: MemoryOofStore) -> Any:
    env: EasEnv = make_env(commands=default_commands(trust=TrustStore.of([]), oof=oof_handler(oof)))
    client = env.client(version="14.1")
    client.provision()
    return client


def oof_request(*children: Element | None) -> Element:
    return E("Settings:Settings", E("Settings:Oof", [c for c in children if c]))


def set_request(state: int, *rest: Element) -> Element:
    return oof_request(E("Settings:Set", E("Settings:OofState", state), list(rest)))


def message(applies: str, enabled: int | None, text: str | None, body: str = "Text") -> Element:
    return E(
        "Settings:OofMessage",
        E(f"Settings:{applies}"),
        E("Settings:Enabled", enabled) if enabled is not None else None,
        E("Settings:ReplyMessage", text) if text is not None else None,
        E("Settings:BodyType", body),
    )


def get(phone: Any, body_type: str = "Text") -> Any:
    return phone.command(
        "Settings", oof_request(E("Settings:Get", E("Settings:BodyType", body_type)))
    )


def test_scheduled_set_then_get_in_both_body_types(phone: Any, oof: MemoryOofStore) -> None:
    answer = phone.command(
        "Settings",
        set_request(
            2,
            E("Settings:StartTime", "2030-07-01T08:00:00.000Z"),
            E("Settings:EndTime", "2030-07-15T17:00:00.000Z"),
            message("AppliesToInternal", 1, "On leave & back soon."),
            message("AppliesToExternalUnknown", 1, "<p>Back on <b>15 July</b></p>", "HTML"),
        ),
    )
    assert answer.status_at("Oof/Status") == 1
    saved = oof.oof_settings(ALICE.mailbox_id)
    assert saved.state is OofState.SCHEDULED and saved.period == 1
    assert saved.unknown_external.html and not saved.known_external.enabled
    text = get(phone)
    assert text.text("Oof/Get/OofState") == "2"
    assert text.text("Oof/Get/StartTime") == "2030-07-01T08:00:00.000Z"
    assert text.text("Oof/Get/EndTime") == "2030-07-15T17:00:00.000Z"
    internal, known, unknown = text.document.findall("Oof/Get/OofMessage")
    assert internal.text_of("ReplyMessage") == "On leave & back soon."
    assert known.text_of("Enabled") == "0" and known.find("ReplyMessage") is None
    assert unknown.text_of("ReplyMessage") == "Back on 15 July"
    html = get(phone, "HTML")
    internal, _, unknown = html.document.findall("Oof/Get/OofMessage")
    assert "On leave &amp; back soon." in (internal.text_of("ReplyMessage") or "")
    assert unknown.text_of("ReplyMessage") == "<p>Back on <b>15 July</b></p>"
    assert unknown.text_of("BodyType") == "HTML"


def test_a_set_keeps_what_it_leaves_out(phone: Any, oof: MemoryOofStore) -> None:
    phone.command("Settings", set_request(1, message("AppliesToInternal", 1, "Away.")))
    phone.command("Settings", set_request(0, message("AppliesToInternal", None, None)))
    saved = oof.oof_settings(ALICE.mailbox_id)
    assert saved.state is OofState.DISABLED and saved.internal.text == "Away."
    assert saved.internal.enabled and saved.period == 2
    assert get(phone).text("Oof/Get/OofState") == "0"


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (oof_request(), 2),
        (oof_request(E("Settings:Get", E("Settings:BodyType", "RTF"))), 2),
        (set_request(3), 2),
        (oof_request(E("Settings:Set")), 2),
        (set_request(2, E("Settings:StartTime", "yesterday")), 2),
        (set_request(1, E("Settings:OofMessage", E("Settings:Enabled", 1))), 2),
        (set_request(1, message("AppliesToInternal", 1, "x", "Markdown")), 2),
        (set_request(2), 5),  # scheduled without times
        (
            set_request(
                2,
                E("Settings:StartTime", "2030-07-02T00:00:00.000Z"),
                E("Settings:EndTime", "2030-07-01T00:00:00.000Z"),
            ),
            5,
        ),
        (set_request(1, message("AppliesToInternal", 1, "x" * (MAX_REPLY_MESSAGE + 1))), 5),
    ],
)
def test_bad_requests(phone: Any, oof: MemoryOofStore, request_: Element, status: int) -> None:
    answer = phone.command("Settings", request_)
    assert answer.status_at("Status") == 1 and answer.status_at("Oof/Status") == status
    assert oof.oof_settings(ALICE.mailbox_id).period == 0  # nothing saved
