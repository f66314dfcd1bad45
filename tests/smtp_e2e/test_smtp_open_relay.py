"""No open relay (reliability-security item 24): the RFC 2505 address tricks, end to end.

Anonymous senders on port 25 may address only our own domains; every trick that has
made other servers relay ends in a refusal, and nothing is ever queued or delivered
elsewhere. Authenticated senders with no send connector get a clear refusal too.
"""

from __future__ import annotations

import smtplib

from harness import Instance, Server

# (recipient as sent in RCPT TO, acceptable reply codes). 550: unknown local user;
# 554: relay denied; 501/553: not a valid path.
TRICKS = [
    ("<victim@remote.example>", {554}),
    ("<victim@REMOTE.example>", {554}),
    ("<victim%remote.example@example.test>", {550}),  # percent hack
    ("<remote.example!victim@example.test>", {550}),  # bang path
    ('<"victim@remote.example"@example.test>', {550}),  # quoted local part
    ("<victim@remote.example@example.test>", {501, 553}),  # two @
    ("<@example.test:victim@remote.example>", {554}),  # source route: the real target is remote
    ("<@example.test,@mail.example.test:victim@remote.example>", {554}),
    ("<victim@[127.0.0.1]>", {554}),  # IP literal
    ("<victim@[IPv6:::1]>", {554}),
    ("<victim@example.test.>", {501, 553}),  # trailing dot
    ("<victim@remote.example.>", {501, 553}),
    ("<victim@example.test.remote.example>", {554}),  # our domain as a prefix
    ("<victim@xexample.test>", {554}),  # as a suffix
    ("<victim@sub.example.test>", {554}),  # subdomains are not ours unless accepted
    ("victim@remote.example", {501, 553}),  # no angle brackets
    ("<victim>", {501, 553, 550, 554}),  # no domain
    ("<victim@remote.example> NOTIFY=NEVER", {554}),
]


def test_anonymous_relay_tricks_are_refused(server: Server, instance: Instance) -> None:
    wrong = []
    for recipient, codes in TRICKS:
        # A fresh session per trick: each costs two errors, and 20 errors end a session.
        with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
            client.ehlo("attacker.example")
            assert client.mail("spammer@remote.example")[0] == 250
            code, text = client.docmd("RCPT TO:" + recipient)
            # Nothing can be sent either: DATA has no recipients.
            data_code, _ = client.docmd("DATA")
            if code not in codes or data_code not in (503, 554):
                wrong.append((recipient, code, text, data_code))
    assert wrong == []
    assert instance.inbox("demo@example.test") == []
    assert not any((instance.folder / "spool").iterdir())


def test_relay_refusal_also_under_tls(server: Server, instance: Instance) -> None:
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.starttls(context=instance.client_context(check_hostname=False))
        client.ehlo("attacker.example")
        client.mail("spammer@remote.example")
        code, text = client.rcpt("victim@remote.example")
        assert code == 554 and b"5.7.1" in text


def test_a_local_sender_address_does_not_open_the_relay(server: Server) -> None:
    # Claiming to be one of our users without logging in changes nothing.
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("attacker.example")
        client.mail("demo@example.test")
        assert client.rcpt("victim@remote.example")[0] == 554


def test_submission_ports_refuse_anonymous_mail_even_to_local_users(
    server: Server, instance: Instance
) -> None:
    context = instance.client_context(check_hostname=False)
    with smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=10) as client:
        client.ehlo("x.example")
        code, _ = client.mail("someone@remote.example")
        assert code == 530


def test_default_connector_can_require_authentication(instance: Instance) -> None:
    instance.set_config("smtp", "anonymous_on_default", "false")
    with instance.start() as server, smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("x.example")
        code, _ = client.mail("someone@remote.example")
        assert code == 530
    assert instance.inbox("demo@example.test") == []
