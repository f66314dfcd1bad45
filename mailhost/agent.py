"""The delivery agent process (transport/agent.py): `python -m mailhost.agent FD CPUS`,
started by the server with its configuration (pickled) on stdin and one end of a socket
pair as FD. It builds the same hub the server has and serves deliveries until the
server closes its end."""

from __future__ import annotations

import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from mailhost import affinity
from mailhost import config as configuration
from mailhost.directory import Directory
from mailhost.eas_policies import EasAdministration
from mailhost.logs import logging_to_stderr
from mailhost.lookups import DirectoryRouting
from mailhost.outbound import DirectoryConnectors, HubQueue
from store.store import Store
from transport.agent import AgentServer
from transport.autoreply import AutoReplier, StoreContacts
from transport.dns import DnsResolver
from transport.hub import Hub
from transport.queue import Queue
from transport.routing import Router


def resolver_for(nameservers: tuple[str, ...]) -> DnsResolver:
    """DNS for MX routing: the configured servers ("address" or "address:port", one port
    for all), or the system's."""
    if not nameservers:
        return DnsResolver()
    hosts, port = [], 53
    for server in nameservers:
        host, colon, tail = server.rpartition(":")
        if colon and tail.isdigit() and (host.count(":") == 0 or host.startswith("[")):
            hosts.append(host.strip("[]"))
            port = int(tail)
        else:
            hosts.append(server)
    return DnsResolver(hosts, port=port)


def build_hub(
    config: configuration.Config,
    directory: Directory,
    store: Store,
    queue: Queue,
    eas: EasAdministration,
    *,
    postmaster: Callable[[], str | None],
    on_enqueued: Callable[[str], None] | None = None,
) -> tuple[Hub, Router]:
    """The hub as the server and the agent both have it: routes through the directory,
    remote copies to the queue, out-of-office answers after local delivery."""
    router = Router(
        DirectoryConnectors(directory),
        resolver_for(config.queue.nameservers),
        mx_port=config.queue.mx_port,
        allow_local_addresses=config.queue.allow_local_mx,
    )
    hub = Hub(
        DirectoryRouting(directory),
        store,
        spool_dir=config.spool_dir,
        queue=HubQueue(queue, router, on_enqueued=on_enqueued),
        postmaster=postmaster,
    )
    hub.after_local = AutoReplier(eas, hub, hostname=config.hostname, known=StoreContacts(store))
    return hub, router


def launcher(
    config: Callable[[], configuration.Config],
) -> Callable[[socket.socket], subprocess.Popen[bytes]]:
    """What the server's AgentClient starts an agent with: this module, with the
    server's configuration of the moment, in a session of its own (a terminal's Ctrl-C
    goes to the server, which stops the agent in turn)."""

    def launch(sock: socket.socket) -> subprocess.Popen[bytes]:
        cpus = affinity.helper_cpus()
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailhost.agent",
                str(sock.fileno()),
                ",".join(map(str, sorted(cpus))) if cpus else "-",
            ],
            stdin=subprocess.PIPE,
            pass_fds=(sock.fileno(),),
            start_new_session=True,
        )
        assert process.stdin is not None
        try:
            process.stdin.write(pickle.dumps(config()))
            process.stdin.close()
        except OSError:
            process.kill()
            process.wait()
            raise
        return process

    return launch


def main(argv: list[str]) -> int:
    # The server decides when the agent stops (it closes its end of the socket); a
    # signal meant for the server (a reload, a stop) does not cut deliveries short here.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    fd, cpus = int(argv[0]), argv[1]
    if cpus != "-":
        affinity.keep_process_on(frozenset(int(cpu) for cpu in cpus.split(",")))
    # From the server that started us, through a pipe only it holds.
    config: configuration.Config = pickle.load(sys.stdin.buffer)  # noqa: S301
    with logging_to_stderr(config.service.log_level):
        directory = Directory(config.directory_path)
        store = Store(config.mailboxes_dir, hostname=config.hostname)
        eas = EasAdministration(config.directory_path)
        queue = Queue(config.queue_dir)
        queue.open(scan=False)
        # The server hears of each entry from the agent; no wake-up through the FIFO,
        # which would cost its runner a rescan of the whole queue.
        queue.add_listener(lambda: None)
        sock = socket.socket(fileno=fd)
        server = AgentServer(sock)
        hub, _router = build_hub(
            config,
            directory,
            store,
            queue,
            eas,
            postmaster=lambda: config.queue.postmaster or None,
            on_enqueued=server.notice_queued,
        )
        try:
            server.run(hub)
        finally:
            sock.close()
            store.close()
            eas.close()
            directory.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
