"""Outbound mail through the real server: submission → queue → send connector → a real
aiosmtpd server on loopback playing the remote MX or smart host, a DNS stub answering
MX queries from a table, DSNs back into the sender's mailbox, the queue CLI, DKIM; and a
second mailhost as the next hop for a BINARYMIME message relayed with BDAT."""

from __future__ import annotations

import email
import email.policy
import json
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dkim
import pytest
from dnsstub import DnsStub
from harness import Instance, Server
from sinks import Sink

WAIT = 30.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def sink() -> Iterator[Sink]:
    started = Sink().start()
    yield started
    started.stop()


def submit(
    server: Server,
    instance: Instance,
    to: list[str],
    subject: str = "outbound",
    body: str = "hello\r\n",
) -> None:
    context = instance.client_context(check_hostname=False)
    with smtplib.SMTP_SSL(*server.address("submissions"), context=context, timeout=10) as client:
        client.login("demo@example.test", instance.password)
        message = f"From: Demo <demo@example.test>\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n\r\n{body}"
        assert client.sendmail("demo@example.test", to, message.encode()) == {}


def test_submission_to_a_remote_domain_goes_out_through_the_smart_host(
    instance: Instance, sink: Sink
) -> None:
    instance.cli("connector", "add", "Internet", "--address-space", "*", "--smart-host",
                 f"127.0.0.1:{sink.port}", "--tls", "disabled", "--fqdn", "out.example.test")  # fmt: skip
    with instance.start() as server:
        submit(server, instance, ["friend@remote.example", "demo@example.test"], subject="mixed")
        wait_for(lambda: sink.messages, "the smart host to receive the message")
        (received,) = sink.messages
        assert received.mail_from == "demo@example.test"
        assert received.rcpt_tos == ["friend@remote.example"]
        parsed = email.message_from_bytes(received.content, policy=email.policy.default)
        assert parsed["Subject"] == "mixed"
        assert "(authenticated sender: demo@example.test)" in parsed["Received"]
        # The local recipient got its copy at once, and only one.
        assert [m["Subject"] for m in instance.inbox("demo@example.test")] == ["mixed"]
        wait_for(lambda: "status=sent" in server.log(), "the delivery log line")
        assert "to=<friend@remote.example>, relay=127.0.0.1" in server.log()


def test_mx_routing_with_a_dns_stub_and_fallback_to_the_next_mx(
    instance: Instance, sink: Sink
) -> None:
    with DnsStub() as dns:
        dns.add("remote.example", "MX", ["10 dead.remote.example.", "20 mx2.remote.example."])
        dns.add("dead.remote.example", "A", ["127.0.0.9"])  # nothing listens there
        dns.add("mx2.remote.example", "A", ["127.0.0.1"])
        instance.set_config("queue", "nameservers", f'["127.0.0.1:{dns.port}"]')
        instance.set_config("queue", "mx_port", str(sink.port))
        instance.set_config("queue", "allow_local_mx", "true")
        instance.cli("connector", "add", "Internet", "--address-space", "*")
        with instance.start() as server:
            submit(server, instance, ["someone@remote.example"], subject="via mx")
            wait_for(lambda: sink.messages, "delivery to the second MX")
            assert sink.messages[0].rcpt_tos == ["someone@remote.example"]


def test_a_permanent_refusal_bounces_a_dsn_into_the_senders_inbox(
    instance: Instance, sink: Sink
) -> None:
    sink.behaviour.rcpt["nobody@remote.example"] = ["550 5.1.1 no such user here"]
    instance.cli("connector", "add", "Internet", "--address-space", "*", "--smart-host",
                 f"127.0.0.1:{sink.port}", "--tls", "disabled")  # fmt: skip
    with instance.start() as server:
        submit(server, instance, ["nobody@remote.example"], subject="doomed")
        wait_for(
            lambda: any(
                m.get_content_type() == "multipart/report"
                for m in instance.inbox("demo@example.test")
            ),
            "the DSN",
        )
    (dsn,) = instance.inbox("demo@example.test")
    assert dsn["Return-Path"] == "<>"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Auto-Submitted"].startswith("auto-replied")
    status = next(p for p in dsn.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; nobody@remote.example" in text
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user here" in text


def test_queue_cli_lists_holds_and_retries_a_deferred_message(
    instance: Instance, sink: Sink
) -> None:
    sink.behaviour.rcpt["later@remote.example"] = ["451 4.3.0 try later"] * 50
    instance.cli("connector", "add", "Internet", "--address-space", "*", "--smart-host",
                 f"127.0.0.1:{sink.port}", "--tls", "disabled")  # fmt: skip
    with instance.start() as server:
        submit(server, instance, ["later@remote.example"], subject="deferred")
        wait_for(lambda: "status=deferred" in server.log(), "the first attempt")
        (row,) = json.loads(instance.cli("queue", "list", "--json").stdout)
        assert row["sender"] == "demo@example.test" and row["attempts"] == 1
        assert row["last_error"].startswith("4.3.0")
        shown = instance.cli("queue", "show", row["id"]).stdout
        assert "later@remote.example (deferred)" in shown
        instance.cli("queue", "hold", row["id"])
        assert json.loads(instance.cli("queue", "list", "--json").stdout)[0]["held"] is True
        sink.behaviour.rcpt.clear()
        instance.cli("queue", "release", row["id"])  # due at once, and the runner is woken
        wait_for(lambda: sink.messages, "delivery after release")
        wait_for(
            lambda: json.loads(instance.cli("queue", "list", "--json").stdout) == [],
            "an empty queue",
        )
    assert instance.cli("queue", "show", "nonexistent", check=False).returncode == 1


def test_anonymous_senders_still_cannot_relay_with_a_connector(
    instance: Instance, sink: Sink
) -> None:
    instance.cli(
        "connector",
        "add",
        "Internet",
        "--address-space",
        "*",
        "--smart-host",
        f"127.0.0.1:{sink.port}",
    )
    with instance.start() as server, smtplib.SMTP(*server.address("smtp"), timeout=10) as client:
        client.ehlo("attacker.example")
        client.mail("spammer@remote.example")
        code, _ = client.rcpt("victim@remote.example")
        assert code == 554
    assert sink.messages == []


def test_dkim_signed_mail_verifies_with_the_published_key(instance: Instance, sink: Sink) -> None:
    generated = instance.cli("domain", "dkim", "generate", "example.test").stdout
    record_name = generated.splitlines()[-1].split()[0]
    txt = "".join(part.strip('"') for part in generated.splitlines()[-1].split('"')[1::2])
    instance.cli("connector", "add", "Internet", "--address-space", "*", "--smart-host",
                 f"127.0.0.1:{sink.port}", "--tls", "disabled")  # fmt: skip
    with instance.start() as server:
        submit(server, instance, ["friend@remote.example"], subject="signed")
        wait_for(lambda: sink.messages, "the signed message")
    content = sink.messages[0].content
    assert content.startswith(b"DKIM-Signature:")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == record_name.rstrip(".")
        return txt.encode()

    assert dkim.verify(content, dnsfunc=dnsfunc)


def test_connector_cli_round_trip_and_bad_input(instance: Instance) -> None:
    instance.cli("connector", "add", "Partners", "--address-space", "*.partner.example", "--smart-host",
                 "relay.partner.example:587", "--tls", "required", "--verify-certificate")  # fmt: skip
    shown = json.loads(instance.cli("connector", "show", "Partners", "--json").stdout)
    assert shown["address_spaces"] == ["*.partner.example"] and shown["tls"] == "required"
    assert shown["route"] == "relay.partner.example:587" and shown["verify_certificate"] is True
    instance.cli("connector", "set", "Partners", "--no-enabled")
    assert json.loads(instance.cli("connector", "list", "--json").stdout)[0]["enabled"] is False
    for args, message in (
        (["connector", "add", "Partners"], "already exists"),
        (["connector", "add", "Bad", "--address-space", "not a domain"], "not a valid domain"),
        (["connector", "add", "Bad2", "--smart-host", "host:notaport"], "port"),
        (["connector", "remove", "Nothing"], "no send connector"),
    ):
        result = instance.cli(*args, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    instance.cli("connector", "remove", "Partners")
    assert json.loads(instance.cli("connector", "list", "--json").stdout) == []


def test_a_full_mailbox_next_to_a_remote_recipient_is_queued_not_dropped(
    instance: Instance, sink: Sink
) -> None:
    """Every copy is accounted for: the remote one goes out, the local one that did not fit
    waits in the queue as a local retry, and the client gets 250 (no resend, no duplicate)."""
    instance.add_user("full@example.test")
    instance.cli("user", "set", "full@example.test", "--quota", "1K")
    instance.cli("connector", "add", "Internet", "--address-space", "*", "--smart-host",
                 f"127.0.0.1:{sink.port}", "--tls", "disabled")  # fmt: skip
    with instance.start() as server:
        context = instance.client_context(check_hostname=False)
        with smtplib.SMTP_SSL(
            *server.address("submissions"), context=context, timeout=10
        ) as client:
            client.login("demo@example.test", instance.password)
            # No SIZE declared: with it the full mailbox is refused at RCPT (452) instead.
            client.mail("demo@example.test")
            assert client.rcpt("full@example.test")[0] == 250
            assert client.rcpt("friend@remote.example")[0] == 250
            code, _ = client.data(b"Subject: both\r\n\r\n" + (b"x" * 70 + b"\r\n") * 40)
            assert code == 250
        wait_for(lambda: sink.messages, "the remote copy")
        wait_for(lambda: "local retry" in server.log(), "the local retry to be queued")
        entries = json.loads(instance.cli("queue", "list", "--json").stdout)
        local = [r for e in entries for r in e["recipients"] if r["local"]]
        assert [r["address"] for r in local] == ["full@example.test"]
        assert local[0]["state"] in ("pending", "deferred")
    assert instance.inbox("full@example.test") == []


def test_a_recipient_removed_between_rcpt_and_data_is_bounced_not_dropped(
    instance: Instance,
) -> None:
    """The route is taken again at the end of DATA; an address that vanished meanwhile
    gets a DSN to the sender instead of disappearing behind a 250."""
    instance.add_user("leaving@example.test")
    with instance.start() as server:
        context = instance.client_context(check_hostname=False)
        with smtplib.SMTP_SSL(
            *server.address("submissions"), context=context, timeout=10
        ) as client:
            client.login("demo@example.test", instance.password)
            client.mail("demo@example.test")
            assert client.rcpt("leaving@example.test")[0] == 250
            assert client.rcpt("demo@example.test")[0] == 250
            instance.cli("user", "remove", "leaving@example.test")
            code, _ = client.data(b"Subject: goodbye\r\n\r\nbye\r\n")
            assert code == 250
        wait_for(
            lambda: any(
                m.get_content_type() == "multipart/report"
                for m in instance.inbox("demo@example.test")
            ),
            "the DSN for the removed recipient",
        )
    messages = instance.inbox("demo@example.test")
    assert "goodbye" in [m["Subject"] for m in messages]
    dsn = next(m for m in messages if m.get_content_type() == "multipart/report")
    assert "leaving@example.test" in dsn.as_string()


def _reply(sock: socket.socket, pending: bytearray) -> bytes:
    """One SMTP reply (all its lines) read from `sock`."""
    while True:
        end = pending.find(b"\r\n")
        while end >= 0:
            line = bytes(pending[:end])
            del pending[: end + 2]
            if line[3:4] != b"-":
                return line
            end = pending.find(b"\r\n")
        data = sock.recv(65536)
        assert data, "connection closed"
        pending += data


def test_a_binarymime_message_is_relayed_with_bdat_byte_for_byte(
    instance: Instance, tmp_path: Path
) -> None:
    # The next hop is a second mailhost, which offers CHUNKING and BINARYMIME (RFC 3030):
    # the message goes on with BDAT, unchanged, bare line ends and NULs included.
    far = Instance.create(tmp_path / "far")
    far.cli("domain", "add", "remote.example")
    far.add_user("friend@remote.example")
    body = bytes(range(256)) * 4  # every byte value: NUL, bare CR and LF, 8-bit
    message = (
        b"From: <someone@other.test>\r\nTo: <friend@remote.example>\r\nSubject: binary\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: binary\r\n\r\n" + body
    )
    with far.start() as far_server:
        # For this server remote.example is an internal-relay domain: accepted from
        # anyone on port 25 and passed on through the connector.
        instance.cli("domain", "add", "remote.example", "--type", "internal-relay")
        instance.cli("connector", "add", "Partner", "--address-space", "remote.example",
                     "--smart-host", f"127.0.0.1:{far_server.port('smtp')}",
                     "--tls", "disabled")  # fmt: skip
        with (
            instance.start() as server,
            socket.create_connection(server.address("smtp"), timeout=10) as sock,
        ):
            pending = bytearray()
            assert _reply(sock, pending).startswith(b"220")
            sock.sendall(b"EHLO client.other.test\r\n")
            assert _reply(sock, pending).startswith(b"250")
            sock.sendall(b"MAIL FROM:<someone@other.test> BODY=BINARYMIME\r\n")
            assert _reply(sock, pending).startswith(b"250")
            sock.sendall(b"RCPT TO:<friend@remote.example>\r\n")
            assert _reply(sock, pending).startswith(b"250")
            sock.sendall(f"BDAT {len(message)} LAST\r\n".encode() + message)
            assert _reply(sock, pending).startswith(b"250")
            sock.sendall(b"QUIT\r\n")
            inbox = far.mailbox_dir("friend@remote.example") / "new"
            wait_for(lambda: any(inbox.iterdir()), "the next hop to store the message")
            # The next hop stores before its 250; this server logs after reading it.
            wait_for(lambda: "status=sent" in server.log(), "the delivery log line")
        (stored,) = inbox.iterdir()
        content = stored.read_bytes()
        assert content.endswith(message)  # after the trace fields each hop added
        assert content.count(b"Received: from ") == 2
