"""ActiveSync benchmarks against a real `mailhost serve` process over TLS.

    .venv/bin/python -m bench.eas [--messages 10000] [--window 100]
                                  [--devices 10000] [--users 100] [--rounds 10]
                                  [--skip-sync] [--skip-push]

1. Initial sync: an Inbox of `--messages` messages (written into the store before the
   server starts) is synced by one device in windows of `--window` (BodyPreference HTML
   truncated at 500 bytes with a 255-character preview, what iOS asks for): wall time,
   requests, and the server process's CPU seconds (utime + stime from /proc/<pid>/stat).
2. Direct Push at scale: `--devices` devices (spread over `--users` users) each provision,
   sync the Inbox once, and then hold a Ping (heartbeat 3540 s) on a TLS connection of
   its own, all at once against the one server process. Clients are a trio program in
   another process speaking HTTP/1.1 with WBXML bodies over trio's SSL streams. Reported:
   the server's RSS before the devices, after their setup (connections closed), and with
   every Ping held (delta / devices = memory per held Ping); then `--rounds` SMTP
   deliveries, each to a different user, while all other Pings stay held: the time from
   the SMTP server's 250 (the delivery acknowledged) to each of that user's Ping responses
   (median and p99 over all of them).

The benchmark raises RLIMIT_NOFILE for itself and the server, and sets the instance's
`service.max_connections_per_address`, `activesync.max_devices_per_user` and
`activesync.max_concurrent_requests` so one address (127.0.0.1) may hold every device.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import queue
import re
import resource
import secrets
import shutil
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import trio

from protocols.activesync.wbxml import E, Element, decode, encode

EAS_PATH = "/Microsoft-Server-ActiveSync"
WBXML = "application/vnd.ms-sync.wbxml"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
HEARTBEAT = 3540
READY_TIMEOUT = 60.0
PASSWORD = "bench-password-1"


# --- the server ---------------------------------------------------------------------------


def raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = max(soft, want)
    if hard != resource.RLIM_INFINITY and target > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
        except (ValueError, OSError):
            target = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(hard, target)))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def set_config(config: Path, section: str, key: str, value: str) -> None:
    lines = config.read_text().splitlines()
    current = ""
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.split("=")[0].strip() == key:
            lines[i] = f"{key} = {value}"
            break
    else:
        text = "\n".join(lines) + "\n"
        if f"[{section}]" in text:
            text = text.replace(f"[{section}]\n", f"[{section}]\n{key} = {value}\n", 1)
        else:
            text += f"\n[{section}]\n{key} = {value}\n"
        config.write_text(text)
        return
    config.write_text("\n".join(lines) + "\n")


class Server:
    """`mailhost serve` as a child process, ready when it says READY=1 (sd_notify)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config = folder / "mailhost.toml"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        name = f"mailhost-bench-{secrets.token_hex(6)}"
        notify.bind("\0" + name)
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name}
        self.log = (folder / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mailhost", "-c", str(self.config), "serve"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        notify.settimeout(READY_TIMEOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("server did not start; see " + str(folder / "server.log"))
            try:
                if b"READY=1" in notify.recv(4096):
                    break
            except TimeoutError:
                continue
        notify.close()
        status = json.loads((folder / "run" / "mailhost.json").read_text())
        self.ports = {
            name: int(addresses[0].rsplit(":", 1)[1])
            for name, addresses in status["listeners"].items()
        }

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (proc(5) 14, 15)

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def make_instance(root: Path, *, devices: int) -> tuple[Path, str]:
    folder = root / "instance"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailhost",
            "init",
            "--dir",
            str(folder),
            "--dev",
            "--ephemeral-ports",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    match = re.search(r"password: (\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    config = folder / "mailhost.toml"
    set_config(config, "service", "log_level", '"warning"')
    set_config(config, "service", "max_connections_per_address", str(devices + 1000))
    set_config(config, "activesync", "max_devices_per_user", str(devices + 10))
    set_config(config, "activesync", "max_concurrent_requests", "1024")
    return folder, match.group(1)


def add_users(folder: Path, count: int) -> list[str]:
    from mailhost.directory import Directory

    directory = Directory(folder / "directory.sqlite3")
    users = []
    for i in range(count):
        address = f"pushuser{i}@example.test"
        directory.add_user(address, PASSWORD)
        users.append(address)
    return users


def mailbox_of(folder: Path, address: str) -> str:
    from mailhost.directory import Directory

    return Directory(folder / "directory.sqlite3").user(address).guid


def sample_message(n: int) -> bytes:
    message = EmailMessage()
    message["From"] = f"Sender {n % 97} <sender{n % 97}@example.org>"
    message["To"] = "demo@example.test"
    message["Subject"] = f"Benchmark message {n}: quarterly figures"
    message["Message-ID"] = f"<bench.{n}@example.org>"
    message["Date"] = "Mon, 01 Jan 2024 10:00:00 +0000"
    text = f"Hello, this is message {n}.\n" + "Some ordinary text in a paragraph. " * 40 + "\n"
    message.set_content(text)
    message.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    return message.as_bytes()


def fill_inbox(folder: Path, mailbox_id: str, count: int) -> None:
    from store import NewMessage, Store

    store = Store(folder / "mailboxes", hostname="bench", fsync=False)
    inbox = store.open_mailbox(mailbox_id).inbox
    batch = 500
    for start in range(0, count, batch):
        inbox.append_many(
            [NewMessage(sample_message(n)) for n in range(start, min(count, start + batch))]
        )
    store.close()


# --- a small EAS client on trio --------------------------------------------------------------


class Connection:
    """HTTP/1.1 keep-alive over one TLS connection; requests one at a time."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> Connection:
        sock = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(
            sock, context, server_hostname="mail.example.test", https_compatible=True
        )
        await stream.do_handshake()
        return cls(stream)

    async def close(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    async def request(self, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        head = f"POST {target} HTTP/1.1\r\nHost: mail.example.test\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        await self.stream.send_all(head.encode("latin-1") + body)
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        end = self.buffer.index(b"\r\n\r\n")
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self.buffer) < length:
            await self._fill()
        payload = bytes(self.buffer[:length])
        del self.buffer[:length]
        return status, payload


class Device:
    def __init__(self, user: str, password: str, device_id: str) -> None:
        self.user = user
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.device_id = device_id
        self.policy_key: str | None = None

    def target(self, command: str) -> str:
        query = {
            "Cmd": command,
            "User": self.user,
            "DeviceId": self.device_id,
            "DeviceType": "iPhone",
        }
        return f"{EAS_PATH}?{urlencode(query)}"

    async def command(self, conn: Connection, command: str, doc: Element) -> Element:
        headers = {
            "Authorization": self.auth,
            "User-Agent": "Apple-iPhone15C2/2101.1",
            "MS-ASProtocolVersion": "16.1",
            "Content-Type": WBXML,
        }
        if self.policy_key:
            headers["X-MS-PolicyKey"] = self.policy_key
        status, body = await conn.request(self.target(command), headers, encode(doc))
        if status != 200 or not body:
            raise RuntimeError(f"{command}: HTTP {status} {body[:100]!r}")
        return decode(body)

    async def provision(self, conn: Connection) -> None:
        info = E(
            "Settings:DeviceInformation",
            E("Settings:Set", E("Settings:Model", "iPhone"), E("Settings:OS", "iOS 17")),
        )
        first = await self.command(
            conn,
            "Provision",
            E(
                "Provision:Provision",
                info,
                E(
                    "Provision:Policies",
                    E("Provision:Policy", E("Provision:PolicyType", POLICY_TYPE)),
                ),
            ),
        )
        temporary = first.text_of("Policies/Policy/PolicyKey") or ""
        self.policy_key = temporary
        second = await self.command(
            conn,
            "Provision",
            E(
                "Provision:Provision",
                E(
                    "Provision:Policies",
                    E(
                        "Provision:Policy",
                        E("Provision:PolicyType", POLICY_TYPE),
                        E("Provision:PolicyKey", temporary),
                        E("Provision:Status", 1),
                    ),
                ),
            ),
        )
        self.policy_key = second.text_of("Policies/Policy/PolicyKey")


def folder_sync_doc() -> Element:
    return E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", "0"))


def inbox_of(doc: Element) -> str:
    for add in doc.findall("Changes/Add"):
        if add.text_of("Type") == "2":
            return add.text_of("ServerId") or ""
    raise RuntimeError("no Inbox in FolderSync")


def sync_doc(inbox: str, key: str, window: int) -> Element:
    return E(
        "AirSync:Sync",
        E(
            "AirSync:Collections",
            E(
                "AirSync:Collection",
                E("AirSync:SyncKey", key),
                E("AirSync:CollectionId", inbox),
                E("AirSync:WindowSize", window),
                E(
                    "AirSync:Options",
                    E("AirSync:FilterType", 0),
                    E(
                        "AirSyncBase:BodyPreference",
                        E("AirSyncBase:Type", 2),
                        E("AirSyncBase:TruncationSize", 500),
                        E("AirSyncBase:Preview", 255),
                    ),
                ),
            ),
        ),
    )


def client_context(folder: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(folder / "certs" / "server.crt"))
    context.check_hostname = False
    return context


# --- 1. initial sync ---------------------------------------------------------------------------


async def initial_sync(
    port: int, context: ssl.SSLContext, user: str, password: str, window: int
) -> tuple[int, int]:
    """(items received, requests) for a full initial sync of the Inbox."""
    device = Device(user, password, "benchsync1")
    conn = await Connection.open(port, context)
    try:
        await device.provision(conn)
        inbox = inbox_of(await device.command(conn, "FolderSync", folder_sync_doc()))
        first = await device.command(conn, "Sync", sync_doc(inbox, "0", window))
        key = first.text_of("Collections/Collection/SyncKey") or ""
        items = 0
        requests = 0
        while True:
            reply = await device.command(conn, "Sync", sync_doc(inbox, key, window))
            requests += 1
            collection = reply.find("Collections/Collection")
            assert collection is not None
            key = collection.text_of("SyncKey") or key
            items += len(collection.findall("Commands/Add"))
            if collection.find("MoreAvailable") is None:
                return items, requests
    finally:
        await conn.close()


# --- 2. the push client (another process) --------------------------------------------------------


def _emit(*fields: object) -> None:
    sys.stdout.write(" ".join(str(f) for f in fields) + "\n")
    sys.stdout.flush()


async def push_client(args: dict[str, Any]) -> None:
    port = int(args["port"])
    context = client_context(Path(args["folder"]))
    users: list[str] = args["users"]
    per_user = int(args["per_user"])
    devices: list[tuple[Device, int]] = []
    inboxes: dict[str, str] = {}
    limiter = trio.CapacityLimiter(int(args.get("concurrency", 64)))
    errors = 0

    async def setup(user: str, index: int) -> None:
        nonlocal errors
        device = Device(user, PASSWORD, f"push{users.index(user)}x{index}")
        async with limiter:
            try:
                conn = await Connection.open(port, context)
                try:
                    await device.provision(conn)
                    if user not in inboxes:
                        inboxes[user] = inbox_of(
                            await device.command(conn, "FolderSync", folder_sync_doc())
                        )
                    await device.command(conn, "Sync", sync_doc(inboxes[user], "0", 10))
                finally:
                    await conn.close()
            except (OSError, RuntimeError, trio.BrokenResourceError, ConnectionError) as exc:
                errors += 1
                _emit("ERROR", "setup", repr(exc)[:200])
                return
        devices.append((device, users.index(user)))

    started = time.monotonic()
    for user in users:  # the first device of each user learns the Inbox id
        await setup(user, 0)
    async with trio.open_nursery() as nursery:
        for user in users:
            for index in range(1, per_user):
                nursery.start_soon(setup, user, index)
    _emit("SETUP", len(devices), errors, f"{time.monotonic() - started:.1f}")
    await trio.to_thread.run_sync(sys.stdin.readline)  # "PING"

    sent = 0

    async def hold(device: Device, user_index: int) -> None:
        nonlocal sent
        async with limiter:
            try:
                conn = await Connection.open(port, context)
            except OSError as exc:
                _emit("ERROR", "connect", repr(exc)[:200])
                sent += 1
                return
        doc = E(
            "Ping:Ping",
            E("Ping:HeartbeatInterval", HEARTBEAT),
            E(
                "Ping:Folders",
                E("Ping:Folder", E("Ping:Id", inboxes[device.user]), E("Ping:Class", "Email")),
            ),
        )
        sent += 1
        try:
            reply = await device.command(conn, "Ping", doc)
            _emit("PONG", user_index, f"{time.monotonic():.6f}", reply.text_of("Status"))
        except (OSError, RuntimeError, trio.BrokenResourceError, ConnectionError) as exc:
            _emit("ERROR", "ping", repr(exc)[:200])
        finally:
            await conn.close()

    async with trio.open_nursery() as nursery:
        for device, user_index in devices:
            nursery.start_soon(hold, device, user_index)
        while sent < len(devices):
            await trio.sleep(0.2)
        _emit("SENT", sent)
        await trio.to_thread.run_sync(sys.stdin.readline)  # "STOP"
        nursery.cancel_scope.cancel()


# --- orchestration -----------------------------------------------------------------------------


@contextmanager
def push_process(args: dict[str, Any]) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.eas", "--push-client", json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write("STOP\n")
                process.stdin.flush()
                process.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()


def _expect(lines: queue.Queue[str], word: str, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line.startswith("ERROR"):
            print("  client:", line)
            continue
        if line.startswith(word):
            return line.split()


def _settle(server: Server, *, quiet: float = 2.0, timeout: float = 300.0) -> None:
    """Wait until the server has used no CPU to speak of for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = server.cpu_seconds()
    calm_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.cpu_seconds()
        if now - last > 0.05:
            calm_since = time.monotonic()
        last = now
        if time.monotonic() - calm_since >= quiet:
            return


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def deliver(port: int, recipient: str, n: int) -> tuple[float, float]:
    """(monotonic time before the SMTP transaction, time of the 250 to DATA)."""
    message = (
        f"From: bench@example.org\r\nTo: {recipient}\r\nSubject: push {n}\r\n"
        f"Message-ID: <push.{n}.{secrets.token_hex(4)}@example.org>\r\n\r\nwake up\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("bench.example.org")
        started = time.monotonic()
        smtp.sendmail("bench@example.org", [recipient], message)
        acknowledged = time.monotonic()
    return started, acknowledged


def run_push(folder: Path, server: Server, users: list[str], per_user: int, rounds: int) -> None:
    devices = len(users) * per_user
    print(f"\n== Direct Push: {devices} devices ({len(users)} users x {per_user}) ==")
    rss_start = server.rss_bytes()
    args = {
        "port": server.ports["https"],
        "folder": str(folder),
        "users": users,
        "per_user": per_user,
    }
    with push_process(args) as (process, lines):
        setup = _expect(lines, "SETUP", 3600)
        print(
            f"  setup: {setup[1]} devices provisioned and synced in {setup[3]} s "
            f"({setup[2]} errors)"
        )
        _settle(server)
        rss_setup = server.rss_bytes()
        cpu_before = server.cpu_seconds()
        assert process.stdin is not None
        process.stdin.write("PING\n")
        process.stdin.flush()
        pinging = time.monotonic()
        sent = _expect(lines, "SENT", 3600)
        _settle(server, quiet=3.0)
        held_seconds = time.monotonic() - pinging
        rss_held = server.rss_bytes()
        held = int(sent[1])
        early = []
        while not lines.empty():
            line = lines.get()
            if line.startswith("PONG"):
                early.append(line)
            elif line.startswith("ERROR"):
                print("  client:", line)
        held -= len(early)
        print(
            f"  {held} Pings held ({len(early)} answered early) after {held_seconds:.1f} s; "
            f"server CPU for them {server.cpu_seconds() - cpu_before:.1f} s"
        )
        print(
            f"  server RSS: {rss_start / 2**20:.0f} MiB at start, {rss_setup / 2**20:.0f} MiB "
            f"after setup, {rss_held / 2**20:.0f} MiB with the Pings held"
        )
        if held:
            print(
                f"  memory per held Ping: {(rss_held - rss_setup) / held / 1024:.1f} KiB "
                f"(from the start: {(rss_held - rss_start) / held / 1024:.1f} KiB)"
            )
        latencies: list[float] = []
        from_start: list[float] = []
        for r in range(min(rounds, len(users) - 1)):
            started, acknowledged = deliver(server.ports["smtp"], users[r], r)
            got = 0
            deadline = time.monotonic() + 60
            while got < per_user and time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    break
                fields = line.split()
                if fields[0] != "PONG" or int(fields[1]) != r:
                    if fields[0] == "ERROR":
                        print("  client:", line)
                    continue
                got += 1
                latencies.append(float(fields[2]) - acknowledged)
                from_start.append(float(fields[2]) - started)
            if got < per_user:
                print(f"  round {r}: only {got} of {per_user} Pings answered")
        if latencies:
            print(
                f"  push latency (SMTP 250 -> Ping response), {len(latencies)} responses in "
                f"{min(rounds, len(users) - 1)} deliveries of {per_user} devices each: "
                f"median {statistics.median(latencies) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
                f"max {max(latencies) * 1000:.0f} ms"
            )
            print(
                f"  from the start of the SMTP transaction: median "
                f"{statistics.median(from_start) * 1000:.0f} ms, p99 "
                f"{percentile(from_start, 0.99) * 1000:.0f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--skip-sync", action="store_true")
    parser.add_argument("--skip-push", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the instance folder")
    parser.add_argument("--push-client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.push_client:
        raise_fd_limit(args_devices(args.push_client) * 2 + 1000)
        trio.run(push_client, json.loads(args.push_client))
        return
    limit = raise_fd_limit(args.devices * 2 + 1000)
    print(f"RLIMIT_NOFILE {limit}")
    root = Path(tempfile.mkdtemp(prefix="bench-eas-"))
    try:
        folder, password = make_instance(root, devices=args.devices)
        demo_mailbox = mailbox_of(folder, "demo@example.test")
        users: list[str] = []
        per_user = 0
        if not args.skip_push:
            per_user = max(1, args.devices // args.users)
            users = add_users(folder, args.users)
        if not args.skip_sync:
            started = time.monotonic()
            fill_inbox(folder, demo_mailbox, args.messages)
            print(
                f"filled the Inbox with {args.messages} messages in "
                f"{time.monotonic() - started:.1f} s"
            )
        server = Server(folder)
        try:
            if not args.skip_sync:
                print(f"\n== Initial sync: {args.messages} messages, windows of {args.window} ==")
                cpu = server.cpu_seconds()
                started = time.monotonic()
                items, requests = trio.run(
                    initial_sync,
                    server.ports["https"],
                    client_context(folder),
                    "demo@example.test",
                    password,
                    args.window,
                )
                wall = time.monotonic() - started
                used = server.cpu_seconds() - cpu
                print(
                    f"  {items} items in {requests} Sync requests: {wall:.1f} s wall, "
                    f"{used:.1f} s server CPU ({items / wall:.0f} items/s, "
                    f"{used / max(1, requests) * 1000:.0f} ms CPU per window)"
                )
            if not args.skip_push:
                run_push(folder, server, users, per_user, args.rounds)
        finally:
            server.stop()
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def args_devices(payload: str) -> int:
    data = json.loads(payload)
    return len(data["users"]) * int(data["per_user"])


if __name__ == "__main__":
    main()
