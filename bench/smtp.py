"""SMTP receive benchmark: durable delivery throughput and latency (make bench-smtp).

Postfix's smtp-source drives the real server (`mailhost serve`, port 25 listener on
127.0.0.1) with 10 KB messages to one local mailbox, 1 and 20 concurrent sessions, on
new connections and on reused ones (-d). Our 250 comes only after the copy is fsynced
in the mailbox, so "accepted" is "delivered". When Postfix can run here (root, its
package installed, not configured for anything else), the same load goes to a
Postfix on loopback delivering to a maildir, timed until the last message is in the
maildir, and the ratio is reported.

    .venv/bin/python -m bench.smtp [--messages N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from harness import Instance

POSTFIX_PORT = 2626
POSTFIX_USER = "mhbench"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


def run_mailhost(cases: list[tuple[int, bool]], messages: int, size: int) -> list[dict[str, float]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        instance = Instance.create(Path(tmp) / "instance")
        instance.set_config("service", "max_connections_per_address", "200")
        with instance.start() as server:
            maildir = instance.mailbox_dir("demo@example.test")
            for sessions, reuse in cases:
                before_files = count_files(maildir)
                cpu_before = cpu_seconds(server.process.pid)
                elapsed = smtp_source(
                    server.port("smtp"), sessions=sessions, messages=messages, size=size,
                    reuse=reuse, to="demo@example.test",
                )  # fmt: skip
                cpu = cpu_seconds(server.process.pid) - cpu_before
                delivered = count_files(maildir) - before_files
                assert delivered == messages, f"{delivered} of {messages} delivered"
                results.append(
                    {
                        "sessions": sessions,
                        "reuse": reuse,
                        "rate": messages / elapsed,
                        "latency_ms": 1000 * elapsed * sessions / messages,
                        "cpu_ms": 1000 * cpu / messages,
                    }
                )
    return results


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


def run_postfix(cases: list[tuple[int, bool]], messages: int, size: int) -> list[dict[str, float]]:
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
        results = []
        for sessions, reuse in cases:
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
            results.append(
                {"sessions": sessions, "reuse": reuse, "rate": messages / elapsed,
                 "latency_ms": 1000 * elapsed * sessions / messages, "cpu_ms": float("nan")}
            )  # fmt: skip
        return results
    finally:
        subprocess.run(["postfix", "stop"], check=False, capture_output=True)
        master.write_text(original_master)
        Path("/etc/postfix/main.cf").unlink(missing_ok=True)
        if created_user:
            subprocess.run(["userdel", "-r", POSTFIX_USER], check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=10240)
    args = parser.parse_args()
    if not shutil.which("smtp-source"):
        raise SystemExit("smtp-source not found: apt-get install postfix (only the tool is used)")
    cases = [(1, False), (20, False), (1, True), (20, True)]
    print(f"SMTP receive: {args.messages} messages of {args.size} bytes per case, fsync on")
    ours = run_mailhost(cases, args.messages, args.size)
    why_not = postfix_available()
    theirs = run_postfix(cases, args.messages, args.size) if why_not is None else None
    print(f"{'sessions':>8} {'connections':>11} {'mailhost msg/s':>15} {'latency ms':>10} "
          f"{'CPU ms/msg':>10} {'postfix msg/s':>14} {'ratio':>6}")  # fmt: skip
    for i, row in enumerate(ours):
        other = theirs[i]["rate"] if theirs else None
        ratio = f"{row['rate'] / other:6.2f}" if other else "     -"
        print(
            f"{row['sessions']:>8} {'reused' if row['reuse'] else 'new':>11} {row['rate']:>15.0f} "
            f"{row['latency_ms']:>10.1f} {row['cpu_ms']:>10.2f} "
            f"{other if other is None else round(other):>14} {ratio}"
        )
    if why_not:
        print(f"Postfix not measured: {why_not}")


if __name__ == "__main__":
    main()
