"""The TOML configuration: parsed once, at the edge, into frozen dataclasses.

Static settings only (host name, data folder, listeners, certificate paths, limits).
What an administrator changes day to day (domains, users, policies, connectors,
devices) lives in the directory and is changed with the CLI.

The schema is the dataclasses below. Each field's ``metadata["doc"]`` is its
documentation: `mailhost init` writes a commented file from it and the README table
is checked against it by a test. An unknown key or a value of the wrong type is a
`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.smtp.core import RFC_MIN_RECIPIENTS
from transport.envelope import MAX_RECIPIENTS as QUEUE_MAX_RECIPIENTS

PRODUCTION_CONFIG = Path("/etc/mailhost/mailhost.toml")
PRODUCTION_DATA_DIR = Path("/var/lib/mailhost")
DEV_DIR = Path("var")
DEV_PORT_OFFSET = 10000
CLIENT_CERTIFICATE_MODES = ("ignore", "accept", "require")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key or the file."""


def doc(text: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field carrying its documentation."""
    if default is dataclasses.MISSING:
        return field(metadata={"doc": text}, **kw)
    return field(default=default, metadata={"doc": text}, **kw)


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    enabled: bool = doc("serve this listener", True)
    address: str = doc('address to bind; "*" for every interface', "*")
    port: int = doc("TCP port; 0 lets the kernel choose (the status file tells)", 0)


# name -> (standard port, how TLS is done, what it serves)
LISTENERS: dict[str, tuple[int, str, str]] = {
    "smtp": (25, "starttls", "SMTP from other servers (receive connector Default)"),
    "submissions": (465, "implicit", "SMTP submission, implicit TLS (receive connector Client)"),
    "submission": (587, "starttls", "SMTP submission, STARTTLS (receive connector Client)"),
    "imap": (143, "starttls", "IMAP with STARTTLS"),
    "imaps": (993, "implicit", "IMAP over implicit TLS"),
    "pop3": (110, "starttls", "POP3 with STLS"),
    "pop3s": (995, "implicit", "POP3 over implicit TLS"),
    "https": (443, "implicit", "HTTPS: ActiveSync and Autodiscover"),
    "http": (80, "none", "HTTP: redirects to HTTPS"),
}


def _listener(name: str) -> Any:
    port, _, what = LISTENERS[name]
    return doc(what, default_factory=lambda: ListenerSettings(port=port))


@dataclass(frozen=True, slots=True)
class Listeners:
    smtp: ListenerSettings = _listener("smtp")
    submissions: ListenerSettings = _listener("submissions")
    submission: ListenerSettings = _listener("submission")
    imap: ListenerSettings = _listener("imap")
    imaps: ListenerSettings = _listener("imaps")
    pop3: ListenerSettings = _listener("pop3")
    pop3s: ListenerSettings = _listener("pop3s")
    https: ListenerSettings = _listener("https")
    http: ListenerSettings = _listener("http")

    def items(self) -> Iterator[tuple[str, ListenerSettings]]:
        for name in LISTENERS:
            yield name, getattr(self, name)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    certificate: Path = doc(
        "PEM certificate chain, leaf first (relative paths are from the data folder)",
        Path("certs/server.crt"),
    )
    private_key: Path = doc("PEM private key of the certificate", Path("certs/server.key"))
    handshake_timeout: float = doc("seconds a client gets to complete a TLS handshake", 30.0)


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    shutdown_grace: float = doc(
        "seconds open sessions get to finish after SIGTERM before they are cut", 10.0
    )
    log_level: str = doc("debug, info, warning or error", "info")
    max_connections_per_address: int = doc(
        "concurrent connections one client address may hold per listener", 50
    )
    single_cpu: bool = doc(
        "keep the server's threads on one CPU: Python runs one thread at a time, and "
        "handing that turn between CPUs costs more than it gains (password hashes "
        "still use every CPU)",
        True,
    )


@dataclass(frozen=True, slots=True)
class AuthSettings:
    failure_delay: float = doc(
        "seconds before a failed login is answered; grows with the address's recent failures",
        2.0,
    )
    max_failures_per_minute: int = doc(
        "failed logins from one address, across protocols, before it is refused for a while",
        10,
    )
    max_failures_per_day: int = doc("failed logins from one address in 24 hours, likewise", 50)
    plaintext_on_loopback: bool = doc(
        "allow passwords without TLS from 127.0.0.0/8 and ::1 (IMAP, POP3); never elsewhere",
        False,
    )


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    max_message_size: int = doc(
        "largest message accepted, in bytes (advertised with SIZE)", 25 * 1024 * 1024
    )
    max_recipients: int = doc("recipients per message: 100 (RFC 5321) to 1000 (the queue)", 1000)
    anonymous_on_default: bool = doc(
        "the Default connector (port 25) takes mail from anyone for accepted domains "
        "(Exchange's AnonymousUsers permission group); false: authenticated senders only",
        True,
    )
    delivery_agent: bool = doc(
        "store received mail from a helper process (the delivery agent), which runs beside "
        "the server on another CPU; false: in threads of the server itself",
        True,
    )


@dataclass(frozen=True, slots=True)
class ImapConfig:
    append_limit_mb: int = doc("largest message APPEND accepts, in MiB (APPENDLIMIT)", 25)
    idle_timeout_minutes: float = doc("minutes an IDLE may last (RFC 2177: at least 29)", 30.0)
    autologout_minutes: float = doc("minutes a logged-in client may stay silent", 30.0)
    commands_per_second: float = doc("sustained commands per second before slowing a client", 200.0)
    metadata_cache_mb: int = doc(
        "memory for parsed envelopes and structures shared by all IMAP sessions, in MiB", 256
    )


@dataclass(frozen=True, slots=True)
class QueueConfig:
    nameservers: tuple[str, ...] = doc(
        'DNS servers for MX lookups, "address" or "address:port"; empty: /etc/resolv.conf',
        (),
    )
    minimal_backoff: float = doc("seconds before the first retry (doubles each time)", 300.0)
    maximal_backoff: float = doc("longest wait between retries, in seconds", 4000.0)
    lifetime_hours: float = doc("hours a message may wait before it bounces", 120.0)
    delay_warning_hours: float = doc("hours before the sender is told of a delay; 0: never", 4.0)
    postmaster: str = doc(
        "mail for postmaster (where no such mailbox exists) and double bounces go here;"
        " empty: postmaster mail is refused and double bounces only logged",
        "",
    )
    max_connections: int = doc("outbound SMTP connections at once", 100)
    max_per_destination: int = doc("connections at once to one destination", 20)
    max_active_mib: int = doc(
        "message content, in MiB, that deliveries in flight hold together (a large message"
        " alone may pass it)",
        256,
    )
    mx_port: int = doc("port of MX hosts (25; other values are for staging setups)", 25)
    allow_local_mx: bool = doc(
        "deliver to MX hosts on loopback or private addresses (staging only)", False
    )
    dkim: bool = doc("sign mail leaving for other domains with the domain's DKIM key", True)


@dataclass(frozen=True, slots=True)
class ActiveSyncConfig:
    external_url: str = doc(
        "URL phones are given by Autodiscover; empty: https://<hostname>[:port]"
        "/Microsoft-Server-ActiveSync",
        "",
    )
    internal_url: str = doc("URL for clients inside the network (empty: none)", "")
    netbios_domain: str = doc(
        r"checked against DOMAIN in DOMAIN\user logins; empty: the DOMAIN part is ignored", ""
    )
    heartbeat_min: int = doc("shortest Ping/Sync heartbeat a device may ask for, in seconds", 60)
    heartbeat_max: int = doc("longest heartbeat, in seconds (Exchange: 3540)", 3540)
    max_request_mb: int = doc("largest request body, in MiB (a message sent from a phone)", 36)
    max_concurrent_requests: int = doc(
        "requests processed at once before 503 with Retry-After", 256
    )
    max_devices_per_user: int = doc("partnerships one user may have (status 177 beyond)", 100)
    client_certificates: str = doc(
        "client certificate login on the virtual directory: ignore, accept (a certificate "
        "logs in, Basic otherwise) or require (no ActiveSync without one)",
        "ignore",
    )
    client_ca: str = doc(
        "PEM file of the CA that issues accepted client certificates (relative to the data "
        "folder); empty: the local CA of 'mailhost cert issue-client' (certs/client-ca.crt)",
        "",
    )


@dataclass(frozen=True, slots=True)
class AutodiscoverConfig:
    mail_host: str = doc("host name mail programs are told to use; empty: hostname", "")
    organization: str = doc("organisation name shown in configuration profiles", "")
    imaps_port: int = doc("public IMAPS port for autoconfig; 0: the imaps listener's port", 0)
    pop3s_port: int = doc("public POP3S port; 0: the pop3s listener's port", 0)
    submissions_port: int = doc("public SMTPS port; 0: the submissions listener's port", 0)
    submission_port: int = doc("public submission port; 0: the submission listener's port", 0)


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str = doc("fully qualified name of this server (greetings, certificate)")
    data_dir: Path = doc(
        "folder for the directory, mailboxes, queue and certificates (relative to this file)",
        PRODUCTION_DATA_DIR,
    )
    tls: TlsSettings = doc("certificate and TLS settings", default_factory=TlsSettings)
    service: ServiceSettings = doc("process behaviour", default_factory=ServiceSettings)
    listeners: Listeners = doc("network listeners", default_factory=Listeners)
    auth: AuthSettings = doc("password logins (every protocol)", default_factory=AuthSettings)
    smtp: SmtpConfig = doc("SMTP receive connectors", default_factory=SmtpConfig)
    queue: QueueConfig = doc("the outbound queue and MX delivery", default_factory=QueueConfig)
    imap: ImapConfig = doc("the IMAP server", default_factory=ImapConfig)
    activesync: ActiveSyncConfig = doc(
        "the ActiveSync virtual directory", default_factory=ActiveSyncConfig
    )
    autodiscover: AutodiscoverConfig = doc(
        "what Autodiscover and autoconfig tell clients", default_factory=AutodiscoverConfig
    )
    source: Path = field(default=Path(), compare=False, metadata={"internal": True})

    # Paths of the data folder: derived, never configured separately.
    @property
    def directory_path(self) -> Path:
        return self.data_dir / "directory.sqlite3"

    @property
    def mailboxes_dir(self) -> Path:
        return self.data_dir / "mailboxes"

    @property
    def spool_dir(self) -> Path:
        """Messages being received or staged for delivery (same file system as the store)."""
        return self.data_dir / "spool"

    @property
    def queue_dir(self) -> Path:
        return self.data_dir / "queue"

    @property
    def dkim_dir(self) -> Path:
        return self.data_dir / "dkim"

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def status_path(self) -> Path:
        return self.run_dir / "mailhost.json"

    @property
    def certificate_path(self) -> Path:
        return self.data_dir / self.tls.certificate

    @property
    def private_key_path(self) -> Path:
        return self.data_dir / self.tls.private_key

    @property
    def local_client_ca_path(self) -> Path:
        """The CA `mailhost cert issue-client` makes and signs with."""
        return self.data_dir / "certs" / "client-ca.crt"

    @property
    def local_client_ca_key_path(self) -> Path:
        return self.data_dir / "certs" / "client-ca.key"

    @property
    def client_ca_path(self) -> Path:
        """The CA whose client certificates the https listener accepts."""
        if self.activesync.client_ca:
            return self.data_dir / self.activesync.client_ca
        return self.local_client_ca_path


# --- parsing -----------------------------------------------------------------------------


def load(path: Path) -> Config:
    """Read and validate the TOML file at `path`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config {path}: no such file (run 'mailhost init' first)") from None
    except OSError as exc:
        raise ConfigError(f"config {path}: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config {path}: not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
    return parse(data, source=path)


def parse(data: Mapping[str, Any], *, source: Path) -> Config:
    try:
        config: Config = _build(Config, data, prefix="")
    except ConfigError as exc:
        raise ConfigError(f"config {source}: {exc}") from None
    base = source.parent.resolve()
    data_dir = config.data_dir if config.data_dir.is_absolute() else base / config.data_dir
    config = dataclasses.replace(config, data_dir=data_dir, source=source)
    _check(config)
    return config


def _check(config: Config) -> None:
    where = f"config {config.source}"
    if not config.hostname or " " in config.hostname or "." not in config.hostname:
        raise ConfigError(
            f"{where}: hostname: expected a fully qualified name like mail.example.com"
        )
    if config.service.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: service.log_level: expected debug, info, warning or error")
    if config.service.shutdown_grace < 0:
        raise ConfigError(f"{where}: service.shutdown_grace: must not be negative")
    if config.service.max_connections_per_address < 1:
        raise ConfigError(f"{where}: service.max_connections_per_address: must be at least 1")
    if config.smtp.max_message_size < 1024:
        raise ConfigError(f"{where}: smtp.max_message_size: must be at least 1024")
    if not RFC_MIN_RECIPIENTS <= config.smtp.max_recipients <= QUEUE_MAX_RECIPIENTS:
        # RFC 5321 4.5.3.1.8 asks for at least 100; the queue holds at most its envelope's
        # recipients, and a message must never be accepted for more than it can queue.
        raise ConfigError(
            f"{where}: smtp.max_recipients: want {RFC_MIN_RECIPIENTS} to {QUEUE_MAX_RECIPIENTS}"
        )
    queue = config.queue
    if queue.minimal_backoff <= 0 or queue.maximal_backoff < queue.minimal_backoff:
        raise ConfigError(f"{where}: queue: want 0 < minimal_backoff <= maximal_backoff")
    if queue.lifetime_hours <= 0 or queue.delay_warning_hours < 0:
        raise ConfigError(f"{where}: queue: lifetime_hours > 0, delay_warning_hours >= 0")
    if queue.max_connections < 1 or queue.max_per_destination < 1:
        raise ConfigError(f"{where}: queue: connection limits must be at least 1")
    if queue.max_active_mib < 1:
        raise ConfigError(f"{where}: queue.max_active_mib: must be at least 1")
    if config.activesync.client_certificates not in CLIENT_CERTIFICATE_MODES:
        raise ConfigError(
            f"{where}: activesync.client_certificates: expected ignore, accept or require"
        )
    for name, listener in config.listeners.items():
        if not 0 <= listener.port <= 65535:
            raise ConfigError(f"{where}: listeners.{name}.port: {listener.port} is not a TCP port")


_SCALARS: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _build(cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.')}: expected a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{prefix}{key}: unknown key")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{key}: missing")
            continue
        values[name] = _convert(hints[name], data[name], key)
    return cls(**values)


def _convert(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build(tp, value, key + ".")
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path (a non-empty string)")
        return Path(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_kind(value)}")
        return float(value)
    if tp in _SCALARS:
        if type(value) is not tp:
            raise ConfigError(f"{key}: expected {_SCALARS[tp]}, got {_kind(value)}")
        return value
    origin = typing.get_origin(tp)
    if origin in (tuple, list):
        (item,) = typing.get_args(tp)[:1]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_kind(value)}")
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value, key)
    raise TypeError(f"config schema: unsupported type {tp!r} at {key}")  # pragma: no cover


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), "a table" if isinstance(value, dict) else "a list"
    )


# --- writing the commented file ----------------------------------------------------------


def reference() -> list[tuple[str, str, str]]:
    """Every key as (dotted name, default rendered as TOML, documentation)."""
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type[Any], instance: Any, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            value = getattr(instance, f.name) if instance is not None else None
            if dataclasses.is_dataclass(value):
                walk(type(value), value, f"{prefix}{f.name}.")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                rows.append((prefix + f.name, "(required)", f.metadata["doc"]))
            else:
                rows.append((prefix + f.name, _toml(value), f.metadata["doc"]))

    walk(Config, Config(hostname="mail.example.com"), "")
    return rows


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")  # pragma: no cover


def render(config: Config, *, data_dir_text: str) -> str:
    """The commented TOML file for `config` (as `mailhost init` writes it)."""
    out = [
        "# mailhost configuration. Every key is shown with its documentation; keys left",
        "# out take the default given in the README. Reload with SIGHUP (systemctl reload).",
        "",
    ]

    def section(cls: type[Any], instance: Any, prefix: str) -> None:
        nested: list[tuple[str, Any]] = []
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(value):
                nested.append((f.name, value))
                continue
            shown = data_dir_text if prefix == "" and f.name == "data_dir" else _toml(value)
            out.append(f"# {f.metadata['doc']}")
            out.append(f"{f.name} = {shown}")
        for name, value in nested:
            header = prefix + name
            if any(
                not dataclasses.is_dataclass(getattr(value, g.name))
                for g in dataclasses.fields(value)
            ):
                out.append("")
                comment = _field_doc(cls, name)
                if header.startswith("listeners."):
                    comment = LISTENERS[name][2] + f" (standard port {LISTENERS[name][0]})"
                out.append(f"# {comment}")
                out.append(f"[{header}]")
            section(type(value), value, header + ".")

    section(Config, config, "")
    return "\n".join(out) + "\n"


def _field_doc(cls: type[Any], name: str) -> str:
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata["doc"])
    return name  # pragma: no cover


def with_listeners(config: Config, *, address: str, port_offset: int | None) -> Config:
    """`config` with every listener bound to `address`; ports are the standard ones plus
    `port_offset`, or 0 (kernel's choice) when `port_offset` is None."""
    listeners = {
        name: ListenerSettings(
            enabled=True,
            address=address,
            port=0 if port_offset is None else LISTENERS[name][0] + port_offset,
        )
        for name in LISTENERS
    }
    return dataclasses.replace(config, listeners=Listeners(**listeners))
