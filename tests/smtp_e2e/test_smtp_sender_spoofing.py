"""An authenticated user may send only as themselves (reliability-security item 25)."""

from __future__ import annotations

import smtplib
import subprocess

from harness import Instance, Server


def test_mail_from_another_address_is_refused_for_an_authenticated_user(
    server: Server, instance: Instance
) -> None:
    instance.add_user("boss@example.test")
    instance.cli("user", "address", "add", "demo@example.test", "sales@example.test")
    context = instance.client_context(check_hostname=False)
    with smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=10) as client:
        client.login("demo@example.test", instance.password)
        for forged in ("boss@example.test", "ceo@remote.example", "DEMO@example.test.evil.example"):
            code, text = client.mail(forged)
            assert code == 553 and b"5.7.1" in text, forged
            client.rset()
        code, text = client.docmd("MAIL FROM:<>")
        assert code == 553
        client.rset()
        assert client.mail("Demo@Example.Test")[0] == 250  # own address, any case
        client.rset()
        assert client.mail("sales@example.test")[0] == 250  # own alias


def test_authzid_of_someone_else_is_refused(server: Server, instance: Instance) -> None:
    import base64

    instance.add_user("boss@example.test", "boss-pw")
    context = instance.client_context(check_hostname=False)
    with smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=10) as client:
        client.ehlo("laptop")
        token = base64.b64encode(
            b"boss@example.test\0demo@example.test\0" + instance.password.encode()
        ).decode()
        code, _ = client.docmd("AUTH", "PLAIN " + token)
        assert code == 535


def test_swaks_spoofing_attempt(server: Server, instance: Instance) -> None:
    instance.add_user("boss@example.test")
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port("submissions")), "--tls-on-connect",
         "--auth", "PLAIN", "--auth-user", "demo@example.test", "--auth-password", instance.password,
         "--from", "boss@example.test", "--to", "boss@example.test", "--timeout", "20"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "553 5.7.1" in result.stdout
    assert instance.inbox("boss@example.test") == []
