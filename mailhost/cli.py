"""The `mailhost` command: what an Exchange administrator does in EMC and the Shell.

Every error is one line on stderr and a non-zero exit; list commands print aligned
tables or, with --json, JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import getpass
import json
import os
import socket
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

from certs import files as certfiles
from certs.tls import CertificateError
from mailhost import config as configuration
from mailhost import outbound, passwords
from mailhost.addresses import AddressError
from mailhost.devices import SqliteDeviceRegistry
from mailhost.directory import Directory, DirectoryError, DomainType, User
from mailhost.eas_policies import AdministrationError, EasAdministration, PolicyRow
from protocols.activesync.access import Characteristic
from protocols.activesync.devices import Device, DeviceAccess, DeviceRegistryError, WipeState
from protocols.activesync.policy import (
    ENUM_WORDS,
    Policy,
    PolicyValueError,
    enum_word,
    parse_setting,
    setting_kind,
)
from protocols.activesync.request import ProtocolVersion, normalize_device_id
from protocols.activesync.syncstate import SyncStateStore
from store import admin
from store.errors import StoreError
from store.store import Store
from transport import dkim
from transport.autoreply import OofReply, OofState, oof_time
from transport.envelope import QueueEntry
from transport.queue import EntryNotFound, Queue, QueueError
from transport.routing import ConnectorError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3  # LSB init-script status code for "program is not running"


class CliError(Exception):
    """Shown as one line: `mailhost: <message>`."""


# --- helpers -----------------------------------------------------------------------------


# umask of every mailhost process: files 0640, folders 0750.
FILE_CREATION_MASK = 0o027


def _config_path(args: argparse.Namespace) -> Path:
    if getattr(args, "config", None):
        return Path(args.config)
    if getattr(args, "dev", False):
        return configuration.DEV_DIR / "mailhost.toml"
    if env := os.environ.get("MAILHOST_CONFIG"):
        return Path(env)
    return configuration.PRODUCTION_CONFIG


def _load(args: argparse.Namespace) -> configuration.Config:
    cfg = configuration.load(_config_path(args))
    _act_as_data_owner(cfg.data_dir)
    return cfg


def _act_as_data_owner(data_dir: Path) -> None:
    """Run as root (`sudo mailhost user add ...`), act as the user that owns the data
    folder (the service's user): else a mailbox, a queue file or a device record this
    command creates would belong to root, and the service could not open it."""
    if os.geteuid() != 0:
        return
    try:
        owner = data_dir.stat()
    except OSError:
        return  # nothing there yet: whatever reads it reports that
    if owner.st_uid == 0:
        return
    import pwd

    try:
        name = pwd.getpwuid(owner.st_uid).pw_name
        os.initgroups(name, owner.st_gid)
    except (KeyError, OSError):
        os.setgroups([])
    os.setgid(owner.st_gid)
    os.setuid(owner.st_uid)


def _directory(args: argparse.Namespace) -> Directory:
    cfg = _load(args)
    if not cfg.directory_path.exists():
        raise CliError(f"no directory at {cfg.directory_path} (run 'mailhost init' first)")
    return Directory(cfg.directory_path)


def _print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(list(rows), indent=2, default=str))
        return
    if not rows:
        print("(none)")
        return
    cells = [[str(row[c]) if row[c] is not None else "-" for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _read_password(args: argparse.Namespace, *, generate: bool) -> tuple[str, bool]:
    """The password from stdin (--password-stdin), a prompt, or a generated one."""
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            raise CliError("no password on standard input")
        return password, False
    if generate or not sys.stdin.isatty():
        return passwords.generate_password(), True
    first = getpass.getpass("New password: ")
    if first != getpass.getpass("Again: "):
        raise CliError("the passwords differ")
    return first, False


def _store(args: argparse.Namespace) -> Store:
    return Store(_load(args).mailboxes_dir)


def _user_row(directory: Directory, user: User, store: Store | None = None) -> dict[str, Any]:
    quota = store.open_mailbox(user.guid).quota() if store is not None else None
    return {
        "address": user.primary_address,
        "alias": user.alias,
        "name": user.display_name,
        "given_name": user.given_name,
        "surname": user.surname,
        "addresses": directory.addresses_of(user.id),
        "address_policy": user.address_policy,
        "quota_bytes": None if quota is None else quota.limit,
        "used_bytes": None if quota is None else quota.usage,
        "mailbox": user.guid,
    }


# --- init / serve / status ----------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    # -c and --dev are global options that argparse leaves unset when absent.
    dev = bool(getattr(args, "dev", False))
    config_arg = getattr(args, "config", None)
    if args.dir:
        folder = Path(args.dir)
        config_path = folder / "mailhost.toml"
        data_text = '"."'
    elif config_arg and dev:
        config_path = Path(config_arg)  # a development instance beside the given file
        folder = config_path.parent
        data_text = '"."'
    elif dev:
        folder = configuration.DEV_DIR
        config_path = folder / "mailhost.toml"
        data_text = '"."'
    else:
        config_path = Path(config_arg) if config_arg else configuration.PRODUCTION_CONFIG
        folder = configuration.PRODUCTION_DATA_DIR
        data_text = json.dumps(str(folder))
    if config_path.exists():
        raise CliError(f"{config_path} exists already; this instance is initialised")
    hostname = args.hostname or ("mail.example.test" if dev else socket.getfqdn())
    domain = args.domain or ("example.test" if dev else None)
    user = args.user or (f"demo@{domain}" if dev and domain else None)
    cfg = configuration.Config(hostname=hostname, data_dir=folder)
    if user:
        # The first user answers for postmaster (RFC 5321 4.5.1) until the operator says
        # otherwise, and gets the double bounces.
        cfg = dataclasses.replace(cfg, queue=dataclasses.replace(cfg.queue, postmaster=user))
    if args.ephemeral_ports:
        cfg = configuration.with_listeners(
            cfg, address=args.listen or "127.0.0.1", port_offset=None
        )
    elif dev:
        cfg = configuration.with_listeners(
            cfg, address=args.listen or "127.0.0.1", port_offset=configuration.DEV_PORT_OFFSET
        )
    elif args.listen:
        cfg = configuration.with_listeners(cfg, address=args.listen, port_offset=0)
    text = configuration.render(cfg, data_dir_text=data_text)
    cfg = configuration.parse(tomllib.loads(text), source=config_path)  # what serve will read
    # The data folder first, so that a development instance's folder (which holds the
    # config too) gets its mode: password hashes and mail are for the service only.
    cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    directory = Directory(cfg.directory_path)
    try:
        if domain:
            directory.add_domain(domain)
        names = certfiles.names_for(hostname, [d.name for d in directory.domains()])
        certfiles.generate_self_signed(cfg.certificate_path, cfg.private_key_path, names)
        print(f"certificate: self-signed for {', '.join(names)}")
        password = None
        if user:
            password = args.password or passwords.generate_password()
            created = directory.add_user(user, password, display_name="Demo User" if dev else "")
            user = created.primary_address
    finally:
        directory.close()
    config_path.write_text(text)
    print(f"config: {config_path}")
    print(f"data folder: {cfg.data_dir}")
    if domain:
        print(f"accepted domain: {domain}")
    if user and password:
        print(f"user {user} password: {password}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from mailhost.service import serve

    return serve(_config_path(args))


def cmd_status(args: argparse.Namespace) -> int:
    cfg = _load(args)
    try:
        status = json.loads(cfg.status_path.read_text())
        pid = int(status["pid"])
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError):
        if args.json:
            print(json.dumps({"running": False}))
        else:
            print("not running")
        return EXIT_NOT_RUNNING
    rows = []
    for name, addresses in status["listeners"].items():
        for address in addresses:
            host, port = address.rsplit(":", 1)
            rows.append({"listener": name, "address": address, "up": _probe(host, int(port))})
    if args.json:
        print(json.dumps({"running": True, **status, "probes": rows}, indent=2))
        return EXIT_OK
    print(f"running: pid {pid}, {status['hostname']}, since {status['started']}")
    _print_table(rows, ["listener", "address", "up"], False)
    return EXIT_OK


def _probe(host: str, port: int) -> str:
    target = "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host  # noqa: S104
    try:
        with socket.create_connection((target, port), timeout=2):
            return "yes"
    except OSError as exc:
        return f"no ({exc.strerror or exc})"


# --- domains ------------------------------------------------------------------------------


def cmd_domain_add(args: argparse.Namespace) -> int:
    directory = _directory(args)
    domain = directory.add_domain(args.name, DomainType(args.type))
    print(f"added accepted domain {domain.name} ({domain.type.value})")
    return EXIT_OK


def cmd_domain_list(args: argparse.Namespace) -> int:
    rows = [{"domain": d.name, "type": d.type.value} for d in _directory(args).domains()]
    _print_table(rows, ["domain", "type"], args.json)
    return EXIT_OK


def cmd_domain_remove(args: argparse.Namespace) -> int:
    _directory(args).remove_domain(args.name)
    print(f"removed accepted domain {args.name.lower()}")
    return EXIT_OK


# --- users --------------------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> int:
    directory = _directory(args)
    password, generated = _read_password(args, generate=True)
    user = directory.add_user(
        args.address,
        password,
        display_name=args.name or "",
        given_name=args.given or "",
        surname=args.surname or "",
        alias=args.alias,
        address_policy=not args.no_address_policy,
    )
    print(f"added user {user.primary_address} (alias {user.alias})")
    others = [a for a in directory.addresses_of(user.id) if a != user.primary_address]
    if others:
        print(f"other addresses: {', '.join(others)}")
    if generated:
        print(f"user {user.primary_address} password: {password}")
    return EXIT_OK


def cmd_user_list(args: argparse.Namespace) -> int:
    directory = _directory(args)
    rows = [_user_row(directory, u) for u in directory.users()]
    if not args.json:
        for row in rows:
            row["addresses"] = len(row["addresses"])
    _print_table(rows, ["address", "alias", "name", "addresses"], args.json)
    return EXIT_OK


def cmd_user_show(args: argparse.Namespace) -> int:
    directory = _directory(args)
    user = directory.user(args.address)
    row = _user_row(directory, user, _store(args))
    eas = _eas(args)
    row["eas_policy"] = eas.assignment(user.guid) or eas.policy_for_owner(user.guid).name
    if args.json:
        print(json.dumps(row, indent=2))
        return EXIT_OK
    width = max(len(k) for k in row)
    for key, value in row.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        print(f"{key.replace('_', ' ').ljust(width)}  {'-' if shown is None else shown}")
    return EXIT_OK


def cmd_user_passwd(args: argparse.Namespace) -> int:
    directory = _directory(args)
    user = directory.user(args.address)
    password, generated = _read_password(args, generate=False)
    directory.set_password(user.primary_address, password)
    print(f"password changed for {user.primary_address}")
    if generated:
        print(f"user {user.primary_address} password: {password}")
    return EXIT_OK


def cmd_user_remove(args: argparse.Namespace) -> int:
    user = _directory(args).remove_user(args.address)
    print(f"removed user {user.primary_address} (mailbox folder {user.guid} is kept)")
    return EXIT_OK


def cmd_user_set(args: argparse.Namespace) -> int:
    directory = _directory(args)
    if args.quota is None and args.eas_policy is None:
        raise CliError("nothing to set (try --quota or --eas-policy)")
    user = directory.user(args.address)
    if args.eas_policy is not None:
        wanted = args.eas_policy.strip()
        name = None if wanted.lower() in ("", "default") else wanted
        applied = _eas(args).assign(user.guid, name)
        print(f"mobile device mailbox policy of {user.primary_address}: {applied}")
    if args.quota is not None:
        quota = _parse_size(args.quota)
        _store(args).open_mailbox(user.guid).set_quota(quota)
        shown = "unlimited" if quota is None else f"{quota} bytes"
        print(f"quota of {user.primary_address}: {shown}")
    return EXIT_OK


def _parse_size(text: str) -> int | None:
    value = text.strip().lower()
    if value in ("unlimited", "none", "0"):
        return None
    units = {"k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
    scale = 1
    if value and value[-1] in units:
        scale = units[value[-1]]
        value = value[:-1]
    elif value.endswith(("kb", "mb", "gb", "tb")):
        scale = units[value[-2]]
        value = value[:-2]
    try:
        number = float(value)
    except ValueError:
        raise CliError(f"size {text!r}: expected a number with an optional K, M, G or T") from None
    if number < 0:
        raise CliError(f"size {text!r}: must not be negative")
    return int(number * scale)


def cmd_user_address_add(args: argparse.Namespace) -> int:
    _directory(args).add_address(args.user, args.address)
    print(f"added {args.address.lower()} to {args.user.lower()}")
    return EXIT_OK


def cmd_user_address_remove(args: argparse.Namespace) -> int:
    _directory(args).remove_address(args.user, args.address)
    print(f"removed {args.address.lower()} from {args.user.lower()}")
    return EXIT_OK


# --- mailboxes ----------------------------------------------------------------------------


def _mailbox_of(args: argparse.Namespace) -> tuple[User, Store]:
    user = _directory(args).user(args.user)
    return user, _store(args)


def _stats_rows(stats: admin.MailboxStats) -> list[dict[str, Any]]:
    return [
        {
            "folder": f.name,
            "role": f.role.value if f.role else f.kind.value,
            "messages": f.messages,
            "unseen": f.unseen,
            "bytes": f.size,
        }
        for f in stats.folders
    ]


def cmd_mailbox_stats(args: argparse.Namespace) -> int:
    user, store = _mailbox_of(args)
    stats = admin.mailbox_stats(store, user.guid)
    rows = _stats_rows(stats)
    if args.json:
        quota = {"usage": stats.quota.usage, "limit": stats.quota.limit}
        print(json.dumps({"user": user.primary_address, "folders": rows, "quota": quota}, indent=2))
        return EXIT_OK
    _print_table(rows, ["folder", "role", "messages", "unseen", "bytes"], False)
    limit = "unlimited" if stats.quota.limit is None else f"{stats.quota.limit} bytes"
    print(f"total: {stats.messages} messages, {stats.size} bytes; quota {limit}")
    return EXIT_OK


def cmd_mailbox_reindex(args: argparse.Namespace) -> int:
    user, store = _mailbox_of(args)
    stats = admin.reindex_mailbox(store, user.guid)
    print(
        f"reindexed {user.primary_address}: {len(stats.folders)} folders, {stats.messages} messages"
    )
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    user, store = _mailbox_of(args)
    source = Path(args.path)
    if not source.exists():
        raise CliError(f"{source}: no such file or folder")
    bar = _ProgressBar(sys.stderr)
    try:
        if source.is_dir():
            report = admin.import_maildir(store, user.guid, source, progress=bar.update)
        else:
            report = admin.import_mbox(
                store, user.guid, source, folder=args.folder, progress=bar.update
            )
    except PermissionError as exc:
        if exc.filename is None or Path(exc.filename).is_relative_to(store.root):
            raise
        import pwd

        try:
            who = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            who = f"uid {os.geteuid()}"
        raise CliError(
            f"{exc.filename}: not readable by {who}, who owns the data folder and runs "
            "this command; make what you import readable by that user"
        ) from None
    bar.done()
    if not report.imported and not report.skipped and source.is_file() and source.stat().st_size:
        # A file with content but no "From " line is not an mbox (a wrong path, say).
        raise CliError(f"{source}: no messages found (not an mbox file?)")
    skipped = f", skipped {report.skipped}" if report.skipped else ""
    print(
        f"imported {report.imported} messages into {', '.join(report.folders) or 'Inbox'} "
        f"of {user.primary_address}{skipped}"
    )
    return EXIT_OK


class _ProgressBar:
    """One self-rewriting line on a terminal; nothing when stderr is not one."""

    WIDTH = 30

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._shown = False

    def update(self, progress: admin.ImportProgress) -> None:
        if not self._tty:
            return
        if progress.total_bytes:
            done = min(progress.bytes_read / progress.total_bytes, 1.0)
            filled = int(done * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            text = f"[{bar}] {done:4.0%} {progress.imported} messages"
        else:
            text = f"{progress.folder}: {progress.imported} messages"
        self._stream.write("\r" + text[:79].ljust(79))
        self._stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._shown:
            self._stream.write("\n")


# --- send connectors ------------------------------------------------------------------------


def _connector_settings(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    settings = dict(base)
    if args.address_space:
        settings["address_spaces"] = list(args.address_space)
    if args.smart_host is not None:
        settings["smart_hosts"] = [h for h in args.smart_host if h]
    if args.auth_user is not None:
        settings["auth_user"] = args.auth_user or None
        if args.auth_user:
            line = (
                sys.stdin.readline()
                if args.auth_password_stdin
                else getpass.getpass("Smart host password: ")
            )
            settings["auth_password"] = line.rstrip("\n")
        else:
            settings.pop("auth_password", None)
    for key in ("tls", "fqdn", "source_server"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value or None
    if args.max_message_size is not None:
        settings["max_message_size"] = _parse_size(args.max_message_size)
    for key in ("verify_certificate", "allow_plaintext_auth", "enabled"):
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    settings = {k: v for k, v in settings.items() if v is not None}
    try:
        outbound.connector_from(args.name, settings)  # refuse what the transport cannot use
    except (ConnectorError, ValueError) as exc:
        raise CliError(str(exc)) from None
    return settings


def _connector_row(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    connector = outbound.connector_from(name, settings)
    return {
        "name": name,
        "address_spaces": list(connector.address_spaces),
        "route": ", ".join(f"{h.host}:{h.port}" for h in connector.smart_hosts) or "DNS MX",
        "auth_user": settings.get("auth_user"),
        "tls": connector.tls.value,
        "verify_certificate": connector.verify_certificate,
        "fqdn": connector.fqdn,
        "max_message_size": connector.max_message_size,
        "source_server": connector.source_server,
        "enabled": connector.enabled,
    }


def cmd_connector_add(args: argparse.Namespace) -> int:
    directory = _directory(args)
    settings = _connector_settings(args, {})
    directory.set_send_connector(args.name, settings, new=True)
    row = _connector_row(args.name, settings)
    spaces = ", ".join(row["address_spaces"])
    print(f"added send connector {args.name} for {spaces} via {row['route']}")
    return EXIT_OK


def cmd_connector_set(args: argparse.Namespace) -> int:
    directory = _directory(args)
    settings = _connector_settings(args, directory.send_connector(args.name))
    directory.set_send_connector(args.name, settings, new=False)
    print(f"updated send connector {args.name}")
    return EXIT_OK


def cmd_connector_list(args: argparse.Namespace) -> int:
    rows = [_connector_row(n, s) for n, s in _directory(args).send_connectors()]
    if not args.json:
        for row in rows:
            row["address_spaces"] = " ".join(row["address_spaces"])
    _print_table(rows, ["name", "address_spaces", "route", "tls", "enabled"], args.json)
    return EXIT_OK


def cmd_connector_show(args: argparse.Namespace) -> int:
    row = _connector_row(args.name, _directory(args).send_connector(args.name))
    if args.json:
        print(json.dumps(row, indent=2))
        return EXIT_OK
    for key, value in row.items():
        shown = " ".join(value) if isinstance(value, list) else value
        print(f"{key.replace('_', ' '):20}{'-' if shown is None else shown}")
    return EXIT_OK


def cmd_connector_remove(args: argparse.Namespace) -> int:
    _directory(args).remove_send_connector(args.name)
    print(f"removed send connector {args.name}")
    return EXIT_OK


# --- the queue (Exchange's Queue Viewer, Postfix's postqueue) -------------------------------


def _queue(args: argparse.Namespace) -> Queue:
    queue = Queue(_load(args).queue_dir)
    queue.open()
    return queue


def _queue_row(entry: QueueEntry) -> dict[str, Any]:
    error = entry.last_error
    return {
        "id": entry.id,
        "sender": entry.sender or "<>",
        "recipients": [
            {"address": r.address, "state": r.state.value, "local": r.local}
            for r in entry.recipients
        ],
        "size": entry.size,
        "arrival": _when(entry.arrival),
        "next_attempt": "held" if entry.held else _when(entry.next_attempt),
        "attempts": entry.attempts,
        "last_error": None if error is None else f"{error.status} {error.text}",
        "held": entry.held,
        "kind": entry.kind.value,
    }


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def cmd_queue_list(args: argparse.Namespace) -> int:
    rows = [_queue_row(e) for e in _queue(args).entries()]
    if not args.json:
        for row in rows:
            pending = [r["address"] for r in row["recipients"] if r["state"] != "delivered"]
            row["recipients"] = ", ".join(pending)
    _print_table(
        rows, ["id", "sender", "recipients", "size", "attempts", "next_attempt", "last_error"],
        args.json,
    )  # fmt: skip
    return EXIT_OK


def cmd_queue_show(args: argparse.Namespace) -> int:
    queue = _queue(args)
    row = _queue_row(_queue_entry(queue, args.id))
    if args.json:
        print(json.dumps(row, indent=2))
        return EXIT_OK
    for key, value in row.items():
        if key == "recipients":
            for r in value:
                local = ", local" if r["local"] else ""
                print(f"{'recipient':14}{r['address']} ({r['state']}{local})")
            continue
        print(f"{key.replace('_', ' '):14}{'-' if value is None else value}")
    return EXIT_OK


def _queue_entry(queue: Queue, id: str) -> QueueEntry:
    try:
        return queue.get(id)
    except EntryNotFound as exc:
        raise CliError(str(exc)) from None


def cmd_queue_retry(args: argparse.Namespace) -> int:
    queue = _queue(args)
    if not args.all and not args.id:
        raise CliError("name a queue id, or --all")
    if args.id:
        _queue_entry(queue, args.id)
    count = queue.retry(None if args.all else args.id)
    print(f"{count} message(s) due now")
    return EXIT_OK


def cmd_queue_delete(args: argparse.Namespace) -> int:
    queue = _queue(args)
    _queue_entry(queue, args.id)
    queue.delete(args.id, notify_sender=args.dsn)
    print(f"deleted {args.id}" + (" (the sender gets a DSN)" if args.dsn else ""))
    return EXIT_OK


def cmd_queue_hold(args: argparse.Namespace) -> int:
    queue = _queue(args)
    _queue_entry(queue, args.id)
    queue.hold(args.id)
    print(f"held {args.id}")
    return EXIT_OK


def cmd_queue_release(args: argparse.Namespace) -> int:
    queue = _queue(args)
    _queue_entry(queue, args.id)
    queue.release(args.id)
    print(f"released {args.id}")
    return EXIT_OK


# --- DKIM -------------------------------------------------------------------------------------


def cmd_dkim_generate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    directory = _directory(args)
    if directory.domain(args.domain) is None:
        raise CliError(f"{args.domain} is not an accepted domain")
    try:
        generated = dkim.generate_key(
            args.domain.lower(),
            cfg.dkim_dir,
            algorithm=dkim.DkimAlgorithm(args.algorithm),
            selector=args.selector,
        )
    except dkim.DkimError as exc:
        raise CliError(str(exc)) from None
    print(f"key: {generated.path}")
    print("publish this TXT record, then reload the server (systemctl reload mailhost):")
    print(generated.zone_line)
    return EXIT_OK


# --- address policies ---------------------------------------------------------------------


def cmd_policy_add(args: argparse.Namespace) -> int:
    policy = _directory(args).add_address_policy(
        args.name, args.priority, args.template, applies_to=args.applies_to
    )
    print(
        f"added address policy {policy.name!r} (priority {policy.priority}, "
        f"applies to {policy.applies_to}): {', '.join(str(t) for t in policy.templates)}"
    )
    print(f"run 'mailhost address-policy apply {policy.name!r}' to update existing users")
    return EXIT_OK


def cmd_policy_list(args: argparse.Namespace) -> int:
    rows = [
        {
            "name": p.name,
            "priority": p.priority,
            "applies_to": p.applies_to,
            "templates": [str(t) for t in p.templates]
            if args.json
            else " ".join(str(t) for t in p.templates),
        }
        for p in _directory(args).address_policies()
    ]
    _print_table(rows, ["priority", "name", "applies_to", "templates"], args.json)
    return EXIT_OK


def cmd_policy_apply(args: argparse.Namespace) -> int:
    changes = _directory(args).apply_address_policy(args.name)
    rows = [dataclasses.asdict(c) for c in changes]
    _print_table(rows, ["user", "address", "note"], args.json)
    return EXIT_OK


def cmd_policy_remove(args: argparse.Namespace) -> int:
    _directory(args).remove_address_policy(args.name)
    print(f"removed address policy {args.name!r} (addresses it made are kept)")
    return EXIT_OK


# --- certificates -------------------------------------------------------------------------


def cmd_cert_show(args: argparse.Namespace) -> int:
    cfg = _load(args)
    info = certfiles.describe(certfiles.read_chain(cfg.certificate_path))
    row = dataclasses.asdict(info)
    if args.json:
        print(json.dumps(row, indent=2, default=str))
        return EXIT_OK
    for key, value in row.items():
        shown = ", ".join(value) if isinstance(value, tuple) else value
        print(f"{key.replace('_', ' '):20}{shown}")
    return EXIT_OK


def cmd_cert_generate(args: argparse.Namespace) -> int:
    cfg = _load(args)
    domains: list[str] = []
    if cfg.directory_path.exists():
        directory = Directory(cfg.directory_path)
        domains = [d.name for d in directory.domains()]
        directory.close()
    names = args.name or certfiles.names_for(cfg.hostname, domains)
    info = certfiles.generate_self_signed(cfg.certificate_path, cfg.private_key_path, names)
    names_text = ", ".join(info.names)
    print(f"self-signed certificate for {names_text}, valid until {info.not_after:%Y-%m-%d}")
    print("reload the server to use it (systemctl reload mailhost, or SIGHUP)")
    return EXIT_OK


def cmd_cert_import(args: argparse.Namespace) -> int:
    # Read with the rights the command started with (a key under /etc/letsencrypt is
    # root's), before _load makes a root invocation act as the data folder's owner.
    info, warnings, cert_pem, key_pem = certfiles.check_import(Path(args.chain), Path(args.key))
    cfg = _load(args)
    certfiles.write_pair(cfg.certificate_path, cert_pem, cfg.private_key_path, key_pem)
    print(
        f"imported {info.subject} (issuer {info.issuer}; {info.chain_length} certificate(s)), "
        f"valid until {info.not_after:%Y-%m-%d}"
    )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("reload the server to use it (systemctl reload mailhost, or SIGHUP)")
    return EXIT_OK


# --- ActiveSync: mobile device mailbox policies ----------------------------------------------


def _eas(args: argparse.Namespace) -> EasAdministration:
    cfg = _load(args)
    if not cfg.directory_path.exists():
        raise CliError(f"no directory at {cfg.directory_path} (run 'mailhost init' first)")
    return EasAdministration(cfg.directory_path)


_POLICY_SETTINGS = [f for f in dataclasses.fields(Policy) if f.name != "name"]


def _policy_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given on the command line (setting name -> value)."""
    changes: dict[str, Any] = {}
    for f in _POLICY_SETTINGS:
        value = getattr(args, f"policy_{f.name}", None)
        if value is None:
            continue
        if isinstance(value, bool):
            changes[f.name] = value
            continue
        try:
            changes[f.name] = parse_setting(f.name, value)
        except PolicyValueError as exc:
            raise CliError(str(exc)) from None
    return changes


def _setting_text(value: Any) -> Any:
    if isinstance(value, IntEnum):
        return enum_word(value)
    if isinstance(value, tuple):
        return list(value)
    if value is None:
        return "unlimited"
    return value


def _policy_row(row: PolicyRow) -> dict[str, Any]:
    out: dict[str, Any] = {"name": row.policy.name, "default": row.is_default}
    out["users"] = row.users
    out["modified"] = _at(row.modified)
    for f in _POLICY_SETTINGS:
        out[f.name] = _setting_text(getattr(row.policy, f.name))
    return out


def cmd_eas_policy_add(args: argparse.Namespace) -> int:
    eas = _eas(args)
    try:
        policy = dataclasses.replace(Policy(name=args.name), **_policy_changes(args))
    except TypeError as exc:
        raise CliError(str(exc)) from None
    eas.add_policy(policy, make_default=args.default)
    print(f"added mobile device mailbox policy {policy.name!r}")
    return EXIT_OK


def cmd_eas_policy_set(args: argparse.Namespace) -> int:
    eas = _eas(args)
    changes = _policy_changes(args)
    if args.new_name:
        changes["name"] = args.new_name
    if not changes and not args.default:
        raise CliError("nothing to set (see 'mailhost eas-policy set --help')")
    policy = eas.update_policy(args.name, changes, make_default=args.default)
    print(f"updated policy {policy.name!r}; its devices provision again on their next request")
    return EXIT_OK


def cmd_eas_policy_list(args: argparse.Namespace) -> int:
    rows = [_policy_row(r) for r in _eas(args).policies()]
    _print_table(rows, ["name", "default", "users", "modified"], args.json)
    return EXIT_OK


def cmd_eas_policy_show(args: argparse.Namespace) -> int:
    row = _policy_row(_eas(args).policy_row(args.name))
    _print_record(row, args.json)
    return EXIT_OK


def cmd_eas_policy_remove(args: argparse.Namespace) -> int:
    _eas(args).remove_policy(args.name)
    print(f"removed mobile device mailbox policy {args.name!r}")
    return EXIT_OK


def _print_record(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row, indent=2, default=str))
        return
    width = max(len(k) for k in row)
    for key, value in row.items():
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else value
        print(f"{key.replace('_', ' ').ljust(width)}  {'-' if shown in (None, '') else shown}")


def _at(value: float | None) -> str | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _add_policy_options(p: argparse.ArgumentParser) -> None:
    for f in _POLICY_SETTINGS:
        option = "--" + f.name.replace("_", "-")
        dest = f"policy_{f.name}"
        text = str(f.metadata["doc"]).replace("%", "%%")
        kind = setting_kind(f.name)
        if kind is bool:
            p.add_argument(option, dest=dest, action=argparse.BooleanOptionalAction, help=text)
        elif isinstance(kind, type) and issubclass(kind, IntEnum):
            words = ", ".join(ENUM_WORDS[kind])
            p.add_argument(option, dest=dest, metavar="WORD", help=f"{text}: {words}")
        elif kind is tuple:
            p.add_argument(option, dest=dest, metavar="A,B", help=f"{text}, comma-separated")
        elif kind == "int|None":
            p.add_argument(option, dest=dest, metavar="N", help=f"{text}; 'unlimited' to unset")
        else:
            p.add_argument(option, dest=dest, metavar="N", help=text)


# --- ActiveSync: devices ---------------------------------------------------------------------


def _registry(args: argparse.Namespace) -> SqliteDeviceRegistry:
    cfg = _load(args)
    if not cfg.directory_path.exists():
        raise CliError(f"no directory at {cfg.directory_path} (run 'mailhost init' first)")
    return SqliteDeviceRegistry(
        cfg.directory_path, recovery_key_path=cfg.data_dir / "eas-recovery.key"
    )


def _owner_of(args: argparse.Namespace, address: str) -> str:
    return _directory(args).user(address).guid


def _find_device(args: argparse.Namespace, registry: SqliteDeviceRegistry) -> Device:
    device_id = normalize_device_id(args.id)
    if args.user:
        device = registry.get(_owner_of(args, args.user), device_id)
        if device is None:
            raise CliError(f"{args.user} has no device {args.id}")
        return device
    found = registry.devices_with_id(device_id)
    if not found:
        raise CliError(f"no device {args.id}")
    if len(found) > 1:
        users = ", ".join(d.user for d in found)
        raise CliError(f"device {args.id} is partnered with several users ({users}): use --user")
    return found[0]


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def _folders_synced(args: argparse.Namespace, device: Device) -> int:
    states = SyncStateStore(_load(args).data_dir / "activesync", fsync=False)
    try:
        return len(states.collections(device.owner, device.device_id))
    except OSError:
        return 0


def _device_row(device: Device) -> dict[str, Any]:
    info = device.info
    return {
        "device_id": device.device_id,
        "user": device.user,
        "device_type": device.device_type,
        "model": info.model,
        "friendly_name": info.friendly_name,
        "os": info.os,
        "os_language": info.os_language,
        "user_agent": info.user_agent or device.user_agent,
        "imei": info.imei,
        "phone_number": info.phone_number,
        "mobile_operator": info.mobile_operator,
        "protocol_version": device.protocol_version,
        "first_sync": _at(device.first_sync),
        "last_sync": _at(device.last_sync),
        "last_policy_update": _at(device.last_policy_update),
        "policy_applied": device.policy_name,
        "policy_status": _POLICY_STATUS.get(device.client_policy_status or 0, "not applied"),
        "status": device.status,
        "access": device.access.value,
        "access_reason": device.access_reason,
        "wipe": device.wipe.value,
        "wipe_requested": _at(device.wipe_requested),
        "wipe_requested_by": device.wipe_requested_by or None,
        "wipe_sent": _at(device.wipe_sent),
        "wipe_acknowledged": _at(device.wipe_acknowledged),
    }


# What the device said it applied (MS-ASPROV 2.2.2.54.1), as Exchange shows it.
_POLICY_STATUS = {
    1: "applied in full",
    2: "partially applied",
    3: "not applied",
    4: "externally managed",
}


def cmd_device_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.user:
        devices = registry.devices_of(_owner_of(args, args.user))
    else:
        devices = registry.all_devices()
    rows = [_device_row(d) for d in devices]
    columns = ["device_id", "user", "device_type", "model", "status", "last_sync"]
    _print_table(rows, columns, args.json)
    return EXIT_OK


def cmd_device_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    device = _find_device(args, registry)
    row = _device_row(device)
    row["folders_synced"] = _folders_synced(args, device)
    reads = [
        e for e in _eas(args).audit_entries(device.owner, device.device_id)
        if e.action == "recovery-password-read"
    ]  # fmt: skip
    row["recovery_password_reads"] = [f"{_at(e.time)} by {e.actor}" for e in reads]
    _print_record(row, args.json)
    return EXIT_OK


_BY_VERSION = {v.value: v for v in ProtocolVersion}


def cmd_device_wipe(args: argparse.Namespace) -> int:
    registry = _registry(args)
    device = _find_device(args, registry)
    account_only = bool(args.account_only)
    spoken = _BY_VERSION.get(device.protocol_version)
    if account_only and spoken is not None and spoken < ProtocolVersion.V16_1:
        raise CliError(
            f"device {device.device_id} speaks ActiveSync {device.protocol_version}; "
            "an account-only wipe needs 16.1 (a full wipe does not)"
        )
    if device.wipe.finished:
        raise CliError(f"device {device.device_id} was wiped already ({device.wipe.value})")
    state = WipeState.ACCOUNT_ONLY_PENDING if account_only else WipeState.PENDING
    actor = _actor()
    now = time.time()
    registry.modify(
        device.owner,
        device.device_id,
        lambda d: dataclasses.replace(
            d, wipe=state, wipe_requested=now, wipe_requested_by=actor, wipe_sent=None
        ),
    )
    what = "account-only wipe" if account_only else "remote wipe"
    _eas(args).audit(actor, f"{what.replace(' ', '-')}-requested", device.owner, device.device_id)
    print(
        f"{what} of {device.device_id} ({device.user}) requested; "
        "the device is told on its next request"
    )
    return EXIT_OK


def cmd_device_remove(args: argparse.Namespace) -> int:
    registry = _registry(args)
    device = _find_device(args, registry)
    registry.remove(device.owner, device.device_id)
    states = SyncStateStore(_load(args).data_dir / "activesync", fsync=False)
    try:
        states.forget_device(device.owner, device.device_id)
    except OSError as exc:
        print(f"warning: its sync state was not removed: {exc}", file=sys.stderr)
    _eas(args).audit(_actor(), "device-removed", device.owner, device.device_id)
    print(f"removed device {device.device_id} of {device.user}")
    return EXIT_OK


def cmd_device_recovery_password(args: argparse.Namespace) -> int:
    registry = _registry(args)
    if args.id:
        devices = [_find_device(args, registry)]
    elif args.user:
        devices = registry.devices_of(_owner_of(args, args.user))
    else:
        raise CliError("name a device or --user")
    eas = _eas(args)
    actor = _actor()
    rows = []
    for device in devices:
        password = registry.recovery_password(device.owner, device.device_id)
        if password is not None:
            # As Get-ActiveSyncDeviceStatistics -ShowRecoveryPassword: every read is kept.
            eas.audit(actor, "recovery-password-read", device.owner, device.device_id)
        rows.append({"device_id": device.device_id, "user": device.user, "password": password})
    if not any(r["password"] for r in rows):
        raise CliError("no recovery password stored (the policy must enable password recovery)")
    _print_table(rows, ["device_id", "user", "password"], args.json)
    print("this read is recorded in the device's audit trail", file=sys.stderr)
    return EXIT_OK


# --- ActiveSync: device access rules --------------------------------------------------------

_ACCESS_WORDS = {"allow": DeviceAccess.ALLOWED, "block": DeviceAccess.BLOCKED}
_ACCESS_WORDS["quarantine"] = DeviceAccess.QUARANTINED


def cmd_access_rule_add(args: argparse.Namespace) -> int:
    rule = _eas(args).add_access_rule(
        Characteristic(args.characteristic), args.value, _ACCESS_WORDS[args.access]
    )
    print(f"added {rule.describe()}: {rule.access.value}")
    return EXIT_OK


def cmd_access_rule_list(args: argparse.Namespace) -> int:
    eas = _eas(args)
    rows = [
        {"id": r.id, "characteristic": r.characteristic.value, "value": r.value,
         "access": r.access.value}
        for r in eas.access_rules()
    ]  # fmt: skip
    _print_table(rows, ["id", "characteristic", "value", "access"], args.json)
    if not args.json:
        print(f"default access level: {eas.default_access().value}")
    return EXIT_OK


def cmd_access_rule_remove(args: argparse.Namespace) -> int:
    rule = _eas(args).remove_access_rule(args.id)
    print(f"removed {rule.describe()}")
    return EXIT_OK


def cmd_access_default(args: argparse.Namespace) -> int:
    eas = _eas(args)
    if args.level:
        eas.set_default_access(_ACCESS_WORDS[args.level])
    print(f"default access level: {eas.default_access().value}")
    return EXIT_OK


# --- out of office --------------------------------------------------------------------------


def _parse_time(text: str) -> float:
    value = text.strip()
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(f"time {text!r}: expected ISO 8601, e.g. 2025-07-01T09:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def cmd_oof_show(args: argparse.Namespace) -> int:
    user = _directory(args).user(args.address)
    settings = _eas(args).oof_settings(user.guid)
    row: dict[str, Any] = {
        "user": user.primary_address,
        "state": settings.state.value,
        "active_now": settings.active(time.time()),
        "start": oof_time(settings.start) if settings.start else None,
        "end": oof_time(settings.end) if settings.end else None,
    }
    for name in ("internal", "known_external", "unknown_external"):
        reply: OofReply = getattr(settings, name)
        row[f"{name}_enabled"] = reply.enabled
        row[f"{name}_format"] = "html" if reply.html else "text"
        row[f"{name}_message"] = reply.text
    _print_record(row, args.json)
    return EXIT_OK


def cmd_oof_set(args: argparse.Namespace) -> int:
    user = _directory(args).user(args.address)
    eas = _eas(args)
    current = eas.oof_settings(user.guid)
    changes: dict[str, Any] = {}
    if args.state:
        changes["state"] = OofState(args.state)
    if args.start is not None:
        changes["start"] = _parse_time(args.start) if args.start else None
    if args.end is not None:
        changes["end"] = _parse_time(args.end) if args.end else None
    if args.internal_message is not None:
        changes["internal"] = OofReply(True, args.internal_message, args.html)
    external = current.known_external
    if args.external_message is not None:
        external = OofReply(True, args.external_message, args.html)
    audience = args.external_audience
    if args.external_message is not None and audience is None:
        audience = "all"
    if audience is not None:
        changes["known_external"] = dataclasses.replace(external, enabled=audience != "none")
        changes["unknown_external"] = dataclasses.replace(external, enabled=audience == "all")
    if not changes:
        raise CliError("nothing to set (see 'mailhost user oof set --help')")
    saved = eas.set_oof_settings(user.guid, dataclasses.replace(current, **changes))
    print(f"out of office for {user.primary_address}: {saved.state.value}")
    return EXIT_OK


# --- client certificates ----------------------------------------------------------------------


def cmd_cert_issue_client(args: argparse.Namespace) -> int:
    cfg = _load(args)
    user = _directory(args).user(args.user)
    _, created = certfiles.ensure_client_ca(
        cfg.local_client_ca_path, cfg.local_client_ca_key_path, cfg.hostname
    )
    if created:
        print(f"created the local client certificate CA: {cfg.local_client_ca_path}")
    out = Path(args.out) if args.out else cfg.data_dir / "certs" / "clients"
    password = passwords.generate_password()
    issued = certfiles.issue_client_certificate(
        cfg.local_client_ca_path,
        cfg.local_client_ca_key_path,
        user.primary_address,
        display_name=user.display_name,
        password=password,
        days=args.days,
    )
    stem = out / user.primary_address
    certfiles.write_private(stem.with_name(stem.name + ".key"), issued.key_pem)
    certfiles.write_private(stem.with_name(stem.name + ".p12"), issued.pkcs12)
    crt = stem.with_name(stem.name + ".crt")
    crt.parent.mkdir(parents=True, exist_ok=True)
    crt.write_bytes(issued.certificate_pem)
    print(f"client certificate for {user.primary_address}, valid until {issued.not_after:%Y-%m-%d}")
    print(f"certificate: {crt}")
    print(f"key: {stem.with_name(stem.name + '.key')}")
    print(f"PKCS#12 for the phone: {stem.with_name(stem.name + '.p12')} (password: {password})")
    if cfg.activesync.client_certificates == "ignore":
        print('set [activesync] client_certificates = "accept" (or "require") and reload')
    elif cfg.client_ca_path != cfg.local_client_ca_path:
        print(f"warning: the server trusts {cfg.client_ca_path}, not this CA", file=sys.stderr)
    return EXIT_OK


# --- the parser ---------------------------------------------------------------------------

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", default=argparse.SUPPRESS, help="config file (or $MAILHOST_CONFIG)"
    )
    common.add_argument(
        "--dev", action="store_true", default=argparse.SUPPRESS, help="the instance in ./var"
    )
    parser = argparse.ArgumentParser(
        prog="mailhost",
        description="A mail server: SMTP, IMAP, POP3 and Exchange ActiveSync.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        parent: Any, name: str, func: Command, help: str, *, listing: bool = False
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, parents=[common])
        p.set_defaults(func=func)
        if listing:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    def group(name: str, help: str) -> Any:
        p = sub.add_parser(name, help=help, parents=[common])
        return p.add_subparsers(dest="action", required=True, metavar="ACTION")

    p = command(sub, "init", cmd_init, "create the config, data folder and certificate")
    p.add_argument("--dir", help="put config and data in this folder (a self-contained instance)")
    p.add_argument("--hostname", help="this server's name (default: the machine's FQDN)")
    p.add_argument("--domain", help="first accepted domain")
    p.add_argument("--user", help="first user's address (a password is generated and printed)")
    p.add_argument("--password", help=argparse.SUPPRESS)
    p.add_argument("--listen", help="address every listener binds (default: all interfaces)")
    p.add_argument(
        "--ephemeral-ports",
        action="store_true",
        help="port 0 everywhere: the kernel chooses, run/mailhost.json tells",
    )
    command(sub, "serve", cmd_serve, "run the server (until SIGTERM)")
    command(
        sub, "status", cmd_status, "is the server running, and are its listeners up", listing=True
    )

    domains = group("domain", "accepted domains")
    p = command(domains, "add", cmd_domain_add, "accept mail for a domain")
    p.add_argument("name")
    p.add_argument(
        "--type",
        choices=[t.value for t in DomainType],
        default=DomainType.AUTHORITATIVE.value,
        help="authoritative (default), internal-relay or external-relay",
    )
    command(domains, "list", cmd_domain_list, "list accepted domains", listing=True)
    p = command(domains, "remove", cmd_domain_remove, "stop accepting a domain")
    p.add_argument("name")

    users = group("user", "users and their mailboxes")
    p = command(users, "add", cmd_user_add, "create a user and mailbox")
    p.add_argument("address", help="primary e-mail address")
    p.add_argument("--name", help="display name")
    p.add_argument("--given", help="given name (%%g in address policies)")
    p.add_argument("--surname", help="surname (%%s in address policies)")
    p.add_argument("--alias", help="alias (%%m; default: the address's local part)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument(
        "--no-address-policy", action="store_true", help="address policies leave this user alone"
    )
    command(users, "list", cmd_user_list, "list users", listing=True)
    p = command(users, "show", cmd_user_show, "show one user", listing=True)
    p.add_argument("address")
    p = command(users, "passwd", cmd_user_passwd, "set a user's password")
    p.add_argument("address")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p = command(users, "remove", cmd_user_remove, "remove a user (the mailbox folder is kept)")
    p.add_argument("address")
    p = command(users, "set", cmd_user_set, "change a user's settings")
    p.add_argument("address")
    p.add_argument("--quota", help="mailbox size limit: 500M, 2G, or unlimited")
    p.add_argument(
        "--eas-policy", metavar="NAME", help="mobile device mailbox policy ('default': the default)"
    )
    uoof = users.add_parser("oof", help="out of office (automatic replies)", parents=[common])
    uoof_sub = uoof.add_subparsers(dest="oof_action", required=True, metavar="ACTION")
    p = command(uoof_sub, "show", cmd_oof_show, "show a user's automatic replies", listing=True)
    p.add_argument("address")
    p = command(uoof_sub, "set", cmd_oof_set, "set a user's automatic replies")
    p.add_argument("address")
    p.add_argument("--state", choices=[s.value for s in OofState])
    p.add_argument("--start", help="scheduled: from (ISO 8601, UTC unless an offset is given)")
    p.add_argument("--end", help="scheduled: until")
    p.add_argument("--internal-message", metavar="TEXT", help="reply to senders in our domains")
    p.add_argument("--external-message", metavar="TEXT", help="reply to other senders")
    p.add_argument(
        "--external-audience",
        choices=["none", "known", "all"],
        help="external senders answered: none, known (in Contacts) or all",
    )
    p.add_argument("--html", action="store_true", help="the messages are HTML")
    uaddr = users.add_parser("address", help="a user's extra addresses", parents=[common])
    uaddr_sub = uaddr.add_subparsers(dest="address_action", required=True, metavar="ACTION")
    for name, func, text in (
        ("add", cmd_user_address_add, "give a user another address"),
        ("remove", cmd_user_address_remove, "take an extra address away"),
    ):
        p = command(uaddr_sub, name, func, text)
        p.add_argument("user")
        p.add_argument("address")

    mailboxes = group("mailbox", "mailbox maintenance")
    p = command(mailboxes, "stats", cmd_mailbox_stats, "folders, counts and sizes", listing=True)
    p.add_argument("user")
    p = command(mailboxes, "reindex", cmd_mailbox_reindex, "rebuild indexes from the files")
    p.add_argument("user")
    p = command(sub, "import", cmd_import, "import an mbox file or a maildir into a mailbox")
    p.add_argument("user")
    p.add_argument("path", help="an mbox file, or a maildir / maildir++ folder")
    p.add_argument("--folder", default="Inbox", help="target folder for an mbox (default Inbox)")

    dkim_parser = domains.add_parser("dkim", help="DKIM signing keys", parents=[common])
    dkim_sub = dkim_parser.add_subparsers(dest="dkim_action", required=True, metavar="ACTION")
    p = command(dkim_sub, "generate", cmd_dkim_generate, "make a signing key, print its TXT record")
    p.add_argument("domain")
    p.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    p.add_argument("--selector", help="DNS selector (default: YYYYMM plus r or e)")

    connectors = group("connector", "send connectors (outbound routing)")
    for name, func, text in (
        ("add", cmd_connector_add, "add a send connector"),
        ("set", cmd_connector_set, "change a send connector"),
    ):
        p = command(connectors, name, func, text)
        p.add_argument("name")
        p.add_argument(
            "--address-space", action="append", help="*, example.com, or *.example.com (repeat)"
        )
        p.add_argument(
            "--smart-host", action="append", help="host:port to relay through (repeat); none: MX"
        )
        p.add_argument("--auth-user", help="smart host AUTH user ('' to remove)")
        p.add_argument("--auth-password-stdin", action="store_true", help="read the password")
        p.add_argument("--tls", choices=["opportunistic", "required", "disabled"])
        p.add_argument("--verify-certificate", action=argparse.BooleanOptionalAction, default=None)
        p.add_argument(
            "--allow-plaintext-auth", action=argparse.BooleanOptionalAction, default=None
        )
        p.add_argument("--fqdn", help="name to announce in EHLO")
        p.add_argument("--max-message-size", help="e.g. 25M")
        p.add_argument("--source-server", help="informational, as in Exchange")
        p.add_argument("--enabled", action=argparse.BooleanOptionalAction, default=None)
    command(connectors, "list", cmd_connector_list, "list send connectors", listing=True)
    p = command(connectors, "show", cmd_connector_show, "show one send connector", listing=True)
    p.add_argument("name")
    p = command(connectors, "remove", cmd_connector_remove, "remove a send connector")
    p.add_argument("name")

    queue = group("queue", "the outbound queue")
    command(queue, "list", cmd_queue_list, "messages waiting", listing=True)
    p = command(queue, "show", cmd_queue_show, "one message's envelope and state", listing=True)
    p.add_argument("id")
    p = command(queue, "retry", cmd_queue_retry, "try again now")
    p.add_argument("id", nargs="?")
    p.add_argument("--all", action="store_true", help="every message")
    p = command(queue, "delete", cmd_queue_delete, "remove a message")
    p.add_argument("id")
    p.add_argument("--dsn", action="store_true", help="tell the sender (a DSN)")
    p = command(queue, "hold", cmd_queue_hold, "keep a message from being sent")
    p.add_argument("id")
    p = command(queue, "release", cmd_queue_release, "let a held message go")
    p.add_argument("id")

    policies = group("address-policy", "e-mail address policies")
    p = command(policies, "add", cmd_policy_add, "add an address policy")
    p.add_argument("name")
    p.add_argument("--priority", type=int, required=True, help="1 is applied first")
    p.add_argument(
        "--template",
        action="append",
        required=True,
        help="SMTP:%%g.%%s@example.com for the primary address, smtp:... for others",
    )
    p.add_argument(
        "--applies-to", default="all", help="'all' or a domain (users with an address there)"
    )
    command(policies, "list", cmd_policy_list, "list address policies", listing=True)
    p = command(
        policies, "apply", cmd_policy_apply, "generate addresses for existing users", listing=True
    )
    p.add_argument("name")
    p = command(policies, "remove", cmd_policy_remove, "remove an address policy")
    p.add_argument("name")

    eas_policies = group("eas-policy", "ActiveSync mobile device mailbox policies")
    p = command(eas_policies, "add", cmd_eas_policy_add, "add a mailbox policy")
    p.add_argument("name")
    p.add_argument("--default", action="store_true", help="make it the default policy")
    _add_policy_options(p)
    command(eas_policies, "list", cmd_eas_policy_list, "list mailbox policies", listing=True)
    p = command(eas_policies, "show", cmd_eas_policy_show, "every setting of one", listing=True)
    p.add_argument("name")
    p = command(eas_policies, "set", cmd_eas_policy_set, "change a mailbox policy")
    p.add_argument("name")
    p.add_argument("--new-name", help="rename it")
    p.add_argument("--default", action="store_true", help="make it the default policy")
    _add_policy_options(p)
    p = command(eas_policies, "remove", cmd_eas_policy_remove, "remove an unused mailbox policy")
    p.add_argument("name")

    devices = group("device", "ActiveSync devices (partnerships)")
    p = command(devices, "list", cmd_device_list, "list devices", listing=True)
    p.add_argument("--user", help="only this user's devices")
    for name, func, text in (
        ("show", cmd_device_show, "one device's record and statistics"),
        ("wipe", cmd_device_wipe, "wipe a device on its next request"),
        ("remove", cmd_device_remove, "forget a device (it may partner again)"),
    ):
        p = command(devices, name, func, text, listing=name == "show")
        p.add_argument("id", help="the DeviceId")
        p.add_argument("--user", help="the device's user (when several share the id)")
        if name == "wipe":
            p.add_argument(
                "--account-only",
                action="store_true",
                help="remove only this account's data (ActiveSync 16.1 devices)",
            )
    p = command(
        devices,
        "recovery-password",
        cmd_device_recovery_password,
        "show a device's recovery password (the read is audited)",
        listing=True,
    )
    p.add_argument("id", nargs="?", help="the DeviceId")
    p.add_argument("--user", help="the user (every device of theirs without an id)")

    rules = group("device-access-rule", "allow, block or quarantine devices")
    p = command(rules, "add", cmd_access_rule_add, "add a device access rule")
    p.add_argument("characteristic", choices=[c.value for c in Characteristic])
    p.add_argument("value", help="what to match (a trailing * matches a prefix)")
    p.add_argument("access", choices=list(_ACCESS_WORDS))
    command(rules, "list", cmd_access_rule_list, "list device access rules", listing=True)
    p = command(rules, "remove", cmd_access_rule_remove, "remove a device access rule")
    p.add_argument("id", type=int)
    p = command(rules, "default", cmd_access_default, "show or set the default access level")
    p.add_argument("level", nargs="?", choices=list(_ACCESS_WORDS))

    certs = group("cert", "the server certificate")
    command(certs, "show", cmd_cert_show, "show the certificate in use", listing=True)
    p = command(certs, "generate", cmd_cert_generate, "make a new self-signed certificate")
    p.add_argument("--name", action="append", help="a DNS name (repeat); default: host + domains")
    p = command(certs, "import", cmd_cert_import, "install an operator's certificate chain and key")
    p.add_argument("chain", help="PEM file: the server certificate, then intermediates")
    p.add_argument("key", help="PEM file: the unencrypted private key")
    p = command(
        certs, "issue-client", cmd_cert_issue_client, "issue a client certificate from a local CA"
    )
    p.add_argument("user", help="the user's address")
    p.add_argument("--out", help="folder for the files (default: certs/clients in the data folder)")
    p.add_argument("--days", type=int, default=certfiles.CLIENT_CERT_DAYS, help="validity")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # What the server and the CLI create (mail, the directory with its password hashes,
    # keys, queue files) is for the service's user and group only.
    os.umask(FILE_CREATION_MASK)
    try:
        result: int = args.func(args)
    except (
        CliError,
        configuration.ConfigError,
        DirectoryError,
        AddressError,
        CertificateError,
        StoreError,
        QueueError,
        AdministrationError,
        DeviceRegistryError,
    ) as exc:
        print(f"mailhost: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the service's own start-up errors, without a traceback
        from mailhost.service import ServiceError

        if isinstance(exc, ServiceError):
            print(f"mailhost: {exc}", file=sys.stderr)
            return EXIT_ERROR
        if isinstance(exc, OSError):
            print(f"mailhost: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_ERROR
        raise
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
