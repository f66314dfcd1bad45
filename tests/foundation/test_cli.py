"""The `mailhost` command end to end: domains, users, address policies, certificates."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from harness import Instance, mailhost_argv

from mailhost.directory import Directory


def _fails_with(instance: Instance, *args: str, message: str, input: str | None = None) -> None:
    result = instance.cli(*args, input=input, check=False)
    assert result.returncode == 1, (args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mailhost: ")
    assert message in lines[0], lines[0]


def test_init_makes_a_dev_instance_with_a_user_and_prints_the_password(tmp_path: Path) -> None:
    result = subprocess.run(
        mailhost_argv("init", "--dev"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    last = [line for line in result.stdout.splitlines() if "password: " in line]
    assert len(last) == 1 and last[0].startswith("user demo@example.test password: ")
    text = (tmp_path / "var" / "mailhost.toml").read_text()
    for port in (10025, 10465, 10587, 10143, 10993, 10110, 10995, 10443, 10080):
        assert f"port = {port}\n" in text
    assert 'address = "127.0.0.1"' in text
    key = tmp_path / "var" / "certs" / "server.key"
    assert key.stat().st_mode & 0o077 == 0
    again = subprocess.run(
        mailhost_argv("init", "--dev"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 1 and "exists already" in again.stderr
    # The printed password works.
    password = last[0].rsplit(" ", 1)[1]
    directory = Directory(tmp_path / "var" / "directory.sqlite3")
    assert directory.verify_login("demo@example.test", password) is not None
    assert directory.verify_login("demo@example.test", password + "x") is None
    directory.close()


def _init(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mailhost_argv(*args), cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_init_without_dev_and_with_a_config_path(tmp_path: Path) -> None:
    """`init` without --dev (the production form, here into --dir) and `-c FILE init --dev`
    both work; the instance's folder and its directory are for the service only."""
    plain = _init("init", "--dir", str(tmp_path / "prod"), "--hostname", "mx.example.com",
                  "--domain", "example.com", "--user", "you@example.com", cwd=tmp_path)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert "user you@example.com password: " in plain.stdout
    folder = tmp_path / "prod"
    assert folder.stat().st_mode & 0o777 == 0o750
    assert (folder / "directory.sqlite3").stat().st_mode & 0o077 == 0o040  # no "other"
    assert 'hostname = "mx.example.com"' in (folder / "mailhost.toml").read_text()
    given = tmp_path / "elsewhere" / "mine.toml"
    dev = _init("-c", str(given), "init", "--dev", cwd=tmp_path)
    assert dev.returncode == 0, dev.stderr
    assert given.exists() and not (tmp_path / "var").exists()
    assert "user demo@example.test password: " in dev.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_the_cli_run_as_root_acts_as_the_owner_of_the_data_folder(
    request: pytest.FixtureRequest,
) -> None:
    """`sudo mailhost ...` must not leave root-owned files the service cannot open."""
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="mailhost-owner-"))  # pytest's own is root-only
    base.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    instance = Instance.create(base / "instance")
    subprocess.run(["chown", "-R", f"{nobody.pw_uid}:{nobody.pw_gid}", str(instance.folder)],
                   check=True)  # fmt: skip
    instance.cli("user", "add", "new@example.test", input="a long password 123\n")
    instance.cli("user", "set", "new@example.test", "--quota", "1G")
    # What the operator hands over is read with root's rights: a certificate key that
    # only root may read (as under /etc/letsencrypt) imports.
    import trustme

    leaf = trustme.CA().issue_cert("mail.example.test")
    chain, key = base / "chain.pem", base / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    key.chmod(0o600)
    assert "imported" in instance.cli("cert", "import", str(chain), str(key)).stdout
    owners = {p.stat().st_uid for p in instance.folder.rglob("*")}
    assert owners == {nobody.pw_uid}
    # An mbox the data folder's owner cannot read is one clear error, naming the user.
    mbox = base / "root-only.mbox"
    mbox.write_bytes(b"From a@b Thu Nov 26 10:00:00 2026\nSubject: x\n\nbody\n")
    mbox.chmod(0o600)
    result = instance.cli("import", "new@example.test", str(mbox), check=False)
    assert result.returncode == 1 and "not readable by nobody" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_domains_round_trip(instance: Instance) -> None:
    instance.cli("domain", "add", "Contoso.COM")
    instance.cli("domain", "add", "partner.example", "--type", "internal-relay")
    rows = json.loads(instance.cli("domain", "list", "--json").stdout)
    assert {"domain": "contoso.com", "type": "authoritative"} in rows
    assert {"domain": "partner.example", "type": "internal-relay"} in rows
    table = instance.cli("domain", "list").stdout.splitlines()
    assert table[0].split() == ["DOMAIN", "TYPE"]
    _fails_with(instance, "domain", "add", "contoso.com", message="already an accepted domain")
    _fails_with(instance, "domain", "add", "not a domain", message="is not a domain name")
    _fails_with(instance, "domain", "remove", "nowhere.example", message="not an accepted domain")
    _fails_with(instance, "domain", "remove", "example.test", message="still has")
    instance.cli("domain", "remove", "contoso.com")
    assert "contoso.com" not in instance.cli("domain", "list").stdout


def test_users_round_trip(instance: Instance) -> None:
    added = instance.cli(
        "user", "add", "Alice@Example.test", "--name", "Alice Liddell", "--given", "Alice",
        "--surname", "Liddell", "--password-stdin", input="s3cret-pw\n",
    )  # fmt: skip
    assert "added user alice@example.test" in added.stdout
    assert "password:" not in added.stdout
    generated = instance.cli("user", "add", "bob@example.test")
    assert "user bob@example.test password: " in generated.stdout
    users = json.loads(instance.cli("user", "list", "--json").stdout)
    assert [u["address"] for u in users] == [
        "alice@example.test",
        "bob@example.test",
        "demo@example.test",
    ]
    shown = json.loads(instance.cli("user", "show", "alice@example.test", "--json").stdout)
    assert shown["name"] == "Alice Liddell" and shown["alias"] == "alice"
    instance.cli("user", "address", "add", "alice@example.test", "al@example.test")
    shown = json.loads(instance.cli("user", "show", "al@example.test", "--json").stdout)
    assert shown["addresses"] == ["alice@example.test", "al@example.test"]
    instance.cli("user", "passwd", "alice@example.test", "--password-stdin", input="n3w-pw\n")
    instance.cli("user", "set", "alice@example.test", "--quota", "500M")
    shown = json.loads(instance.cli("user", "show", "alice@example.test", "--json").stdout)
    assert shown["quota_bytes"] == 500 * 1024 * 1024
    _fails_with(
        instance,
        "user",
        "add",
        "alice@example.test",
        "--password-stdin",
        input="x\n",
        message="already in use",
    )
    _fails_with(
        instance,
        "user",
        "add",
        "carol@unknown.example",
        "--password-stdin",
        input="x\n",
        message="not an accepted domain",
    )
    _fails_with(
        instance,
        "user",
        "add",
        "carol..x@example.test",
        "--password-stdin",
        input="x\n",
        message="local part",
    )
    _fails_with(
        instance,
        "user",
        "add",
        "no-at-sign",
        "--password-stdin",
        input="x\n",
        message="not an e-mail address",
    )
    _fails_with(
        instance,
        "user",
        "add",
        "carol@example.test",
        "--password-stdin",
        input="\n",
        message="no password",
    )
    _fails_with(instance, "user", "show", "nobody@example.test", message="no user with the address")
    _fails_with(
        instance,
        "user",
        "address",
        "add",
        "bob@example.test",
        "al@example.test",
        message="already in use",
    )
    _fails_with(
        instance, "user", "set", "bob@example.test", "--quota", "lots", message="expected a number"
    )
    instance.cli("user", "remove", "bob@example.test")
    _fails_with(instance, "user", "show", "bob@example.test", message="no user")


def test_address_policy_generates_addresses_and_reports_collisions(instance: Instance) -> None:
    instance.cli("domain", "add", "contoso.com")
    for address, given, surname in (
        ("jsmith@example.test", "John", "Smith"),
        ("john@example.test", "John", "Smith"),
        ("zoe@example.test", "Zoë", "Ångström"),
    ):
        instance.cli(
            "user",
            "add",
            address,
            "--given",
            given,
            "--surname",
            surname,
            "--password-stdin",
            input="pw\n",
        )
    instance.cli(
        "address-policy", "add", "Contoso", "--priority", "1",
        "--template", "SMTP:%g.%s@contoso.com", "--template", "smtp:%1g%s@example.test",
    )  # fmt: skip
    changes = json.loads(instance.cli("address-policy", "apply", "Contoso", "--json").stdout)
    by_user: dict[str, list[dict[str, str]]] = {}
    for change in changes:
        by_user.setdefault(change["user"], []).append(change)
    first = json.loads(instance.cli("user", "show", "jsmith@example.test", "--json").stdout)
    second = json.loads(instance.cli("user", "show", "john@example.test", "--json").stdout)
    # Users are processed in id order: jsmith gets john.smith@, john gets john.smith2@.
    assert first["address"] == "john.smith@contoso.com"
    assert second["address"] == "john.smith2@contoso.com"
    assert any(
        "collision" in c["note"] for c in changes if c["address"] == "john.smith2@contoso.com"
    )
    # jsmith@example.test was already jsmith's: no collision; john gets jsmith2@.
    assert "jsmith2@example.test" in second["addresses"]
    zoe = json.loads(instance.cli("user", "show", "zoe@example.test", "--json").stdout)
    assert zoe["address"] == "zoe.angstrom@contoso.com"
    assert "zangstrom@example.test" in zoe["addresses"]
    # Old primaries are kept as secondary addresses and still resolve.
    assert "zoe@example.test" in zoe["addresses"]
    policies = json.loads(instance.cli("address-policy", "list", "--json").stdout)
    assert policies == [
        {"name": "Contoso", "priority": 1, "applies_to": "all",
         "templates": ["SMTP:%g.%s@contoso.com", "smtp:%1g%s@example.test"]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--template", "SMTP:%g@nowhere.example"], "not an accepted domain"),
        (["--template", "smtp:%g@example.test"], "exactly one must be the primary"),
        (["--template", "SMTP:%q@example.test"], "unknown variable %q"),
        (["--template", "SMTP:%g"], "expected local-part-template@domain"),
    ],
)
def test_address_policy_bad_input(instance: Instance, args: list[str], message: str) -> None:
    _fails_with(instance, "address-policy", "add", "P", "--priority", "5", *args, message=message)


def test_address_policy_applies_when_a_user_is_added(instance: Instance) -> None:
    instance.cli(
        "address-policy",
        "add",
        "Everyone",
        "--priority",
        "1",
        "--template",
        "SMTP:%g.%s@example.test",
    )
    added = instance.cli(
        "user",
        "add",
        "mary@example.test",
        "--given",
        "Mary",
        "--surname",
        "Major",
        "--password-stdin",
        input="pw\n",
    )
    assert "mary.major@example.test" in added.stdout
    _fails_with(
        instance,
        "address-policy",
        "add",
        "Again",
        "--priority",
        "1",
        "--template",
        "SMTP:%m@example.test",
        message="priority 1 is taken",
    )


def test_cert_show_generate_and_import(instance: Instance, tmp_path: Path) -> None:
    import trustme

    shown = json.loads(instance.cli("cert", "show", "--json").stdout)
    assert shown["self_signed"] is True
    assert set(shown["names"]) == {"mail.example.test", "autodiscover.example.test"}
    ca = trustme.CA()
    leaf = ca.issue_cert("mail.contoso.com", "autodiscover.contoso.com")
    chain = tmp_path / "chain.pem"
    key = tmp_path / "key.pem"
    chain.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    imported = instance.cli("cert", "import", str(chain), str(key))
    assert "imported" in imported.stdout
    shown = json.loads(instance.cli("cert", "show", "--json").stdout)
    assert shown["self_signed"] is False and "mail.contoso.com" in shown["names"]
    other = ca.issue_cert("other.example")
    wrong_key = tmp_path / "wrong.pem"
    wrong_key.write_bytes(other.private_key_pem.bytes())
    _fails_with(instance, "cert", "import", str(chain), str(wrong_key), message="does not match")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello\n")
    _fails_with(instance, "cert", "import", str(garbage), str(key), message="no PEM certificate")


def test_config_can_come_from_the_environment(instance: Instance) -> None:
    import os

    result = subprocess.run(
        mailhost_argv("domain", "list"),
        env={**os.environ, "MAILHOST_CONFIG": str(instance.config)},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "example.test" in result.stdout


def test_missing_config_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        mailhost_argv("-c", str(tmp_path / "none.toml"), "user", "list"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"mailhost: config {tmp_path / 'none.toml'}: no such file (run 'mailhost init' first)"
    )


def test_import_stats_and_reindex(instance: Instance, tmp_path: Path) -> None:
    mbox = tmp_path / "old.mbox"
    mbox.write_bytes(
        b"From a@example.org Tue Jul  1 10:52:37 2003\nSubject: one\n\nfirst\n>From the past\n\n"
        b"From b@example.org Wed Jul  2 10:52:37 2003\nSubject: two\n\nsecond\n"
    )
    imported = instance.cli("import", "demo@example.test", str(mbox), "--folder", "Archive")
    assert "imported 2 messages" in imported.stdout
    maildir = tmp_path / "maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
        (maildir / ".Projects" / sub).mkdir(parents=True)
    (maildir / "cur" / "1.a.host:2,S").write_bytes(b"Subject: read\r\n\r\nbody\r\n")
    (maildir / ".Projects" / "new" / "2.b.host").write_bytes(b"Subject: project\r\n\r\nbody\r\n")
    assert "imported 2 messages" in instance.cli("import", "demo@example.test", str(maildir)).stdout
    not_mbox = tmp_path / "hostname"
    not_mbox.write_text("mail.example.test\n")
    _fails_with(instance, "import", "demo@example.test", str(not_mbox), message="no messages found")
    stats = json.loads(instance.cli("mailbox", "stats", "demo@example.test", "--json").stdout)
    counts = {f["folder"]: (f["messages"], f["unseen"]) for f in stats["folders"]}
    assert counts["Archive"] == (2, 2)
    assert counts["Inbox"] == (1, 0)  # imported as seen (S in the info suffix)
    assert counts["Projects"] == (1, 1)
    table = instance.cli("mailbox", "stats", "demo@example.test").stdout
    assert table.splitlines()[0].split() == ["FOLDER", "ROLE", "MESSAGES", "UNSEEN", "BYTES"]
    # The index is a cache: delete it and reindex; the same messages come back.
    for index in instance.mailbox_dir("demo@example.test").rglob("mailhost.index"):
        index.unlink()
    assert "4 messages" in instance.cli("mailbox", "reindex", "demo@example.test").stdout
    again = json.loads(instance.cli("mailbox", "stats", "demo@example.test", "--json").stdout)
    assert {f["folder"]: f["messages"] for f in again["folders"]} == {
        f["folder"]: f["messages"] for f in stats["folders"]
    }
    _fails_with(
        instance, "import", "demo@example.test", str(tmp_path / "missing"), message="no such file"
    )
    _fails_with(instance, "mailbox", "stats", "nobody@example.test", message="no user")
