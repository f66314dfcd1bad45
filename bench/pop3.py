"""POP3 benchmark: STAT + UIDL + RETR of 1,000 messages from a large Inbox (make bench-pop3).

The Inbox (100,000 messages of about 2 KB by default) is built with the store's batch
append; the real server (`mailhost serve`) is then read with Python's poplib. When
Dovecot's POP3 server is installed, a private Dovecot instance (its own config, base
and run folders, a high port on 127.0.0.1) serves the very same maildir and gets the
same session, after one warm-up login so that it has built its index.

    .venv/bin/python -m bench.pop3 [--messages N] [--retr N]
"""

from __future__ import annotations

import argparse
import poplib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))

from harness import Instance

from store import NewMessage, Store

BATCH = 2000


def build_inbox(instance: Instance, count: int) -> Path:
    mailbox_dir = instance.mailbox_dir("demo@example.test")
    store = Store(instance.folder / "mailboxes")
    inbox = store.open_mailbox(mailbox_dir.name).inbox
    body = b"".join(
        b"line %03d of a benchmark message body, some text to read\r\n" % i for i in range(30)
    )
    date = datetime(2026, 1, 1, tzinfo=UTC)
    for start in range(0, count, BATCH):
        inbox.append_many(
            [
                NewMessage(
                    b"From: sender%d@remote.example\r\nTo: demo@example.test\r\n"
                    b"Subject: benchmark message %d\r\nMessage-ID: <%d@bench>\r\n\r\n"
                    % (n, n, n)
                    + body,
                    internal_date=date,
                )
                for n in range(start, min(start + BATCH, count))
            ]
        )
    store.close()
    return mailbox_dir


def session(port: int, user: str, password: str, retr: int) -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.perf_counter()
    pop = poplib.POP3("127.0.0.1", port, timeout=120)
    pop.user(user)
    pop.pass_(password)
    times["login"] = time.perf_counter() - started
    t = time.perf_counter()
    count, _ = pop.stat()
    times["stat"] = time.perf_counter() - t
    t = time.perf_counter()
    uidl = pop.uidl()[1]
    times["uidl"] = time.perf_counter() - t
    assert len(uidl) == count
    t = time.perf_counter()
    for n in range(1, retr + 1):
        pop.retr(n)
    times["retr"] = time.perf_counter() - t
    pop.quit()
    times["total"] = time.perf_counter() - started
    return times


DOVECOT_CONF = """\
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:{maildir}:INDEX={base}/index:CONTROL={base}/control
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_dovecot(maildir: Path, retr: int) -> dict[str, float] | str:
    if not shutil.which("dovecot"):
        return "Dovecot is not installed (apt-get install dovecot-pop3d)"
    import os
    import pwd

    if os.geteuid() != 0:
        return "not root (Dovecot needs to start as root)"
    base = Path(tempfile.mkdtemp(prefix="dovecot-bench-"))
    base.chmod(0o755)  # Dovecot's auth process (user dovecot) reads the passwd file
    port = free_port()
    # Dovecot will not run mail processes as root: hand it the (throw-away) maildir and
    # its own folders as Debian's "mail" user. mailhost, running as root, still reads it.
    mail = pwd.getpwnam("mail")
    subprocess.run(["chown", "-R", f"{mail.pw_uid}:{mail.pw_gid}", str(maildir)], check=True)
    for parent in maildir.parents:
        if parent == Path(tempfile.gettempdir()):
            break
        parent.chmod(parent.stat().st_mode | 0o011)  # traversable by "mail"
    for sub in ("run", "state", "index", "control", "home"):
        (base / sub).mkdir()
        if sub in ("index", "control", "home"):
            os.chown(base / sub, mail.pw_uid, mail.pw_gid)
    (base / "passwd").write_text("bench:{PLAIN}bench-password\n")
    conf = base / "dovecot.conf"
    conf.write_text(
        DOVECOT_CONF.format(base=base, maildir=maildir, uid=mail.pw_uid, gid=mail.pw_gid, port=port)
    )
    subprocess.run(["dovecot", "-c", str(conf)], check=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    return "Dovecot did not start: " + (base / "dovecot.log").read_text()[-500:]
                time.sleep(0.1)
        session(port, "bench", "bench-password", 1)  # warm-up: Dovecot builds its index
        return session(port, "bench", "bench-password", retr)
    except poplib.error_proto as exc:
        return f"Dovecot session failed ({exc}): " + (base / "dovecot.log").read_text()[-3000:]
    finally:
        subprocess.run(["doveadm", "-c", str(conf), "stop"], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--retr", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        instance = Instance.create(Path(tmp) / "instance")
        instance.set_config("auth", "plaintext_on_loopback", "true")
        started = time.perf_counter()
        maildir = build_inbox(instance, args.messages)
        print(
            f"built an Inbox of {args.messages} messages in {time.perf_counter() - started:.1f} s"
        )
        with instance.start() as server:
            session(server.port("pop3"), instance.user, instance.password, 1)  # warm-up
            ours = session(server.port("pop3"), instance.user, instance.password, args.retr)
        theirs = run_dovecot(maildir, args.retr)
    print(f"{'step':>8} {'mailhost ms':>12} {'dovecot ms':>11} {'ratio':>6}")
    for step in ("login", "stat", "uidl", "retr", "total"):
        other = theirs[step] if isinstance(theirs, dict) else None
        ratio = f"{ours[step] / other:6.2f}" if other else "     -"
        shown = f"{1000 * other:>11.1f}" if other is not None else f"{'-':>11}"
        print(f"{step:>8} {1000 * ours[step]:>12.1f} {shown} {ratio}")
    if isinstance(theirs, str):
        print(f"Dovecot not measured: {theirs}")
    print("ratio = mailhost time / Dovecot time (below 1: mailhost is faster; target <= 2)")


if __name__ == "__main__":
    main()
