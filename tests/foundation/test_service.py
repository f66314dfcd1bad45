"""The real service on loopback: listeners, TLS, signals, sd_notify, start-up errors."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Instance, Server, mailhost_argv

from mailhost import affinity

# Each listener greets in its own protocol.
PLAIN_GREETINGS = {
    "smtp": b"220 mail.example.test ",
    "submission": b"220 mail.example.test ",
    "imap": b"* OK ",
    "pop3": b"+OK ",
}
# How soon a closed HTTP connection's slot must be free again (hypercorn's keep-alive
# timer, which held it before, runs 120 s).
SLOT_FREED_WITHIN = 15.0
TLS_GREETINGS = {"submissions": b"220 ", "imaps": b"* OK ", "pop3s": b"+OK "}


def _read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1024)
        if not chunk:
            break
        data += chunk
    return data


def test_every_listener_accepts_and_speaks_its_protocol(server: Server, instance: Instance) -> None:
    assert set(server.listeners) == {
        "smtp", "submissions", "submission", "imap", "imaps", "pop3", "pop3s", "https", "http",
    }  # fmt: skip
    for name, greeting in PLAIN_GREETINGS.items():
        with socket.create_connection(server.address(name), timeout=5) as sock:
            assert _read_line(sock).startswith(greeting), name
    context = instance.client_context()
    for name, greeting in TLS_GREETINGS.items():
        with (
            socket.create_connection(server.address(name), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="mail.example.test") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            assert _read_line(tls).startswith(greeting), name


def test_https_serves_the_generated_certificate_with_alpn(
    server: Server, instance: Instance
) -> None:
    context = instance.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(server.address("https"), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="autodiscover.example.test") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
         "--cacert", str(instance.certificate()),
         "--resolve", f"mail.example.test:{server.port('https')}:127.0.0.1",
         f"https://mail.example.test:{server.port('https')}/Microsoft-Server-ActiveSync"],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    assert result.stdout == "501 2"  # a GET on the virtual directory: an HTML page, never WBXML


def test_plain_http_redirects_to_https_without_asking_for_credentials(server: Server) -> None:
    result = subprocess.run(
        ["curl", "-s", "-D", "-", "-o", "/dev/null", "-u", "demo:secret",
         f"http://127.0.0.1:{server.port('http')}/Microsoft-Server-ActiveSync?Cmd=Sync"],
        capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    headers = result.stdout.lower()
    assert headers.startswith("http/1.1 301")
    assert (
        f"location: https://127.0.0.1:{server.port('https')}/microsoft-server-activesync?cmd=sync"
        in headers
    )
    assert "www-authenticate" not in headers


def test_tls_1_1_and_cbc_suites_are_refused(server: Server) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.set_ciphers("ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA")  # CBC only
    with (
        socket.create_connection(server.address("imaps"), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw)
    gcm = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    gcm.check_hostname = False
    gcm.verify_mode = ssl.CERT_NONE
    gcm.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(server.address("imaps"), timeout=5) as raw,
        gcm.wrap_socket(raw) as tls,
    ):
        cipher = tls.cipher()
        assert cipher is not None
        assert cipher[0].startswith("ECDHE-") and ("GCM" in cipher[0] or "CHACHA" in cipher[0])


def test_sigterm_exits_zero_within_the_grace_period(instance: Instance) -> None:
    instance.set_config("service", "shutdown_grace", "3.0")
    server = instance.start()
    # An idle session keeps its connection open; the grace period bounds the wait.
    idle = socket.create_connection(server.address("https"), timeout=5)
    started = time.monotonic()
    code = server.terminate(timeout=15)
    elapsed = time.monotonic() - started
    idle.close()
    assert code == 0, server.log()
    assert elapsed < 3.0 + 2.0
    assert "STOPPING=1" in server.notifications or "stopped" in server.log()
    assert not (instance.folder / "run" / "mailhost.json").exists()


def test_sighup_serves_a_replaced_certificate_to_new_connections(
    server: Server, instance: Instance
) -> None:
    def served_fingerprint() -> bytes:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with (
            socket.create_connection(server.address("imaps"), timeout=5) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der

    before = served_fingerprint()
    # A session opened before the reload keeps working.
    held = instance.client_context().wrap_socket(
        socket.create_connection(server.address("pop3s"), timeout=5),
        server_hostname="mail.example.test",
    )
    instance.cli(
        "cert", "generate", "--name", "mail.example.test", "--name", "renewed.example.test"
    )
    server.reload()
    after = served_fingerprint()
    assert after != before
    assert _read_line(held).startswith(b"+OK")
    held.close()
    assert "RELOADING=1" in server.notifications
    assert server.process.poll() is None


def test_sighup_with_a_broken_config_keeps_running(server: Server, instance: Instance) -> None:
    instance.config.write_text(instance.config.read_text() + "\nbogus = 1\n")
    server.reload()
    assert server.process.poll() is None
    assert "unknown key" in server.log()
    with socket.create_connection(server.address("smtp"), timeout=5) as sock:
        assert _read_line(sock).startswith(b"220")


def _serve_once(instance: Instance) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mailhost_argv("-c", str(instance.config), "serve"),
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_port_in_use_is_one_clear_line(instance: Instance) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        instance.set_config("listeners.imap", "port", str(blocker.getsockname()[1]))
        result = _serve_once(instance)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "imap" in lines[0] and "already in use" in lines[0]
    assert "Traceback" not in result.stderr


def test_unreadable_certificate_is_one_clear_line(instance: Instance) -> None:
    instance.certificate().write_text("not a certificate\n")
    result = _serve_once(instance)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "server.crt" in result.stderr and "Traceback" not in result.stderr
    instance.certificate().unlink()
    result = _serve_once(instance)
    assert result.returncode != 0
    assert "No such file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("listeners.smtp", "port", '"twenty-five"', "listeners.smtp.port: expected an integer"),
        ("listeners.smtp", "port", "70000", "listeners.smtp.port: 70000 is not a TCP port"),
        ("service", "shutdown_grace", "true", "service.shutdown_grace: expected a number"),
    ],
)
def test_bad_config_is_one_clear_line(
    instance: Instance, section: str, key: str, value: str, message: str
) -> None:
    instance.set_config(section, key, value)
    result = _serve_once(instance)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_a_disabled_listener_is_not_bound(instance: Instance) -> None:
    instance.set_config("listeners.pop3", "enabled", "false")
    with instance.start() as server:
        assert "pop3" not in server.listeners
        assert "pop3s" in server.listeners


def test_status_reports_the_running_server(server: Server, instance: Instance) -> None:
    result = instance.cli("status")
    assert f"pid {server.process.pid}" in result.stdout
    assert result.stdout.count(" yes") == 9
    server.terminate()
    stopped = instance.cli("status", check=False)
    assert stopped.returncode == 3 and "not running" in stopped.stdout


def test_http_connections_the_client_closed_free_their_slot_at_once(instance: Instance) -> None:
    """A closed keep-alive connection must not keep counting against its address until
    the keep-alive timer runs out: many short requests from one address (phones behind
    one NAT) would otherwise be refused."""
    instance.set_config("service", "max_connections_per_address", "3")
    context = instance.client_context(check_hostname=False)

    def request(open_socket: Callable[[], socket.socket], expected: bytes) -> None:
        # The server sees a close within moments (a machine loaded by the parallel test
        # run: give it seconds), never only when the 120-second keep-alive timer runs out.
        deadline = time.monotonic() + SLOT_FREED_WITHIN
        while True:
            with open_socket() as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                line = _read_line(s)
            if line or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # refused: the slot of an earlier connection is not free yet
        assert line.startswith(expected), server.log()[-3000:]

    with instance.start() as server:
        for _ in range(12):
            request(
                lambda: context.wrap_socket(socket.create_connection(server.address("https"), 5)),
                b"HTTP/1.1 ",
            )
            request(lambda: socket.create_connection(server.address("http"), 5), b"HTTP/1.1 301")


def test_connections_over_the_per_address_limit_are_refused(instance: Instance) -> None:
    instance.set_config("service", "max_connections_per_address", "2")
    context = instance.client_context(check_hostname=False)
    with instance.start() as server:
        for name, greeting, refusal in [
            ("imap", b"* OK ", b"* BYE "),
            ("pop3", b"+OK ", b"-ERR "),
            ("https", None, b""),  # HTTP has no greeting: the extra connection is closed
        ]:
            held = []
            try:
                for _ in range(2):
                    sock = socket.create_connection(server.address(name), timeout=5)
                    if name == "https":
                        sock = context.wrap_socket(sock)
                    held.append(sock)
                    if greeting is not None:
                        assert _read_line(sock).startswith(greeting), name
                extra = socket.create_connection(server.address(name), timeout=5)
                if name == "https":
                    extra = context.wrap_socket(extra)
                held.append(extra)
                assert _read_line(extra).startswith(refusal), name
                assert extra.recv(1) == b"", name  # and the connection is closed
                if name == "https":  # the two within the limit are still served
                    held[0].sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
                    assert _read_line(held[0]).startswith(b"HTTP/1.1 "), name
            finally:
                for sock in held:
                    sock.close()


def _thread_cpus(pid: int) -> dict[int, frozenset[int]]:
    """Each thread of `pid` and the CPUs it may run on (proc(5), Cpus_allowed_list)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # the thread ended
        listed = next(
            line.split(":", 1)[1].strip()
            for line in status.splitlines()
            if line.startswith("Cpus_allowed_list:")
        )
        cpus: set[int] = set()
        for part in listed.split(","):
            low, _, high = part.partition("-")
            cpus.update(range(int(low), int(high or low) + 1))
        found[int(task.name)] = frozenset(cpus)
    return found


def test_threads_share_one_cpu_and_a_reload_can_spread_them(
    server: Server, instance: Instance
) -> None:
    allowed = frozenset(os.sched_getaffinity(0))  # what the server started with
    with smtplib.SMTP(*server.address("smtp"), timeout=10) as smtp:
        # After a delivery (which starts the delivery agent, and worker threads here).
        smtp.sendmail("a@remote.example", ["demo@example.test"], b"Subject: x\r\n\r\nbody\r\n")
    threads = _thread_cpus(server.process.pid)
    assert len(threads) > 1
    [kept] = set(threads.values())
    assert len(kept) == 1 and kept <= allowed
    assert "threads kept on CPU" in server.log()

    instance.set_config("service", "single_cpu", "false")
    server.reload()
    assert set(_thread_cpus(server.process.pid).values()) == {allowed}

    instance.set_config("service", "single_cpu", "true")
    server.reload()
    [kept] = set(_thread_cpus(server.process.pid).values())
    assert len(kept) == 1 and kept <= allowed


def test_work_outside_the_gil_may_use_every_cpu_while_it_runs() -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    seen: dict[str, frozenset[int]] = {}

    def worker() -> None:
        with affinity.everywhere():
            seen["inside"] = frozenset(os.sched_getaffinity(0))
        seen["after"] = frozenset(os.sched_getaffinity(0))

    cpu = affinity.apply(True)
    try:
        assert cpu in allowed
        assert frozenset(os.sched_getaffinity(0)) == {cpu}
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    finally:
        affinity.apply(False)
    assert seen == {"inside": allowed, "after": frozenset({cpu})}
    assert frozenset(os.sched_getaffinity(0)) == allowed


def test_a_helper_process_gets_a_cpu_of_its_own_when_there_is_one() -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    cpu = affinity.apply(True)
    try:
        others = allowed - {cpu}
        assert affinity.helper_cpus() == ({min(others)} if others else {cpu})
    finally:
        affinity.apply(False)
    assert affinity.helper_cpus() == allowed  # nothing pinned: what the server may use


def test_a_kernel_that_refuses_pinning_leaves_threads_where_they_are(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    allowed = frozenset(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None)  # accepted, ignored
    if len(allowed) > 1:
        assert affinity.apply(True) is None
        assert "cannot keep threads on one CPU" in caplog.text
    with affinity.everywhere():  # nothing pinned: nothing to widen
        assert frozenset(os.sched_getaffinity(0)) == allowed
