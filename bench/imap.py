"""IMAP benchmark: the real server (a subprocess) against 10,000- and 100,000-message
folders, measured with Python's imaplib, side by side with Dovecot when it is installed.

    python -m bench.imap [--sizes 10000,100000] [--idle 1000] [--root DIR] [--no-dovecot]

Rows (each the median of --repeat runs, the first "cold" run reported separately where
caches matter): LOGIN+SELECT, ``UID FETCH 1:* (FLAGS)``, ``FETCH 1:* (ENVELOPE)``,
``UID SEARCH FROM``, fetching 1,000 full messages (``UID FETCH 1:1000 (BODY.PEEK[])``), and
memory per idle connection with --idle sessions in IDLE (server RSS before and after; for
Dovecot the unshared memory of all its processes, since it runs a process per session).

The folders are built with the store's ``append_many`` (not SMTP) in the mailbox of a
fresh ``mailhost init --dir`` instance; Dovecot reads a hard-linked copy of the same
maildir++ tree (building its own index there) and runs unprivileged on a loopback port.
Both servers are reached over plaintext on 127.0.0.1 so TLS cost does not blur the figures.
"""

from __future__ import annotations

import argparse
import imaplib
import pwd
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from harness import Instance, Server

from store import FolderNotFound, NewMessage, Store

BATCH = 1000
FULL_FETCH = 1000


def sample_message(n: int) -> bytes:
    head = (
        f"From: Sender {n % 500} <sender{n % 500}@example.org>\r\n"
        f"To: Alice <alice@example.com>\r\n"
        f"Cc: Team {n % 7} <team{n % 7}@example.net>\r\n"
        f"Subject: benchmark message {n}\r\n"
        f"Message-ID: <bench-{n}@example.org>\r\n"
        "Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog. 0123456789\r\n"
    return head + line * 30


@dataclass
class Results:
    rows: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, server: str, name: str, value: float) -> None:
        self.rows.setdefault(name, {})[server] = value


def median_ms(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(first run, median of the rest) in milliseconds."""
    times = []
    for _ in range(repeat + 1):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times[0], statistics.median(times[1:])


def build_folders(store_root: Path, mailbox_id: str, sizes: list[int]) -> None:
    store = Store(store_root, fsync=False)
    mailbox = store.open_mailbox(mailbox_id)
    for size in sizes:
        name = f"bench{size}"
        try:
            folder = mailbox.folder(name)
        except FolderNotFound:
            mailbox.create_folder(name)
            folder = mailbox.folder(name)
        have = len(folder.snapshot())
        for start in range(have, size, BATCH):
            batch = [NewMessage(sample_message(n)) for n in range(start, min(size, start + BATCH))]
            folder.append_many(batch)
        print(f"  folder {name}: {len(folder.snapshot())} messages", flush=True)
    store.close()


def _check(condition: bool, what: object) -> None:
    if not condition:
        raise RuntimeError(f"unexpected answer: {what!r}"[:300])


def _measure_login(
    label: str, host: str, port: int, user: str, password: str, folder: str, repeat: int
) -> tuple[float, float]:
    def login_select() -> None:
        c = imaplib.IMAP4(host, port)
        c.login(user, password)
        typ, _ = c.select(folder)
        _check(typ == "OK", typ)
        c.logout()

    return median_ms(login_select, repeat)


def _measure_commands(
    label: str, c: imaplib.IMAP4, size: int, repeat: int, results: Results
) -> None:
    def uid_fetch_flags() -> None:
        typ, data = c.uid("FETCH", "1:*", "(FLAGS)")
        _check(typ == "OK", typ)
        _check(len(data) == size, len(data))

    def fetch_envelope() -> None:
        typ, data = c.fetch("1:*", "(ENVELOPE)")
        _check(typ == "OK", typ)
        _check(len(data) >= size, len(data))

    def search_from() -> None:
        typ, data = c.uid("SEARCH", "FROM", "sender42@")
        _check(typ == "OK", typ)
        _check(len(data[0].split()) == size // 500, data[0][:80])

    def full_messages() -> None:
        typ, data = c.uid("FETCH", f"1:{FULL_FETCH}", "(BODY.PEEK[])")
        _check(typ == "OK", typ)
        _check(sum(isinstance(x, tuple) for x in data) == FULL_FETCH, len(data))

    for name, fn in (
        ("UID FETCH 1:* (FLAGS)", uid_fetch_flags),
        ("FETCH 1:* (ENVELOPE)", fetch_envelope),
        ("UID SEARCH FROM", search_from),
        (f"UID FETCH 1:{FULL_FETCH} (BODY.PEEK[])", full_messages),
    ):
        cold, warm = median_ms(fn, repeat)
        results.add(label, f"{size}: {name} (first)", cold)
        results.add(label, f"{size}: {name}", warm)
        print(f"  {label} {size} {name}: first {cold:.0f} ms, then {warm:.0f} ms", flush=True)


def measure_timings(
    label: str,
    host: str,
    port: int,
    user: str,
    password: str,
    sizes: list[int],
    repeat: int,
    results: Results,
) -> None:
    for size in sizes:
        folder = f"bench{size}"
        cold, warm = _measure_login(label, host, port, user, password, folder, repeat)
        results.add(label, f"{size}: LOGIN+SELECT (first)", cold)
        results.add(label, f"{size}: LOGIN+SELECT", warm)
        print(f"  {label} {size} LOGIN+SELECT: first {cold:.0f} ms, then {warm:.0f} ms")
        c = imaplib.IMAP4(host, port)
        c.login(user, password)
        c.select(folder)
        _measure_commands(label, c, size, repeat, results)
        c.logout()


def _private_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    return total


def _children(root: int) -> list[int]:
    out = [root]
    result = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True)
    for pid in result.stdout.split():
        out += _children(int(pid))
    return out


def _idle_session(host: str, port: int, user: str, password: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(f"a LOGIN {user} {password}\r\nb SELECT INBOX\r\nc IDLE\r\n".encode())
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("server closed an idle session")
        if line.startswith(b"+"):
            break
        if line.startswith((b"a NO", b"a BAD", b"b NO", b"b BAD")):
            raise RuntimeError(line.decode())
    f.close()
    return sock


def measure_idle(
    label: str,
    host: str,
    port: int,
    user: str,
    password: str,
    count: int,
    pids: Callable[[], list[int]],
    results: Results,
) -> None:
    warm = [_idle_session(host, port, user, password) for _ in range(20)]
    time.sleep(1)
    before = _private_kib(pids())
    sockets = [_idle_session(host, port, user, password) for _ in range(count)]
    time.sleep(2)
    after = _private_kib(pids())
    per = (after - before) / count
    results.add(label, f"memory per idle IMAP session (KiB, {count} in IDLE)", per)
    print(
        f"  {label}: {count} idle sessions: {before} -> {after} KiB, {per:.1f} KiB each", flush=True
    )
    for s in sockets + warm:
        s.close()


# --- Dovecot ---------------------------------------------------------------------------

DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:{maildir}:INDEX={base}/index
mail_uid = {uid}
mail_gid = {gid}
default_login_user = {login_user}
default_internal_user = {login_user}
default_internal_group = {login_group}
default_process_limit = 5000
default_client_limit = 20000
passdb {{
  driver = static
  args = password={password}
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = 5000
}}
service imap {{
  process_limit = 5000
}}
protocol imap {{
  mail_max_userip_connections = 5000
}}
service anvil {{
  client_limit = 20000
}}
"""


class Dovecot:
    def __init__(self, maildir: Path, password: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="dovecot-bench-"))
        self.maildir = self.base / "maildir"
        subprocess.run(["cp", "-al", str(maildir), str(self.maildir)], check=True)
        for junk in self.maildir.rglob("mailhost.*"):
            junk.unlink()
        user = pwd.getpwnam("mail")
        self.port = _free_port()
        for sub in ("run", "state", "index", "home"):
            (self.base / sub).mkdir()
        subprocess.run(["chown", "-R", f"{user.pw_uid}:{user.pw_gid}", str(self.base)], check=True)
        self.conf = self.base / "dovecot.conf"
        self.conf.write_text(
            DOVECOT_CONF.format(
                base=self.base,
                maildir=self.maildir,
                uid=user.pw_uid,
                gid=user.pw_gid,
                login_user="dovenull",
                login_group="dovenull",
                password=password,
                port=self.port,
            )
        )
        subprocess.run(["dovecot", "-c", str(self.conf)], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        pid_file = self.base / "run" / "master.pid"
        while not pid_file.exists() and time.monotonic() < deadline + 10:
            time.sleep(0.1)
        self.master = int(pid_file.read_text().split()[0])

    def pids(self) -> list[int]:
        return _children(self.master)

    def stop(self) -> None:
        subprocess.run(["dovecot", "-c", str(self.conf), "stop"], check=False)
        time.sleep(1)
        shutil.rmtree(self.base, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(results: Results) -> None:
    print()
    names = sorted({server for row in results.rows.values() for server in row})
    header = f"{'measure':58}" + "".join(f"{n:>12}" for n in names)
    if len(names) == 2:
        header += f"{'ratio':>10}"
    print(header)
    for name, row in results.rows.items():
        line = f"{name:58}" + "".join(
            f"{row[n]:>12.1f}" if n in row else f"{'-':>12}" for n in names
        )
        if len(names) == 2 and all(n in row for n in names) and row[names[0]]:
            line += f"{row['mailhost'] / row['dovecot']:>10.2f}"
        print(line)
    print("(times in ms; ratio = mailhost / dovecot)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--root", type=Path, default=None, help="keep the instance here")
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--no-timings", action="store_true", help="only idle memory")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    root = args.root or Path(tempfile.mkdtemp(prefix="imap-bench-"))
    folder = root / "instance"
    if (folder / "mailhost.toml").exists():
        password = (root / "password").read_text().strip()
        instance = Instance(folder, password)
    else:
        instance = Instance.create(folder)
        (root / "password").write_text(instance.password)
        instance.set_config("auth", "plaintext_on_loopback", "true")
    instance.set_config("service", "max_connections_per_address", str(args.idle + 100))
    mailbox_dir = instance.mailbox_dir(instance.user)
    print(f"building folders in {mailbox_dir}", flush=True)
    build_folders(mailbox_dir.parent, mailbox_dir.name, sizes)
    results = Results()
    server: Server = instance.start()
    try:
        host, port = server.address("imap")
        if not args.no_timings:
            measure_timings(
                "mailhost",
                host,
                port,
                instance.user,
                instance.password,
                sizes,
                args.repeat,
                results,
            )
    finally:
        server.terminate()
    # Idle memory on a fresh process: freed FETCH buffers would otherwise be reused.
    server = instance.start()
    try:
        host, port = server.address("imap")
        if args.idle:
            measure_idle(
                "mailhost",
                host,
                port,
                instance.user,
                instance.password,
                args.idle,
                lambda: [server.process.pid],
                results,
            )
    finally:
        server.terminate()
    if not args.no_dovecot and shutil.which("dovecot"):
        dovecot = Dovecot(mailbox_dir, instance.password)
        try:
            if not args.no_timings:
                measure_timings(
                    "dovecot",
                    "127.0.0.1",
                    dovecot.port,
                    instance.user,
                    instance.password,
                    sizes,
                    args.repeat,
                    results,
                )
            if args.idle:
                measure_idle(
                    "dovecot",
                    "127.0.0.1",
                    dovecot.port,
                    instance.user,
                    instance.password,
                    args.idle,
                    dovecot.pids,
                    results,
                )
        finally:
            dovecot.stop()
    report(results)
    if args.root is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
