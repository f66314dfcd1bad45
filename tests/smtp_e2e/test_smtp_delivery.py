"""SMTP receive end to end: the real server, Python's smtplib and swaks, the real store."""

from __future__ import annotations

import re
import smtplib
import ssl
import subprocess
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from harness import Instance, Server


def _message(
    subject: str, to: str, sender: str = "alice@remote.example", body: str = "Hello.\n"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@remote.example>"
    msg["Date"] = "Thu, 26 Nov 2026 10:00:00 +0000"
    msg.set_content(body)
    return msg


def test_port_25_delivers_to_one_local_user_without_tls(server: Server, instance: Instance) -> None:
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("sender.remote.example")
        assert (
            client.has_extn("starttls")
            and client.has_extn("pipelining")
            and client.has_extn("chunking")
        )
        assert not client.has_extn("auth")  # AUTH only after TLS
        refused = client.send_message(
            _message("plain one", "demo@example.test"),
            "alice@remote.example",
            ["demo@example.test"],
        )
        assert refused == {}
    (message,) = instance.inbox("demo@example.test")
    assert message["Subject"] == "plain one"
    assert message["Return-Path"] == "<alice@remote.example>"
    received = message.get_all("Received")
    assert len(received) == 1
    assert "from sender.remote.example ([127.0.0.1])" in received[0]
    assert "by mail.example.test (mailhost) with ESMTP id" in received[0]
    assert "for <demo@example.test>" in received[0]
    assert message.get_content() == "Hello.\n"


def test_port_25_with_starttls_to_several_users_makes_one_copy_each(
    server: Server, instance: Instance
) -> None:
    instance.add_user("bob@example.test")
    instance.add_user("carol@example.test")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.starttls(context=instance.client_context(check_hostname=False))
        client.ehlo("sender.remote.example")
        recipients = ["demo@example.test", "bob@example.test", "carol@example.test"]
        assert (
            client.send_message(
                _message("to three", ", ".join(recipients)), "alice@remote.example", recipients
            )
            == {}
        )
    for address in ("demo@example.test", "bob@example.test", "carol@example.test"):
        (message,) = instance.inbox(address)
        assert message["Subject"] == "to three"
        received = message["Received"]
        assert "with ESMTPS id" in received and "using TLSv1." in received
    # One file, hard-linked into each mailbox.
    inodes = {
        next(
            p
            for p in (instance.mailbox_dir(a)).glob("*/*")
            if p.is_file() and p.parent.name in ("new", "cur")
        )
        .stat()
        .st_ino
        for a in ("demo@example.test", "bob@example.test", "carol@example.test")
    }
    assert len(inodes) == 1


def test_port_587_requires_starttls_then_auth_and_fills_in_message_id_and_date(
    server: Server, instance: Instance
) -> None:
    with smtplib.SMTP(*server.address("submission"), timeout=10) as client:
        client.ehlo("laptop")
        assert not client.has_extn("auth")
        code, text = client.mail("demo@example.test")
        assert code == 530 and b"STARTTLS" in text
        client.rset()
        client.starttls(context=instance.client_context(check_hostname=False))
        client.ehlo("laptop")
        assert "PLAIN" in client.esmtp_features["auth"].upper()
        code, _ = client.mail("demo@example.test")
        assert code == 530  # AUTH required before MAIL
        client.rset()
        client.login("demo@example.test", instance.password)
        bare = EmailMessage()
        bare["From"] = "demo@example.test"
        bare["To"] = "demo@example.test"
        bare["Subject"] = "submitted"
        bare.set_content("no id, no date\n")
        assert client.send_message(bare) == {}
    (message,) = instance.inbox("demo@example.test")
    assert message["Message-ID"].endswith("@mail.example.test>")
    assert message["Date"]
    assert "(authenticated sender: demo@example.test)" in message["Received"]
    assert "with ESMTPSA id" in message["Received"]


def test_port_465_implicit_tls_with_auth(server: Server, instance: Instance) -> None:
    context = instance.client_context(check_hostname=False)
    with smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=10) as client:
        client.ehlo("laptop")
        code, _ = client.mail("demo@example.test")
        assert code == 530
        client.rset()
        client.login("demo", instance.password)  # the alias works as a login too
        assert (
            client.send_message(
                _message("over 465", "demo@example.test", sender="demo@example.test")
            )
            == {}
        )
    (message,) = instance.inbox("demo@example.test")
    assert message["Subject"] == "over 465"


def test_unknown_local_recipient_is_refused_at_rcpt(server: Server) -> None:
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("x.example")
        client.mail("alice@remote.example")
        code, text = client.rcpt("nobody@example.test")
        assert code == 550 and b"5.1.1" in text
        code, _ = client.rcpt("Demo@Example.TEST")
        assert code == 250  # addresses are matched case-insensitively


def test_aliases_and_policy_addresses_reach_the_mailbox(server: Server, instance: Instance) -> None:
    instance.cli("user", "address", "add", "demo@example.test", "sales@example.test")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        assert (
            client.send_message(
                _message("to alias", "sales@example.test"),
                "alice@remote.example",
                ["sales@example.test"],
            )
            == {}
        )
    (message,) = instance.inbox("demo@example.test")
    assert message["Subject"] == "to alias"


def test_remote_recipient_from_an_authenticated_user_without_a_connector_is_refused(
    server: Server, instance: Instance
) -> None:
    with smtplib.SMTP_SSL(
        *server.address("submissions"),
        context=instance.client_context(check_hostname=False),
        timeout=10,
    ) as client:
        client.login("demo@example.test", instance.password)
        client.mail("demo@example.test")
        code, text = client.rcpt("someone@remote.example")
        assert code == 550 and b"send connector" in text


def test_mail_loop_is_refused(server: Server, instance: Instance) -> None:
    hops = "".join(
        f"Received: from hop{i}.example by hop{i + 1}.example; Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        for i in range(50)
    )
    data = hops + "From: a@remote.example\r\nSubject: loop\r\n\r\nbody\r\n"
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("x.example")
        client.mail("a@remote.example")
        client.rcpt("demo@example.test")
        code, text = client.data(data.encode())
        assert code == 554 and b"5.4.6" in text
    assert instance.inbox("demo@example.test") == []


def test_declared_size_over_quota_is_refused_at_rcpt(server: Server, instance: Instance) -> None:
    instance.cli("user", "set", "demo@example.test", "--quota", "10K")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("x.example")
        client.mail("a@remote.example", ["SIZE=20000"])
        code, text = client.rcpt("demo@example.test")
        assert code == 452 and b"4.2.2" in text
        client.rset()
        client.mail("a@remote.example", ["SIZE=2000"])
        code, _ = client.rcpt("demo@example.test")
        assert code == 250


def test_message_over_quota_without_size_gets_a_4xx(server: Server, instance: Instance) -> None:
    instance.cli("user", "set", "demo@example.test", "--quota", "4K")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("x.example")
        client.mail("a@remote.example")
        client.rcpt("demo@example.test")
        code, text = client.data(b"Subject: big\r\n\r\n" + (b"x" * 80 + b"\r\n") * 100)
        assert code == 452 and b"4.2.2" in text
    assert instance.inbox("demo@example.test") == []


@pytest.mark.parametrize("tls", ["none", "starttls", "implicit"])
def test_swaks_delivers(server: Server, instance: Instance, tls: str) -> None:
    args = ["swaks", "--server", "127.0.0.1", "--to", "demo@example.test", "--from", "demo@example.test",
            "--header", f"Subject: swaks {tls}", "--timeout", "20", "--helo", "swaks.example"]  # fmt: skip
    if tls == "none":
        args += ["--port", str(server.port("smtp"))]
    elif tls == "starttls":
        args += ["--port", str(server.port("submission")), "--tls", "--auth", "PLAIN",
                 "--auth-user", "demo@example.test", "--auth-password", instance.password]  # fmt: skip
    else:
        args += ["--port", str(server.port("submissions")), "--tls-on-connect", "--auth", "LOGIN",
                 "--auth-user", "demo@example.test", "--auth-password", instance.password]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    (message,) = instance.inbox("demo@example.test")
    assert message["Subject"] == f"swaks {tls}"


def test_big_message_is_spooled_and_delivered_intact(server: Server, instance: Instance) -> None:
    body = "".join(
        f"line {i:07d} " + "y" * 60 + "\n" for i in range(40000)
    )  # ~3 MB: spooled to disk
    with smtplib.SMTP(*server.address("smtp"), timeout=30) as client:
        assert (
            client.send_message(
                _message("big", "demo@example.test", body=body),
                "a@remote.example",
                ["demo@example.test"],
            )
            == {}
        )
    (message,) = instance.inbox("demo@example.test")
    assert message.get_content() == body


def test_tls_context_rejects_nothing_modern(server: Server, instance: Instance) -> None:
    context = instance.client_context(check_hostname=False)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    with smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=10) as client:
        assert client.noop()[0] == 250


def test_postmaster_is_accepted_bare_and_at_every_accepted_domain(instance: Instance) -> None:
    """RFC 5321 4.5.1: mail to postmaster (any case, "<Postmaster>" without a domain too)
    must be accepted; without a mailbox of that name it goes to queue.postmaster, which
    `mailhost init` sets to its first user. Unset, postmaster mail is refused as unknown."""
    instance.cli("domain", "add", "second.test")
    with instance.start() as server, smtplib.SMTP(*server.address("smtp"), timeout=10) as c:
        c.ehlo("sender.remote.example")
        for n, rcpt in enumerate(["Postmaster", "postmaster@example.test",
                                  "POSTMASTER@SECOND.TEST"]):  # fmt: skip
            assert c.mail("alice@remote.example")[0] == 250
            assert c.rcpt(f"<{rcpt}>")[0] == 250, rcpt
            assert c.data(_message(f"to postmaster {n}", rcpt).as_bytes(policy=SMTP))[0] == 250
        assert c.mail("alice@remote.example")[0] == 250
        assert c.rcpt("<postmaster@remote.example>")[0] == 554  # still no relay
        c.rset()
    subjects = sorted(m["Subject"] for m in instance.inbox("demo@example.test"))
    assert subjects == [f"to postmaster {n}" for n in range(3)]
    instance.set_config("queue", "postmaster", '""')
    with instance.start() as server, smtplib.SMTP(*server.address("smtp"), timeout=10) as c:
        c.ehlo("sender.remote.example")
        assert c.mail("alice@remote.example")[0] == 250
        assert c.rcpt("<Postmaster>")[0] == 550


def test_each_accepted_message_is_one_log_line_and_each_refusal_another(
    server: Server, instance: Instance
) -> None:
    instance.add_user("bob@example.test")
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.starttls(context=instance.client_context(check_hostname=False))
        client.ehlo("sender.remote.example")
        client.mail("alice@remote.example")
        code, _ = client.rcpt("nobody@example.test")
        assert code == 550
        client.rset()
        refused = client.send_message(
            _message("logged", "demo@example.test"),
            "alice@remote.example",
            ["demo@example.test", "bob@example.test"],
        )
        assert refused == {}
        code, _ = client.noop()
        assert code == 250
    lines = server.log().splitlines()
    [accepted] = [line for line in lines if " message id=" in line]
    for part in (
        "client=127.0.0.1", "sender=<alice@remote.example>", "tls=TLSv1.3", "auth=-",
        "proto=ESMTPS", "rcpt=<demo@example.test> result=delivered",
        "rcpt=<bob@example.test> result=delivered",
    ):  # fmt: skip
        assert part in accepted, part
    (message,) = instance.inbox("demo@example.test")
    queue_id = re.search(r" id (\w+)", message["Received"])
    assert queue_id is not None and f"id={queue_id[1]} " in accepted
    [refusal] = [line for line in lines if "refused" in line and "nobody@example.test" in line]
    assert "client=127.0.0.1" in refusal and "550 5.1.1" in refusal
