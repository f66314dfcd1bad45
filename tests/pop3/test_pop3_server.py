"""POP3 end to end: the real server, Python's poplib on 110 (STLS) and 995, and fetchmail."""

from __future__ import annotations

import os
import poplib
import smtplib
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from harness import Instance, Server

SUBJECTS = ["first", "second", "third"]


def _deliver(server: Server, subjects: list[str], to: str = "demo@example.test") -> None:
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        for subject in subjects:
            body = f"From: a@remote.example\r\nSubject: {subject}\r\n\r\nline one of {subject}\r\n.dot line\r\nlast\r\n"
            client.sendmail("a@remote.example", [to], body.encode())


def _stls(server: Server, instance: Instance) -> poplib.POP3:
    pop = poplib.POP3(*server.address("pop3"), timeout=10)
    pop.stls(context=instance.client_context(check_hostname=False))
    return pop


def _login(pop: poplib.POP3, instance: Instance, user: str = "demo@example.test") -> None:
    pop.user(user)
    pop.pass_(instance.password)


def test_the_whole_transaction_over_stls(server: Server, instance: Instance) -> None:
    _deliver(server, SUBJECTS)
    pop = _stls(server, instance)
    caps = pop.capa()
    assert "USER" in caps and "UIDL" in caps and "TOP" in caps and "STLS" not in caps
    _login(pop, instance)
    count, size = pop.stat()
    assert count == 3 and size > 0
    listing = pop.list()[1]
    assert [line.split()[0] for line in listing] == [b"1", b"2", b"3"]
    assert sum(int(line.split()[1]) for line in listing) == size
    uidls = [line.split()[1] for line in pop.uidl()[1]]
    assert len(set(uidls)) == 3 and all(len(u) == 16 for u in uidls)
    assert pop.uidl(2).split()[2] == uidls[1]
    _, lines, octets = pop.retr(1)
    assert b"Subject: first" in lines
    assert b".dot line" in lines  # dot-stuffing undone by poplib
    assert octets == int(listing[0].split()[1])
    _, top, _ = pop.top(2, 1)
    assert b"Subject: second" in top and top[-1] == b"line one of second"
    pop.dele(1)
    with pytest.raises(poplib.error_proto, match="deleted"):
        pop.retr(1)
    assert pop.stat()[0] == 2
    pop.rset()
    assert pop.stat()[0] == 3
    pop.dele(3)
    pop.quit()
    # Removed through the store: the next session (and every protocol) sees two.
    pop = poplib.POP3_SSL(
        *server.address("pop3s"), context=instance.client_context(check_hostname=False), timeout=10
    )
    _login(pop, instance)
    assert pop.stat()[0] == 2
    assert [line.split()[1] for line in pop.uidl()[1]] == uidls[:2]  # UIDLs are stable
    pop.quit()
    assert [m["Subject"] for m in instance.inbox("demo@example.test")] == ["first", "second"]


def test_a_dropped_connection_removes_nothing(server: Server, instance: Instance) -> None:
    _deliver(server, SUBJECTS)
    pop = poplib.POP3_SSL(
        *server.address("pop3s"), context=instance.client_context(check_hostname=False), timeout=10
    )
    _login(pop, instance)
    pop.dele(1)
    pop.dele(2)
    pop.sock.close()  # no QUIT
    pop = poplib.POP3_SSL(
        *server.address("pop3s"), context=instance.client_context(check_hostname=False), timeout=10
    )
    _login(pop, instance)
    assert pop.stat()[0] == 3
    pop.quit()


def test_a_second_session_on_the_mailbox_is_refused_in_use(
    server: Server, instance: Instance
) -> None:
    context = instance.client_context(check_hostname=False)
    first = poplib.POP3_SSL(*server.address("pop3s"), context=context, timeout=10)
    _login(first, instance)
    second = poplib.POP3_SSL(*server.address("pop3s"), context=context, timeout=10)
    second.user("demo@example.test")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(instance.password)
    first.quit()
    _login(second, instance)  # free again once the first has quit (USER again: RFC 1939 7)
    second.quit()


def test_no_password_before_tls_and_stls_injection_is_not_executed(
    server: Server, instance: Instance
) -> None:
    pop = poplib.POP3(*server.address("pop3"), timeout=10)
    caps = pop.capa()
    assert "STLS" in caps and "USER" not in caps
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.user("demo@example.test")
    pop.quit()
    # STLS with a command pipelined behind it in the same packet (CVE-2021-38084 class).
    with socket.create_connection(server.address("pop3"), timeout=10) as raw:
        assert raw.recv(1024).startswith(b"+OK")
        raw.sendall(b"STLS\r\nCAPA\r\n")
        reply = raw.recv(1024)
        assert reply == b"+OK begin TLS negotiation\r\n"
        with instance.client_context(check_hostname=False).wrap_socket(raw) as tls:
            tls.settimeout(1.0)
            with pytest.raises(TimeoutError):
                tls.recv(1024)  # the injected CAPA got no answer
            tls.sendall(b"CAPA\r\n")
            tls.settimeout(5)
            assert tls.recv(4096).startswith(b"+OK")


def test_bad_input_gets_err_and_the_session_continues(server: Server, instance: Instance) -> None:
    with socket.create_connection(server.address("pop3"), timeout=10) as sock:
        sock.recv(1024)
        for line, expected in [
            (b"BOGUS\r\n", b"-ERR unknown command"),
            (b"STAT\r\n", b"-ERR STAT is not allowed now"),
            (b"NOOP " + b"x" * 300 + b"\r\n", b"-ERR line too long"),
            (b"PASS x\r\n", b"-ERR PASS must follow USER"),
            (b"CAPA\r\n", b"+OK"),
        ]:
            sock.sendall(line)
            assert sock.recv(4096).startswith(expected), line


def test_plaintext_login_on_loopback_when_the_config_allows_it(instance: Instance) -> None:
    instance.set_config("auth", "plaintext_on_loopback", "true")
    with instance.start() as server:
        pop = poplib.POP3(*server.address("pop3"), timeout=10)
        assert "USER" in pop.capa()
        _login(pop, instance)
        assert pop.stat()[0] == 0
        pop.quit()


def test_messages_with_bare_lf_and_long_lines_are_sent_correctly(
    server: Server, instance: Instance
) -> None:
    from store.store import Store

    raw = b"Subject: odd\n\n.starts with a dot\nbare lf line\n" + b"z" * 5000 + b"\n"
    mailbox_id = instance.mailbox_dir("demo@example.test").name
    store = Store(instance.folder / "mailboxes")
    store.open_mailbox(mailbox_id).inbox.append(raw)  # as another program might have stored it
    store.close()
    pop = poplib.POP3_SSL(
        *server.address("pop3s"), context=instance.client_context(check_hostname=False), timeout=10
    )
    poplib._MAXLINE = 10000  # poplib's own line limit is 2048
    _login(pop, instance)
    _, lines, _ = pop.retr(1)
    assert lines[:3] == [b"Subject: odd", b"", b".starts with a dot"]
    assert lines[4] == b"z" * 5000
    pop.quit()


def test_fetchmail_downloads_and_deletes(
    server: Server, instance: Instance, tmp_path: Path
) -> None:
    _deliver(server, SUBJECTS)
    mbox = tmp_path / "fetched.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 protocol pop3 port {server.port('pop3s')}\n"
        f'  user "demo@example.test" password "{instance.password}"\n'
        f"  ssl sslcertck sslcertfile {instance.certificate()} sslcommonname mail.example.test\n"
        f'  mda "cat >> {mbox}"\n'
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(tmp_path), "FETCHMAILHOME": str(tmp_path)}
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "-v", "--sslcertck", "--nokeep",
         "--pidfile", str(tmp_path / "fetchmail.pid")],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "3 messages for demo@example.test" in output, output
    text = mbox.read_text()
    for subject in SUBJECTS:
        assert f"Subject: {subject}" in text
    assert instance.inbox("demo@example.test") == []  # --nokeep: deleted after download


def test_tls_1_3_works_and_certificate_verifies(server: Server, instance: Instance) -> None:
    context = instance.client_context(check_hostname=False)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    pop = poplib.POP3_SSL(*server.address("pop3s"), context=context, timeout=10)
    assert pop.sock.version() == "TLSv1.3"
    pop.quit()
