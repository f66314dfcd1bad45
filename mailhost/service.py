"""`mailhost serve`: one trio nursery owns every listener and background task.

Signals:
- SIGTERM / SIGINT: stop accepting, let open sessions finish within the grace
  period, then cut them and exit 0. A second SIGTERM / SIGINT cuts them at once.
- SIGHUP: re-read the config file and the certificate; new connections get them,
  open sessions keep theirs. A bad file is logged and the running settings stay.
With $NOTIFY_SOCKET set, systemd hears READY=1, RELOADING=1 and STOPPING=1.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import trio

from certs.tls import CertificateError, ClientCertificates, TlsProvider
from mailhost import affinity, sdnotify
from mailhost import config as configuration
from mailhost.agent import build_hub, launcher
from mailhost.auth import Authenticator
from mailhost.devices import SqliteDeviceRegistry
from mailhost.directory import Directory
from mailhost.eas_policies import EasAdministration
from mailhost.listeners import Handler, Listener, ListenError, Sessions, bind
from mailhost.logs import logging_to_stderr
from mailhost.lookups import DirectoryRecipients
from mailhost.outbound import StoreLocalDelivery
from protocols import web
from protocols.activesync.app import make_app
from protocols.activesync.commands import default_commands, oof_handler
from protocols.activesync.context import ActiveSyncSettings, MailPorts
from protocols.activesync.notices import HubNotices
from protocols.auth import Account
from protocols.connection import ConnectionInfo, Drain
from protocols.imap.server import ImapSettings, serve_imap
from protocols.imap.shared import shared_state
from protocols.pop3.maildrop import StoreMaildrops
from protocols.pop3.session import MaildropLocks, Pop3Settings, serve_pop3
from protocols.smtp.backend import BackendSettings, HubBackend
from protocols.smtp.session import (
    ClientConnectionLimiter,
    ConnectorKind,
    SmtpSettings,
    serve_smtp,
)
from store.errors import StoreError
from store.store import Store
from transport.agent import AgentClient
from transport.delivery import DeliverySettings, QueueRunner, RetrySchedule
from transport.dkim import DkimError, DkimSigner
from transport.hub import DeliveryReport
from transport.queue import Queue

log = logging.getLogger("mailhost.service")


class ServiceError(Exception):
    """The service cannot start; the message is one line for the operator."""


class Service:
    def __init__(self, config: configuration.Config) -> None:
        self.config = config
        try:
            self.tls = TlsProvider(
                config.certificate_path,
                config.private_key_path,
                client=_client_certificates(config),
            )
        except CertificateError as exc:
            raise ServiceError(f"certificate: {exc}") from None
        self.directory = Directory(config.directory_path)
        self.store = Store(config.mailboxes_dir, hostname=config.hostname)
        self.auth = Authenticator(self.directory, lambda: self.config.auth)
        self.queue = Queue(config.queue_dir)
        # Mobile device policies, access rules and out-of-office settings; the hub answers
        # for users who are out of office once their mail is delivered.
        self.eas = EasAdministration(config.directory_path)
        self.hub, self.router = build_hub(
            config,
            self.directory,
            self.store,
            self.queue,
            self.eas,
            postmaster=lambda: self.config.queue.postmaster or None,
        )
        self.signer = ReloadableSigner(config.dkim_dir, enabled=config.queue.dkim)
        self.runner = QueueRunner(
            self.queue,
            self.router,
            settings=_delivery_settings(config),
            local=StoreLocalDelivery(self.directory, self.store),
            signer=self.signer,
        )
        self.smtp_backend = HubBackend(
            self.hub, self.auth, BackendSettings(hostname=config.hostname)
        )
        # One count of concurrent sessions per client address across the SMTP listeners.
        self.smtp_limiter = ClientConnectionLimiter(config.service.max_connections_per_address)
        self._smtp_settings_cache: dict[str, tuple[configuration.Config, SmtpSettings]] = {}
        self.devices = SqliteDeviceRegistry(
            config.directory_path, recovery_key_path=config.data_dir / "eas-recovery.key"
        )
        self.imap_shared = shared_state(self.store)
        self.pop3_locks = MaildropLocks()
        self.maildrops = StoreMaildrops(self.store)
        self.listeners: list[Listener] = []
        self.agent: AgentClient | None = None
        self._settings_for: configuration.Config | None = None
        self._eas_settings: ActiveSyncSettings | None = None
        self._stop = trio.Event()
        self._root: trio.Nursery | None = None
        self._drain = Drain()
        self._cut = trio.CancelScope()
        self._http_servers: list[web.HttpServer] = []
        self.sessions = Sessions(
            mail_context=self.tls.mail_context,
            http_context=self.tls.http_context,
            handshake_timeout=lambda: self.config.tls.handshake_timeout,
            max_per_peer=lambda: self.config.service.max_connections_per_address,
            drain=self._drain,
        )

    # --- protocol handlers ------------------------------------------------------------

    def _handler(self, name: str) -> tuple[Handler, bool]:
        """The session function for listener `name`, and whether it speaks HTTP."""
        if name in ("https", "http"):
            if name == "http":
                app = web.redirect_app(lambda: self.config.hostname, self._https_port)
            else:
                app = make_app(
                    settings=self._activesync_settings,
                    checker=self.auth,
                    devices=self.devices,
                    policies=self.eas,
                    access=self.eas,
                    notices=HubNotices(self.hub, hostname=self.config.hostname),
                    certificate_accounts=CertificateLogins(self.directory, self.auth),
                    commands=default_commands(
                        recipients=DirectoryRecipients(self.directory),
                        oof=oof_handler(self.eas),
                        store=self.store,
                        hub=self.hub,
                        state_dir=self.config.data_dir / "activesync",
                        hostname=self.config.hostname,
                        max_message_size=self.config.smtp.max_message_size,
                    ),
                    accepted_domain=lambda domain: self.directory.domain(domain) is not None,
                    drain=self._drain,
                )
            server = web.HttpServer(app, secure=name == "https")
            self._http_servers.append(server)
            return server.serve, True
        if name in ("smtp", "submission", "submissions"):
            return functools.partial(self._serve_smtp, name), False
        if name in ("pop3", "pop3s"):
            return self._serve_pop3, False
        if name in ("imap", "imaps"):
            return self._serve_imap, False
        raise AssertionError(f"no handler for listener {name}")  # pragma: no cover

    def _smtp_settings(self, name: str) -> SmtpSettings:
        """The listener's settings, built once per config (a reload makes new ones)."""
        cfg = self.config
        cached = self._smtp_settings_cache.get(name)
        if cached is not None and cached[0] is cfg:
            return cached[1]
        settings = self._build_smtp_settings(name, cfg)
        self._smtp_settings_cache[name] = (cfg, settings)
        return settings

    @staticmethod
    def _build_smtp_settings(name: str, cfg: configuration.Config) -> SmtpSettings:
        return SmtpSettings(
            hostname=cfg.hostname,
            connector=ConnectorKind.DEFAULT if name == "smtp" else ConnectorKind.CLIENT,
            implicit_tls=name == "submissions",
            anonymous_allowed=name == "smtp" and cfg.smtp.anonymous_on_default,
            max_message_size=cfg.smtp.max_message_size,
            max_recipients=cfg.smtp.max_recipients,
            spool_directory=str(cfg.spool_dir),
        )

    async def _serve_smtp(self, name: str, stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        await serve_smtp(
            stream,
            info.peer,
            settings=self._smtp_settings(name),
            backend=self.smtp_backend,
            tls_context=info.tls_context,
            drain=info.drain,
            limiter=self.smtp_limiter,
        )

    async def _serve_imap(self, stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        imap = self.config.imap
        await serve_imap(
            stream,
            info,
            settings=ImapSettings(
                hostname=self.config.hostname,
                plaintext_on_loopback=self.config.auth.plaintext_on_loopback,
                append_limit=imap.append_limit_mb * 1024 * 1024,
                idle_timeout=imap.idle_timeout_minutes * 60,
                autologout_timeout=imap.autologout_minutes * 60,
                commands_per_second=imap.commands_per_second,
                metadata_cache_bytes=imap.metadata_cache_mb * 1024 * 1024,
            ),
            checker=self.auth,
            store=self.store,
            shared=self.imap_shared,
        )

    async def _serve_pop3(self, stream: trio.abc.Stream, info: ConnectionInfo) -> None:
        await serve_pop3(
            stream,
            info,
            settings=Pop3Settings(
                hostname=self.config.hostname,
                plaintext_on_loopback=self.config.auth.plaintext_on_loopback,
            ),
            checker=self.auth,
            maildrops=self.maildrops,
            locks=self.pop3_locks,
        )

    def _activesync_settings(self) -> ActiveSyncSettings:
        cfg = self.config
        eas, auto = cfg.activesync, cfg.autodiscover
        if cfg != self._settings_for:
            port = self._https_port()
            authority = cfg.hostname if port == 443 else f"{cfg.hostname}:{port}"
            self._eas_settings = ActiveSyncSettings(
                external_url=eas.external_url or f"https://{authority}/Microsoft-Server-ActiveSync",
                internal_url=eas.internal_url or None,
                netbios_domain=eas.netbios_domain or None,
                heartbeat_min=eas.heartbeat_min,
                heartbeat_max=eas.heartbeat_max,
                max_request_body=eas.max_request_mb * 1024 * 1024,
                max_concurrent_requests=eas.max_concurrent_requests,
                max_devices_per_user=eas.max_devices_per_user,
                mail_host=auto.mail_host or cfg.hostname,
                mail_ports=MailPorts(
                    imaps=auto.imaps_port or self._port("imaps"),
                    pop3s=auto.pop3s_port or self._port("pop3s"),
                    submissions=auto.submissions_port or self._port("submissions"),
                    submission=auto.submission_port or self._port("submission"),
                ),
                organization=auto.organization,
                client_certificates=eas.client_certificates,
            )
            self._settings_for = cfg
        assert self._eas_settings is not None
        return self._eas_settings

    def _port(self, name: str) -> int | None:
        for listener in self.listeners:
            if listener.name == name and listener.sockets:
                return listener.addresses()[0][1]
        return None  # not served here: left out of autoconfig and profiles

    def _https_port(self) -> int:
        for listener in self.listeners:
            if listener.name == "https" and listener.sockets:
                return listener.addresses()[0][1]
        return 443

    # --- running ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if swept := self.hub.sweep_spool():
            log.info("removed %d unfinished file(s) a stop left in the spool", swept)
        await self._bind()
        _place_threads(self.config.service.single_cpu)
        try:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
                async with trio.open_nursery() as root:
                    self._root = root
                    root.start_soon(self._signals, signals)
                    await self._serve(task_status)
                    root.cancel_scope.cancel()
        finally:
            self._close_sockets()
            self.config.status_path.unlink(missing_ok=True)
            self.store.close()
            self.devices.close()
            self.eas.close()
            self.directory.close()
        log.info("stopped")

    async def _bind(self) -> None:
        for name, settings in self.config.listeners.items():
            if not settings.enabled:
                continue
            handler, http = self._handler(name)
            tls = configuration.LISTENERS[name][1]
            try:
                sockets = await bind(name, settings.address, settings.port)
            except ListenError as exc:
                self._close_sockets()
                raise ServiceError(str(exc)) from None
            self.listeners.append(Listener(name, tls, http, sockets, handler))
        if problems := self._activesync_settings().errors():
            self._close_sockets()
            raise ServiceError(f"config {self.config.source}: activesync: {problems[0]}")

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as background:
            # The queue is loaded before the first SMTP session can hand it a message.
            await background.start(self.runner.run)
            # Started with the first message to deliver.
            self.agent = AgentClient(
                launcher(lambda: self.config),
                background,
                on_queued=functools.partial(self._adopt, background),
                on_stored=functools.partial(self._stored, background),
            )
            self._use_agent()
            try:
                await self._serve_sessions(task_status)
            finally:
                background.cancel_scope.cancel()
                self.smtp_backend.agent = None
                self.agent.close()

    def _use_agent(self) -> None:
        self.smtp_backend.agent = self.agent if self.config.smtp.delivery_agent else None

    def _adopt(self, nursery: trio.Nursery, queue_id: str) -> None:
        """The agent queued a message (a remote recipient, an out-of-office answer)."""
        nursery.start_soon(trio.to_thread.run_sync, self._adopt_entry, queue_id)

    def _adopt_entry(self, queue_id: str) -> None:
        try:
            self.queue.adopt(queue_id)
        except Exception:  # the entry is on disk: the runner's next rescan finds it
            log.exception("loading queue entry %s the delivery agent added", queue_id)

    def _stored(self, nursery: trio.Nursery, report: DeliveryReport) -> None:
        """The agent stored copies: whoever waits on those folders (IMAP IDLE, EAS Ping
        and Sync with Wait) hears of them from this process's index catching up."""
        for mailbox_id, folder_id in report.folders:
            if self.store.bus.watched(mailbox_id):
                nursery.start_soon(trio.to_thread.run_sync, self._catch_up, mailbox_id, folder_id)

    def _catch_up(self, mailbox_id: str, folder_id: str) -> None:
        try:
            self.store.open_mailbox(mailbox_id, create=False).folder_by_id(folder_id).refresh()
        except StoreError as exc:  # removed meanwhile; the watchers find out themselves
            log.debug("catching up with %s/%s: %s", mailbox_id, folder_id, exc)

    async def _serve_sessions(self, task_status: trio.TaskStatus[None]) -> None:
        with self._cut:
            async with trio.open_nursery() as sessions:
                async with trio.open_nursery() as acceptors:
                    for listener in self.listeners:
                        acceptors.start_soon(self.sessions.accept_loop, listener, sessions)
                    if interval := sdnotify.watchdog_interval():
                        acceptors.start_soon(_watchdog, interval)
                    self._write_status()
                    for listener in self.listeners:
                        for host, port in listener.addresses():
                            log.info("listening: %s on %s:%d", listener.name, host, port)
                    sdnotify.ready(f"serving {len(self.listeners)} listeners")
                    task_status.started()
                    await self._stop.wait()
                    acceptors.cancel_scope.cancel()
                sdnotify.stopping()
                self._close_sockets()
                grace = self.config.service.shutdown_grace
                log.info(
                    "stopping: %d open session(s) get %.0f s to finish", self.sessions.open, grace
                )
                self._drain.start()
                for server in self._http_servers:
                    await server.drain()
                deadline = trio.current_time() + grace
                sessions.cancel_scope.deadline = deadline
                # A session stuck in a shielded send (HTTP) ignores the deadline: at the
                # deadline every socket still open is closed under it.
                assert self._root is not None
                self._root.start_soon(self._abort_at, deadline)

    async def _signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                self.reload()
            elif not self._stop.is_set():
                log.info("received %s", signal.Signals(signum).name)
                self._stop.set()
            else:
                log.info(
                    "received %s again: closing open sessions now", signal.Signals(signum).name
                )
                self._cut.cancel()
                self.sessions.abort_all()

    async def _abort_at(self, deadline: float) -> None:
        await trio.sleep_until(deadline)
        if cut := self.sessions.abort_all():
            log.info("grace period over: closed %d session(s)", cut)

    def reload(self) -> None:
        sdnotify.reloading()
        try:
            new = configuration.load(self.config.source)
        except configuration.ConfigError as exc:
            log.error("reload: %s; keeping the running configuration", exc)
            sdnotify.ready()
            return
        try:
            self.tls.reload(
                new.certificate_path, new.private_key_path, client=_client_certificates(new)
            )
        except CertificateError as exc:
            log.error("reload: certificate: %s; keeping the running certificate", exc)
        self.signer.reload()
        if new.listeners != self.config.listeners or new.data_dir != self.config.data_dir:
            log.warning("reload: changes to listeners and data_dir take effect after a restart")
        self.config = dataclasses.replace(
            new, listeners=self.config.listeners, data_dir=self.config.data_dir
        )
        logging.getLogger("mailhost").setLevel(self.config.service.log_level.upper())
        _place_threads(self.config.service.single_cpu)
        if self.agent is not None:
            self.agent.restart()  # the next delivery starts an agent with the new config
            self._use_agent()
        log.info("reloaded configuration and certificate")
        sdnotify.ready()

    def _close_sockets(self) -> None:
        for listener in self.listeners:
            for sock in listener.sockets:
                sock.socket.close()

    def _write_status(self) -> None:
        status = {
            "pid": os.getpid(),
            "hostname": self.config.hostname,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "listeners": {
                listener.name: [f"{host}:{port}" for host, port in listener.addresses()]
                for listener in self.listeners
            },
        }
        path = self.config.status_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        tmp.replace(path)


def _client_certificates(config: configuration.Config) -> ClientCertificates:
    """What the https listener asks of clients (activesync.client_certificates)."""
    if config.activesync.client_certificates == "ignore":
        return ClientCertificates()
    return ClientCertificates(request=True, ca_file=config.client_ca_path)


class CertificateLogins:
    """`CertificateAccounts`: a client certificate's e-mail address or UPN names a user
    (any of their addresses, or their login name)."""

    def __init__(self, directory: Directory, auth: Authenticator) -> None:
        self._directory = directory
        self._auth = auth

    def account_for_identity(self, identity: str) -> Account | None:
        user = self._directory.user_by_address(identity) or self._directory.user_for_login(identity)
        return None if user is None else self._auth.account(user)


def _delivery_settings(config: configuration.Config) -> DeliverySettings:
    queue = config.queue
    return DeliverySettings(
        hostname=config.hostname,
        schedule=RetrySchedule(
            minimal_backoff=queue.minimal_backoff,
            maximal_backoff=queue.maximal_backoff,
            lifetime=queue.lifetime_hours * 3600,
            delay_warning=queue.delay_warning_hours * 3600,
        ),
        max_connections=queue.max_connections,
        max_per_destination=queue.max_per_destination,
        max_active_bytes=queue.max_active_mib * 1024 * 1024,
        postmaster=queue.postmaster or None,
    )


class ReloadableSigner:
    """DKIM keys from the data folder, re-read on SIGHUP (after `domain dkim generate`)."""

    def __init__(self, folder: Path, *, enabled: bool) -> None:
        self._folder = folder
        self._enabled = enabled
        self._signer: DkimSigner | None = None
        self.reload()

    def reload(self) -> None:
        try:
            self._signer = DkimSigner.from_folder(self._folder) if self._enabled else None
        except (OSError, ValueError, DkimError) as exc:
            log.error("DKIM keys in %s: %s; signing is off until fixed", self._folder, exc)
            self._signer = None

    def sign(self, message: bytes, *, domain: str | None = None) -> bytes:
        if self._signer is None:
            return message
        return self._signer.sign(message, domain=domain)


async def _watchdog(interval: float) -> None:
    while True:
        sdnotify.notify("WATCHDOG=1")
        await trio.sleep(interval)


# The event loop gives up the GIL at every socket call; worker threads (deliveries,
# password hashes) hold it for up to the switch interval (5 ms by default) before the
# loop gets it back, which turns a 10 us send() into milliseconds under load.
SWITCH_INTERVAL = 0.0005
# The cyclic garbage collector's thresholds (CPython's default is 700, 10, 10). A server
# allocates in bursts (a FETCH of 100,000 envelopes, a folder's index): with the default,
# the first ENVELOPE fill of a 100k folder ran a young collection every 700 objects and
# took 4.5 s; with these, 2.6 s. What the process built while starting is frozen out of
# the collections altogether (gc.freeze).
GC_THRESHOLDS: Final = (20_000, 20, 20)


def _place_threads(single_cpu: bool) -> None:
    cpu = affinity.apply(single_cpu)
    if cpu is not None:
        log.info("threads kept on CPU %d (service.single_cpu)", cpu)


def serve(config_path: Path) -> int:
    """Run the service until SIGTERM; the CLI's `serve`."""
    config = configuration.load(config_path)
    sys.setswitchinterval(SWITCH_INTERVAL)
    with logging_to_stderr(config.service.log_level):
        service = Service(config)
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        trio.run(service.run)
    return 0
