"""The delivery agent (transport/agent.py) through the real server and smtplib: started
by the first message, replaced when it dies or the config is reloaded, gone when the
server stops, and left out with `smtp.delivery_agent = false`."""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import Instance, Server

WAIT = 20.0


def wait_for(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def send(server: Server, subject: str) -> None:
    with smtplib.SMTP(*server.address("smtp"), timeout=30) as client:
        client.sendmail(
            "someone@remote.example",
            ["demo@example.test"],
            f"Subject: {subject}\r\n\r\nhello\r\n".encode(),
        )


def subjects(instance: Instance) -> list[str]:
    return sorted(m["Subject"] for m in instance.inbox("demo@example.test"))


def test_the_first_message_starts_the_agent_on_another_cpu(instance: Instance) -> None:
    with instance.start() as server:
        assert server.agent_pid() is None  # nothing started before there is mail
        send(server, "one")
        agent = server.agent_pid()
        assert agent is not None
        send(server, "two")
        assert server.agent_pid() == agent  # one agent serves every message
        assert subjects(instance) == ["one", "two"]
        allowed = os.sched_getaffinity(0)
        if len(allowed) > 1:
            # The server keeps to one CPU (service.single_cpu); the agent to another.
            assert os.sched_getaffinity(server.process.pid) != os.sched_getaffinity(agent)
        assert "delivery agent started" in server.log()


def test_an_agent_that_dies_is_replaced_and_its_message_gets_451(instance: Instance) -> None:
    with instance.start() as server:
        send(server, "before")
        agent = server.agent_pid()
        assert agent is not None
        # Stopped, the agent holds the next message without answering; killed, it never
        # will: that message gets a temporary failure (the client keeps it).
        os.kill(agent, signal.SIGSTOP)
        outcome: list[BaseException | None] = []

        def held() -> None:
            try:
                send(server, "held")
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=held)
        thread.start()
        time.sleep(0.5)  # the session has handed the message over and waits
        assert not outcome
        os.kill(agent, signal.SIGKILL)
        thread.join(WAIT)
        (error,) = outcome
        assert isinstance(error, smtplib.SMTPDataError)
        assert error.smtp_code == 451
        # The next message starts a new agent.
        send(server, "after")
        replacement = server.agent_pid()
        assert replacement is not None and replacement != agent
        assert "before" in subjects(instance) and "after" in subjects(instance)
        assert f"delivery agent (pid {agent}) stopped" in server.log()
        wait_for(lambda: f"(pid {agent}) ended with signal 9" in server.log(), "the exit logged")
        assert "Traceback" not in server.log()


def test_a_reload_replaces_the_agent_and_the_old_one_exits(instance: Instance) -> None:
    with instance.start() as server:
        send(server, "first")
        old = server.agent_pid()
        assert old is not None
        server.reload()
        wait_for(lambda: not alive(old), "the old agent to exit")
        send(server, "second")
        new = server.agent_pid()
        assert new is not None and new != old
        assert subjects(instance) == ["first", "second"]


def test_the_agent_stops_with_the_server(instance: Instance) -> None:
    server = instance.start()
    send(server, "one")
    agent = server.agent_pid()
    assert agent is not None
    assert server.terminate() == 0
    wait_for(lambda: not alive(agent), "the agent to exit")
    assert "Traceback" not in server.log()


def test_without_the_agent_the_server_delivers_itself(instance: Instance) -> None:
    instance.set_config("smtp", "delivery_agent", "false")
    with instance.start() as server:
        send(server, "in-process")
        assert server.agent_pid() is None
        assert subjects(instance) == ["in-process"]
