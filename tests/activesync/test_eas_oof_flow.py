"""Out of office end to end on the real server: set from the phone (Settings Oof), read
back with `mailhost user oof show` and Settings Oof Get; mail from an internal sender
is answered once (RFC 3834: Auto-Submitted, In-Reply-To), never for a list, bulk or
auto-submitted message; an external sender's reply leaves through the queue with the
null sender; turning it off from the CLI stops the replies."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator

import pytest
from harness import Instance
from sinks import Sink
from test_eas_policy_support import cli_json, client, settings, smtp_send, subjects, wait_for

from protocols.activesync.wbxml import E, Element

BOB = "bob@example.test"
FRIEND = "friend@remote.example"


@pytest.fixture
def sink() -> Iterator[Sink]:
    started = Sink().start()
    yield started
    started.stop()


def oof_message(applies_to: str, enabled: bool, text: str | None, body_type: str) -> Element:
    return E(
        "Settings:OofMessage",
        E(f"Settings:{applies_to}"),
        E("Settings:Enabled", 1 if enabled else 0),
        E("Settings:ReplyMessage", text) if text is not None else None,
        E("Settings:BodyType", body_type),
    )


def test_out_of_office_from_the_phone(instance: Instance, sink: Sink) -> None:
    bob_password = instance.add_user(BOB)
    instance.cli("connector", "add", "Internet", "--address-space", "*", "--smart-host",
                 f"127.0.0.1:{sink.port}", "--tls", "disabled")  # fmt: skip
    with instance.start() as server:
        phone = client(server, instance)
        try:
            phone.provision()
            set_ = phone.command(
                "Settings",
                settings(
                    E(
                        "Settings:Oof",
                        E(
                            "Settings:Set",
                            E("Settings:OofState", 1),
                            oof_message("AppliesToInternal", True, "Away (internal).", "Text"),
                            oof_message("AppliesToExternalKnown", False, None, "Text"),
                            oof_message(
                                "AppliesToExternalUnknown",
                                True,
                                "<p>Away until <b>Monday</b>.</p>",
                                "HTML",
                            ),
                        ),
                    )
                ),
            )
            assert set_.status_at("Status") == 1 and set_.status_at("Oof/Status") == 1
            shown = cli_json(instance, "user", "oof", "show", instance.user)
            assert shown["state"] == "enabled" and shown["active_now"] is True
            assert shown["internal_enabled"] and shown["internal_message"] == "Away (internal)."
            assert shown["known_external_enabled"] is False
            assert shown["unknown_external_format"] == "html"
            get = phone.command(
                "Settings",
                settings(E("Settings:Oof", E("Settings:Get", E("Settings:BodyType", "Text")))),
            )
            assert get.text("Oof/Get/OofState") == "1"
            messages = get.document.findall("Oof/Get/OofMessage")
            assert [m.children[0].tag for m in messages] == [
                "AppliesToInternal",
                "AppliesToExternalKnown",
                "AppliesToExternalUnknown",
            ]
            assert messages[2].text_of("ReplyMessage") == "Away until Monday."
            assert messages[2].text_of("BodyType") == "Text"
        finally:
            phone.close()

        # An internal sender: answered once. The reply is delivered before the SMTP
        # server acknowledges the message, so no waiting is needed here.
        login = (BOB, bob_password)
        smtp_send(server, instance, sender=BOB, to=instance.user, subject="one", login=login)
        (reply,) = instance.inbox(BOB)
        assert reply["Subject"] == "Automatic reply: one"
        assert reply["Auto-Submitted"] == "auto-replied"
        assert reply["Return-Path"] == "<>"
        (original,) = [m for m in instance.inbox(instance.user) if m["Subject"] == "one"]
        assert reply["In-Reply-To"] == original["Message-ID"]
        assert original["Message-ID"] in reply["References"]
        assert reply.get_content().strip() == "Away (internal)."
        for subject, extra in (
            ("two", ""),  # the same sender again: not answered twice
            ("list", "List-Id: <staff.example.test>\r\n"),
            ("bulk", "Precedence: bulk\r\n"),
            ("robot", "Auto-Submitted: auto-generated\r\n"),
        ):
            smtp_send(server, instance, sender=BOB, to=instance.user, subject=subject,
                      extra=extra, login=login)  # fmt: skip
        assert subjects(instance, BOB) == ["Automatic reply: one"]
        assert len(instance.inbox(instance.user)) == 5
        log = server.log()
        for reason in ("already answered", "mailing list", "bulk mail", "auto-submitted"):
            assert reason in log, reason

        # An external sender: through the queue, from the null sender, HTML and text.
        smtp_send(server, instance, sender=FRIEND, to=instance.user, subject="hello")
        wait_for(lambda: sink.messages, "the external auto-reply at the smart host")
        (received,) = sink.messages
        assert received.mail_from == "<>" and received.rcpt_tos == [FRIEND]  # null sender
        parsed = email.message_from_bytes(received.content, policy=email.policy.default)
        assert parsed["Subject"] == "Automatic reply: hello"
        assert parsed.get_content_type() == "multipart/alternative"
        html_part = parsed.get_body(("html",))
        assert html_part is not None and "<b>Monday</b>" in html_part.get_content()

        # Turned off from the CLI (a new period): nobody is answered any more.
        instance.cli("user", "oof", "set", instance.user, "--state", "disabled")
        smtp_send(server, instance, sender=BOB, to=instance.user, subject="three", login=login)
        assert subjects(instance, BOB) == ["Automatic reply: one"]
        # On again: a new period, so Bob is answered once more.
        instance.cli("user", "oof", "set", instance.user, "--state", "enabled")
        smtp_send(server, instance, sender=BOB, to=instance.user, subject="four", login=login)
        assert subjects(instance, BOB) == ["Automatic reply: one", "Automatic reply: four"]
