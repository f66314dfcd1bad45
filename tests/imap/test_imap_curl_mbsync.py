"""Independent real clients against the real server: curl's IMAP and mbsync (isync).

curl speaks IMAP over implicit TLS (and STARTTLS with --ssl-reqd), verifying our
certificate by name through --resolve. mbsync is driven non-interactively by a generated
config: it syncs a local maildir with the server both ways (pull our messages, push a new
local one, propagate a flag change and a deletion). mbsync connects to 127.0.0.1 and
trusts the server because its exact certificate is given as CertificateFile. Both tools
come from scripts/system-deps.sh (curl, isync).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness import Instance, Server
from imap_e2e_support import imaps, login

HOST = "mail.example.test"


def curl(instance: Instance, server: Server, url_path: str, *extra: str, tls: str = "imaps") -> str:
    port = server.port(tls)
    scheme = "imaps" if tls == "imaps" else "imap"
    args = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "20",
        "--cacert",
        str(instance.certificate()),
        "--resolve",
        f"{HOST}:{port}:127.0.0.1",
        "--user",
        f"{instance.user}:{instance.password}",
    ]
    if tls != "imaps":
        args.append("--ssl-reqd")  # STARTTLS on 143, certificate verified
    result = subprocess.run(
        [*args, *extra, f"{scheme}://{HOST}:{port}/{url_path}"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()


def test_curl_lists_appends_fetches_and_searches(
    server: Server, instance: Instance, tmp_path: Path
) -> None:
    listing = curl(instance, server, "")
    assert '"/" INBOX' in listing and '"Sent Items"' in listing
    message = tmp_path / "m.eml"
    message.write_bytes(b"From: curl@example.org\r\nSubject: via curl\r\n\r\nuploaded by curl\r\n")
    curl(instance, server, "INBOX", "--upload-file", str(message))  # APPEND
    fetched = curl(instance, server, "INBOX;UID=1", tls="imap")  # over STARTTLS
    assert "uploaded by curl" in fetched and "Subject: via curl" in fetched
    found = curl(instance, server, "INBOX?SUBJECT%20curl")
    assert found.strip() == "* SEARCH 1"
    examined = curl(instance, server, "INBOX", "--request", "EXAMINE INBOX")
    assert "1 EXISTS" in examined


MBSYNC_CONFIG = """\
IMAPAccount server
Host {host}
Port {port}
User {user}
Pass {password}
SSLType IMAPS
CertificateFile {cert}

IMAPStore remote
Account server

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns INBOX Archive
Create Both
Expunge Both
Sync All
SyncState *
"""


def test_mbsync_syncs_a_mailbox_both_ways(
    server: Server, instance: Instance, tmp_path: Path
) -> None:
    client = login(imaps(server, instance), instance)
    for n in range(3):
        client.append("INBOX", None, None, f"Subject: remote {n}\r\n\r\nbody {n}\r\n".encode())
    client.logout()
    local = tmp_path / "local"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    host, port = server.address("imaps")
    config.write_text(
        MBSYNC_CONFIG.format(
            host=host,
            port=port,
            user=instance.user,
            password=instance.password,
            cert=instance.certificate(),
            local=local,
        )
    )

    def mbsync() -> None:
        result = subprocess.run(
            ["mbsync", "-c", str(config), "-a"],
            capture_output=True,
            timeout=60,
            check=False,
            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()

    mbsync()
    pulled = sorted((local / "INBOX" / "new").iterdir()) + sorted(
        (local / "INBOX" / "cur").iterdir()
    )
    assert len(pulled) == 3
    # Push: a new local message, a flag change and a deletion made locally.
    (local / "INBOX" / "new" / "1700000000.local1.host").write_bytes(
        b"Subject: local new\r\n\r\nwritten locally\r\n"
    )
    first = pulled[0]
    first.rename(first.parent.parent / "cur" / (first.name.split(":2,")[0] + ":2,FS"))
    second = pulled[1]
    second.rename(second.parent.parent / "cur" / (second.name.split(":2,")[0] + ":2,ST"))
    mbsync()
    client = login(imaps(server, instance), instance)
    client.select("INBOX")
    _, data = client.search(None, "SUBJECT", '"local new"')
    assert data[0], "the local message did not reach the server"
    _, data = client.search(None, "FLAGGED")
    assert len(data[0].split()) == 1
    _typ, data = client.search(None, "ALL")
    assert len(data[0].split()) == 3  # 3 pulled + 1 pushed - 1 deleted (expunged)
    client.logout()
