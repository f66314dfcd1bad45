"""Running the real server for integration tests.

An `Instance` is a data folder made by `mailhost init` with every listener on
127.0.0.1 port 0; `Instance.start()` runs `mailhost serve` as a child process, waits
for READY=1 on a notify socket of its own (the sd_notify protocol, as systemd would),
and reads the ports the kernel chose from the status file.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import mailbox
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import typing
from collections.abc import Mapping
from pathlib import Path

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 30.0


def mailhost_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailhost", *args]


def _delivery_order(key: str) -> tuple[int, str]:
    """Our maildir names carry the UID (",U=n"), which counts deliveries; the time at the
    front does not sort as text (its microseconds are not zero-padded)."""
    uid = re.search(r",U=(\d+)", key)
    return (int(uid.group(1)) if uid else 0, key)


class Instance:
    """A configured, initialised server folder (not necessarily running)."""

    def __init__(self, folder: Path, password: str) -> None:
        self.folder = folder
        self.config = folder / "mailhost.toml"
        self.password = password  # of demo@example.test
        self.user = "demo@example.test"

    @classmethod
    def create(cls, folder: Path, *extra: str) -> Instance:
        result = subprocess.run(
            mailhost_argv("init", "--dir", str(folder), "--dev", "--ephemeral-ports", *extra),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        match = re.search(r"password: (\S+)$", result.stdout, re.MULTILINE)
        assert match, result.stdout
        return cls(folder, match.group(1))

    def cli(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            mailhost_argv("-c", str(self.config), *args),
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
            check=False,
        )
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def set_config(self, section: str, key: str, value: str) -> None:
        """Replace `key = ...` inside `[section]` of the config file."""
        lines = self.config.read_text().splitlines()
        current = ""
        for i, line in enumerate(lines):
            if line.startswith("["):
                current = line.strip("[]")
            elif current == section and line.split("=")[0].strip() == key:
                lines[i] = f"{key} = {value}"
                break
        else:
            raise KeyError(f"{section}.{key}")
        self.config.write_text("\n".join(lines) + "\n")

    def mailbox_dir(self, address: str) -> Path:
        """The maildir++ root (the Inbox) of the user owning `address`."""
        shown = json.loads(self.cli("user", "show", address, "--json").stdout)
        return self.folder / "mailboxes" / shown["mailbox"]

    def inbox(self, address: str) -> list[email.message.EmailMessage]:
        """The Inbox read by Python's own maildir reader (not ours), oldest first."""
        folder = mailbox.Maildir(self.mailbox_dir(address), factory=None, create=False)
        messages = []
        for key in sorted(folder.keys(), key=_delivery_order):
            with folder.get_file(key) as f:
                parsed = email.message_from_binary_file(f, policy=email.policy.default)
            messages.append(typing.cast(email.message.EmailMessage, parsed))
        return messages

    def add_user(self, address: str, password: str = "secret-pw") -> str:
        self.cli("user", "add", address, "--password-stdin", input=password + "\n")
        return password

    def certificate(self) -> Path:
        return self.folder / "certs" / "server.crt"

    def client_context(self, *, check_hostname: bool = True) -> ssl.SSLContext:
        """A client context that trusts only this instance's certificate. Clients that
        connect to 127.0.0.1 and cannot be told the server's name (smtplib, imaplib,
        poplib use the address) verify the chain without the name check."""
        ctx = ssl.create_default_context(cafile=str(self.certificate()))
        ctx.check_hostname = check_hostname
        return ctx

    def start(self, env: Mapping[str, str] | None = None) -> Server:
        return Server.start(self, env)


class Server:
    def __init__(self, instance: Instance, process: subprocess.Popen[bytes], notify: socket.socket):
        self.instance = instance
        self.process = process
        self._notify = notify
        self.notifications: list[str] = []
        self.listeners: dict[str, list[tuple[str, int]]] = {}

    @classmethod
    def start(cls, instance: Instance, env: Mapping[str, str] | None = None) -> Server:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"mailhost-test-{secrets.token_hex(8)}"
        notify.bind("\0" + name)
        full_env = {**os.environ, "NOTIFY_SOCKET": "@" + name, **(env or {})}
        log = (instance.folder / "server.log").open("ab")
        process = subprocess.Popen(
            mailhost_argv("-c", str(instance.config), "serve"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
        log.close()
        server = cls(instance, process, notify)
        try:
            server.wait_for("READY=1", READY_TIMEOUT)
        except BaseException:
            server.kill()
            raise
        status = json.loads((instance.folder / "run" / "mailhost.json").read_text())
        for listener, addresses in status["listeners"].items():
            server.listeners[listener] = [
                (a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addresses
            ]
        return server

    def wait_for(self, field: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while field not in self.notifications:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise AssertionError(
                    f"server did not send {field} (exit {self.process.poll()}): {self.log()}"
                )
            self._notify.settimeout(min(remaining, 0.5))
            try:
                data = self._notify.recv(4096)
            except TimeoutError:
                continue
            self.notifications.extend(data.decode().split("\n"))

    def port(self, listener: str) -> int:
        return self.listeners[listener][0][1]

    def address(self, listener: str) -> tuple[str, int]:
        return self.listeners[listener][0]

    def log(self) -> str:
        return (self.instance.folder / "server.log").read_text(errors="replace")

    def agent_pid(self) -> int | None:
        """The server's delivery agent (its child running mailhost.agent), if one runs."""
        pid = self.process.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        for child in children:
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            except OSError:
                continue
            if b"mailhost.agent" in cmdline:
                return int(child)
        return None

    def reload(self) -> None:
        self.notifications.clear()
        self.process.send_signal(signal.SIGHUP)
        self.wait_for("RELOADING=1", READY_TIMEOUT)
        self.wait_for("READY=1", READY_TIMEOUT)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._notify.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
