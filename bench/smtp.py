"""SMTP receive benchmark: durable delivery throughput and latency (make bench-smtp).

Postfix's smtp-source drives the real server (`mailhost serve`, port 25 listener on
127.0.0.1) with 10 KB messages to one local mailbox, 1 and 20 concurrent sessions, on
new connections and on reused ones (-d). Our 250 comes only after the copy is fsynced
in the mailbox, so "accepted" is "delivered". When Postfix can run here (root, its
package installed, not configured for anything else), the same load goes to a
Postfix on loopback delivering to a maildir, timed until the last message is in the
maildir, and the ratio is reported. Both servers run side by side and each case runs
on one, then the other, for several rounds; the medians are reported, so a slow spell
of the machine does not land on one server only.

    .venv/bin/python -m bench.smtp [--messages N] [--size BYTES] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from harness import Instance

POSTFIX_PORT = 2626
POSTFIX_USER = "mhbench"
SETTLE_SECONDS = 1.0


def cpu_seconds(pid: int) -> float:
    """CPU time of the process and of its children that run now (the delivery agent),
    proc(5) utime + stime."""
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for process in (pid, *map(int, children)):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def smtp_source(
    port: int, *, sessions: int, messages: int, size: int, reuse: bool, to: str
) -> float:
    args = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
            "-f", "bench@remote.example", "-t", to, "-M", "bench.remote.example"]  # fmt: skip
    if reuse:
        args.append("-d")
    started = time.perf_counter()
    subprocess.run([*args, f"127.0.0.1:{port}"], check=True, timeout=600, capture_output=True)
    return time.perf_counter() - started


def count_files(folder: Path) -> int:
    return sum(
        1 for sub in ("new", "cur") if (folder / sub).is_dir() for _ in (folder / sub).iterdir()
    )


Case = tuple[int, bool]  # (concurrent sessions, reused connections)
Measure = Callable[[Case], dict[str, float]]


@contextlib.contextmanager
def mailhost(messages: int, size: int) -> Iterator[Measure]:
    """The real server, started once; yields a function that runs one case on it."""
    with tempfile.TemporaryDirectory() as tmp:
        instance = Instance.create(Path(tmp) / "instance")
        instance.set_config("service", "max_connections_per_address", "200")
        with instance.start() as server:
            maildir = instance.mailbox_dir("demo@example.test")
            # The first message starts the delivery agent; it is not part of a case.
            smtp_source(server.port("smtp"), sessions=1, messages=1, size=size, reuse=False,
                        to="demo@example.test")  # fmt: skip

            def measure(case: Case) -> dict[str, float]:
                sessions, reuse = case
                before_files = count_files(maildir)
                cpu_before = cpu_seconds(server.process.pid)
                elapsed = smtp_source(
                    server.port("smtp"), sessions=sessions, messages=messages, size=size,
                    reuse=reuse, to="demo@example.test",
                )  # fmt: skip
                cpu = cpu_seconds(server.process.pid) - cpu_before
                delivered = count_files(maildir) - before_files
                assert delivered == messages, f"{delivered} of {messages} delivered"
                return {
                    "rate": messages / elapsed,
                    "latency_ms": 1000 * elapsed * sessions / messages,
                    "cpu_ms": 1000 * cpu / messages,
                }

            yield measure


def postfix_available() -> str | None:
    """Why Postfix cannot be measured here, or None when it can."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("postfix"):
        return "postfix is not installed (apt-get install postfix)"
    if Path("/etc/postfix/main.cf").exists():
        return "/etc/postfix/main.cf exists: a configured Postfix is not ours to reconfigure"
    if subprocess.run(["pgrep", "-x", "master"], capture_output=True, check=False).returncode == 0:
        return "a Postfix master is already running"
    return None


MAIN_CF = """\
compatibility_level = 3.6
myhostname = bench.localdomain
mydomain = localdomain
mydestination = bench.localdomain
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
home_mailbox = Maildir/
alias_maps =
alias_database =
maillog_file = /var/log/postfix-mailhost-bench.log
default_process_limit = 100
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
"""


@contextlib.contextmanager
def postfix(messages: int, size: int) -> Iterator[Measure]:
    """Postfix on loopback delivering to a maildir, started once; yields a function
    that runs one case on it, timed until the last message is in the maildir."""
    master = Path("/etc/postfix/master.cf")
    original_master = master.read_text()
    created_user = False
    try:
        try:
            pwd.getpwnam(POSTFIX_USER)
        except KeyError:
            subprocess.run(["useradd", "-m", POSTFIX_USER], check=True)
            created_user = True
        home = Path(pwd.getpwnam(POSTFIX_USER).pw_dir)
        Path("/etc/postfix/main.cf").write_text(MAIN_CF)
        lines = [
            line.replace(
                "smtp      inet  n       -       y", f"{POSTFIX_PORT}      inet  n       -       n"
            )
            for line in original_master.splitlines()
        ]
        master.write_text("\n".join(lines) + "\n")
        subprocess.run(["postfix", "check"], check=True, capture_output=True)
        subprocess.run(["postfix", "start"], check=True, capture_output=True)
        time.sleep(1.0)
        maildir = home / "Maildir"

        def measure(case: Case) -> dict[str, float]:
            sessions, reuse = case
            before = count_files(maildir) if maildir.exists() else 0
            started = time.perf_counter()
            smtp_source(POSTFIX_PORT, sessions=sessions, messages=messages, size=size, reuse=reuse,
                        to=f"{POSTFIX_USER}@bench.localdomain")  # fmt: skip
            deadline = time.monotonic() + 300
            while (count_files(maildir) if maildir.exists() else 0) - before < messages:
                if time.monotonic() > deadline:
                    raise RuntimeError("Postfix did not deliver everything in 300 s")
                time.sleep(0.005)
            elapsed = time.perf_counter() - started
            return {"rate": messages / elapsed, "latency_ms": 1000 * elapsed * sessions / messages}

        yield measure
    finally:
        subprocess.run(["postfix", "stop"], check=False, capture_output=True)
        master.write_text(original_master)
        Path("/etc/postfix/main.cf").unlink(missing_ok=True)
        if created_user:
            subprocess.run(["userdel", "-r", POSTFIX_USER], check=False, capture_output=True)


def settle() -> None:
    """Let the previous run's writes reach the disk and its processes go idle, so that
    one server's run does not pay for the other's."""
    os.sync()
    time.sleep(SETTLE_SECONDS)


def median_of(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10240)
    # Five: this machine's speed (and Postfix's with it) moves by a third between
    # minutes; with three rounds one slow spell could still decide a median.
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not shutil.which("smtp-source"):
        raise SystemExit("smtp-source not found: apt-get install postfix (only the tool is used)")
    cases: list[Case] = [(1, False), (20, False), (1, True), (20, True)]
    print(
        f"SMTP receive: {args.messages} messages of {args.size} bytes per case, fsync on; "
        f"median of {args.rounds} rounds, each case run on both servers in turn"
    )
    ours: dict[Case, list[dict[str, float]]] = {case: [] for case in cases}
    theirs: dict[Case, list[dict[str, float]]] = {case: [] for case in cases}
    why_not = postfix_available()
    with contextlib.ExitStack() as stack:
        run_ours = stack.enter_context(mailhost(args.messages, args.size))
        run_theirs = None
        if why_not is None:
            run_theirs = stack.enter_context(postfix(args.messages, args.size))
        for _ in range(args.rounds):
            for case in cases:
                settle()
                ours[case].append(run_ours(case))
                if run_theirs is not None:
                    settle()
                    theirs[case].append(run_theirs(case))
    print(f"{'sessions':>8} {'connections':>11} {'mailhost msg/s':>15} {'latency ms':>10} "
          f"{'CPU ms/msg':>10} {'postfix msg/s':>14} {'ratio':>6}")  # fmt: skip
    for case in cases:
        sessions, reuse = case
        rate = median_of(ours[case], "rate")
        other = median_of(theirs[case], "rate") if theirs[case] else None
        ratio = f"{rate / other:6.2f}" if other else "     -"
        latency, cpu = median_of(ours[case], "latency_ms"), median_of(ours[case], "cpu_ms")
        print(
            f"{sessions:>8} {'reused' if reuse else 'new':>11} {rate:>15.0f} "
            f"{latency:>10.1f} {cpu:>10.2f} "
            f"{other if other is None else round(other):>14} {ratio}"
        )
    if why_not:
        print(f"Postfix not measured: {why_not}")


if __name__ == "__main__":
    main()
