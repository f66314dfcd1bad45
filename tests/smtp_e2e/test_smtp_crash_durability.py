"""A kill -9 at any moment loses no message that got a 250 (the durability rule).

Senders stream messages; the server is killed with SIGKILL mid-stream; every message
whose DATA got 250 must be in the mailbox exactly once, read by Python's own maildir
reader and, after a restart, counted over POP3 by poplib.
"""

from __future__ import annotations

import poplib
import smtplib
import threading
import time
from pathlib import Path

from harness import Instance

SENDERS = 4
RUN_SECONDS = 1.5
START_TIMEOUT = 20.0


def _send_until_dead(port: int, sender: int, acked: list[str], stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                while not stop.is_set():
                    subject = f"s{sender}-{n}"
                    n += 1
                    client.sendmail(
                        "a@remote.example",
                        ["demo@example.test"],
                        f"Subject: {subject}\r\n\r\n".encode() + (b"x" * 78 + b"\r\n") * 25,
                    )
                    acked.append(subject)  # only after the 250
        except (OSError, smtplib.SMTPException):
            return


def test_kill_9_during_a_delivery_stream_loses_no_acknowledged_message(instance: Instance) -> None:
    instance.set_config("auth", "plaintext_on_loopback", "true")
    server = instance.start()
    acked: list[str] = []
    stop = threading.Event()
    port = server.port("smtp")
    threads = [
        threading.Thread(target=_send_until_dead, args=(port, i, acked, stop))
        for i in range(SENDERS)
    ]
    for thread in threads:
        thread.start()
    # The clock starts at the first 250 (the first delivery starts the delivery agent).
    deadline = time.monotonic() + START_TIMEOUT
    while not acked and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(RUN_SECONDS)
    agent = server.agent_pid()
    server.kill()  # SIGKILL, mid-stream
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(acked) > 20, "the stream did not get going"
    subjects = [m["Subject"] for m in instance.inbox("demo@example.test")]
    missing = set(acked) - set(subjects)
    assert not missing, f"{len(missing)} acknowledged messages lost"
    assert len(subjects) == len(set(subjects)), "a message was stored twice"
    # The delivery agent ends with the server (it reads the end of its socket).
    assert agent is not None
    deadline = time.monotonic() + START_TIMEOUT
    while Path(f"/proc/{agent}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{agent}").exists(), "the delivery agent outlived the server"
    # The store reopens cleanly after the crash and serves them all.
    with instance.start() as again:
        pop = poplib.POP3(*again.address("pop3"), timeout=10)
        try:
            pop.user("demo@example.test")
            pop.pass_(instance.password)
            count, _ = pop.stat()
            assert count == len(subjects)
            uids = [line.split()[1] for line in pop.uidl()[1]]
            assert len(set(uids)) == count
        finally:
            pop.quit()
