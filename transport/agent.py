"""The delivery agent: the hub's after-DATA work in a helper process of the server.

CPython runs one thread at a time, so deliveries in worker threads take the CPU from
the event loop that serves every session; the two also hand the GIL back and forth at
every system call. Postfix and Dovecot hand delivery to processes of their own (local,
virtual, lmtp) for the same kind of reason. Here the server's SMTP sessions send each
accepted message to one agent process, which routes the recipients again, writes the
copies (fsynced, as `Hub.deliver` does) and answers with the report; the session replies
250 only after that answer. Measured with Postfix's smtp-source (20 senders, 10 KB
messages, durable delivery, 2 CPUs): 267-297 -> 486-612 messages/s on new connections,
497-523 -> 701-795 on reused ones.

Everything the agent writes is what another process (the CLI) may write too: the store
and the queue already take other processes' changes (journals, locks, the queue's
wake-up). The agent tells the server what it changed, so nothing waits for a rescan:
each queue entry it adds (`queued` notices) and each folder a copy landed in (in the
report), for the server to wake the IMAP IDLE, Ping and Sync-with-Wait sessions that
watch it.

Wire (a Unix socket pair, msgpack values back to back):
- server -> agent: `[request id, content, prefix, sender, recipients, authenticated,
  message id, info]`; content is bytes or the path of a spool file; a recipient is
  `[route key, address as sent, notify, orcpt]`;
- agent -> server: `[request id, report]`, `[request id, None, error text]`, or
  `[0, "queued", queue id]`.

If the agent dies, the messages it held get a temporary failure (the client sends them
again; a copy that had landed is then a duplicate, never a loss, RFC 5321 6.1) and the
next delivery starts a new agent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import msgpack
import trio

from transport.hub import DeliveryReport, Hub, MessageInfo, RoutedRecipient

log = logging.getLogger("mailhost.agent")

# Deliveries the agent runs at once (threads); commits into one folder are grouped, so
# more overlap means fewer fsyncs per message.
AGENT_THREADS = 32
# A new agent is not started sooner than this after the previous one started.
RESTART_INTERVAL = 1.0
# How long a stopping server waits for the agent to finish what it holds before
# killing it.
STOP_TIMEOUT = 10.0
# What one read from the socket takes at most.
READ_SIZE = 1 << 20
# A request id of 0 is a notice.
NOTICE = 0


class AgentUnavailable(Exception):
    """The agent died or could not be started; the message was not (known to be)
    delivered."""


@dataclass(frozen=True, slots=True)
class AgentRecipient:
    key: str  # local@domain, the domain lower-cased: what the hub routes on
    address: str  # as the sender wrote it (quoting kept), for the queue
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    content: bytes | Path
    prefix: bytes
    sender: str | None
    recipients: Sequence[AgentRecipient]
    authenticated: bool
    message_id: str
    info: MessageInfo


def _values(value: Any) -> list[Any]:
    """A dataclass's fields in order: what the other side hands its constructor."""
    return [getattr(value, field.name) for field in dataclasses.fields(value)]


def encode_request(request_id: int, request: DeliveryRequest) -> bytes:
    content = request.content if isinstance(request.content, bytes) else str(request.content)
    return msgpack.packb(
        [
            request_id,
            content,
            request.prefix,
            request.sender,
            [[r.key, r.address, list(r.notify), r.orcpt] for r in request.recipients],
            request.authenticated,
            request.message_id,
            _values(request.info),
        ]
    )


def decode_request(frame: list[Any]) -> tuple[int, DeliveryRequest]:
    request_id, content, prefix, sender, recipients, authenticated, message_id, info = frame
    return request_id, DeliveryRequest(
        content if isinstance(content, bytes) else Path(content),
        prefix,
        sender,
        [
            AgentRecipient(key, addr, tuple(notify), orcpt)
            for key, addr, notify, orcpt in recipients
        ],
        bool(authenticated),
        message_id,
        MessageInfo(*info),
    )


def report_to_wire(report: DeliveryReport) -> list[Any]:
    return _values(report)


def report_from_wire(value: list[Any]) -> DeliveryReport:
    message_id, delivered, queued, temporary, quota, permanent, folders = value
    return DeliveryReport(
        message_id,
        list(delivered),
        list(queued),
        dict(temporary),
        dict(quota),
        dict(permanent),
        [(mailbox, folder) for mailbox, folder in folders],
    )


def route_and_deliver(hub: Hub, request: DeliveryRequest) -> DeliveryReport:
    """Route every recipient again (the directory may have changed since RCPT) and
    deliver; blocking."""
    recipients = [
        RoutedRecipient(
            r.address, hub.route(r.key, authenticated=request.authenticated), r.notify, r.orcpt
        )
        for r in request.recipients
    ]
    return hub.deliver(
        request.content,
        prefix=request.prefix,
        sender=request.sender,
        recipients=recipients,
        message_id=request.message_id,
        info=request.info,
    )


# --- the agent's side ---------------------------------------------------------------------


class AgentServer:
    """Serve requests from the server on `sock` until the server closes its end; every
    request runs in one of `threads` threads. Blocking: the agent process's main thread
    runs it."""

    def __init__(self, sock: socket.socket, *, threads: int = AGENT_THREADS) -> None:
        self._sock = sock
        self._threads = threads
        self._send_lock = threading.Lock()
        self._broken = False

    def notice_queued(self, queue_id: str) -> None:
        """Tell the server about a queue entry this process added (its runner loads it)."""
        self._send([NOTICE, "queued", queue_id])

    def _send(self, value: list[Any]) -> None:
        data = msgpack.packb(value)
        with self._send_lock:
            if self._broken:
                return
            try:
                self._sock.sendall(data)
            except OSError:
                self._broken = True  # the server is gone; what is durable stays so

    def _work(self, hub: Hub, request_id: int, request: DeliveryRequest) -> None:
        try:
            report = route_and_deliver(hub, request)
        except Exception as exc:
            log.exception("delivery of id=%s failed", request.message_id)
            self._send([request_id, None, f"{type(exc).__name__}: {exc}"])
            return
        self._send([request_id, report_to_wire(report)])

    def run(self, hub: Hub) -> None:
        """Deliver with `hub` (whose queue tells `notice_queued` what it adds)."""
        unpacker = msgpack.Unpacker(raw=False)
        with ThreadPoolExecutor(self._threads, thread_name_prefix="deliver") as pool:
            while True:
                try:
                    data = self._sock.recv(READ_SIZE)
                except OSError:
                    break
                if not data:
                    break
                unpacker.feed(data)
                for frame in unpacker:
                    try:
                        request_id, request = decode_request(frame)
                    except (TypeError, ValueError) as exc:
                        log.error("bad request from the server: %s", exc)
                        return
                    pool.submit(self._work, hub, request_id, request)
        # The pool has finished what it held (and answered it) before this returns.


# --- the server's side --------------------------------------------------------------------

Launcher = Callable[[socket.socket], "subprocess.Popen[bytes]"]


class _Agent:
    """One agent process and what the server waits for from it."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.pending: dict[int, _Answer] = {}
        self.send_lock = trio.StrictFIFOLock()
        self.alive = True  # until its socket fails or it is retired
        self.retired = False


class AgentClient:
    """The server's end: starts the agent on first use (and again after it died or
    after `restart`), sends it requests and hands back its reports.

    `on_queued(queue_id)` and `on_stored(report)` run on the event loop for each queue
    entry the agent added and each report with copies stored."""

    def __init__(
        self,
        launch: Launcher,
        nursery: trio.Nursery,
        *,
        on_queued: Callable[[str], None] = lambda queue_id: None,
        on_stored: Callable[[DeliveryReport], None] = lambda report: None,
    ) -> None:
        self._launch = launch
        self._nursery = nursery
        self._on_queued = on_queued
        self._on_stored = on_stored
        self._agent: _Agent | None = None
        self._agents: set[_Agent] = set()
        self._next_id = 0
        self._started_at = -RESTART_INTERVAL
        self._starting = trio.Lock()

    async def deliver(self, request: DeliveryRequest) -> DeliveryReport:
        """Have the agent deliver; raises AgentUnavailable when it died or cannot start.
        Not cancellable once the request is sent (like a worker thread): the message
        may be landing, and the answer must be known."""
        self._next_id += 1
        request_id = self._next_id
        frame = encode_request(request_id, request)
        answer = _Answer()
        while True:
            agent = self._agent
            if agent is None or not agent.alive:
                agent = await self._current()
            lock = agent.send_lock
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()  # another frame is going out
            try:
                if not agent.alive or agent.retired:
                    continue  # replaced while this waited its turn: the next one takes it
                agent.pending[request_id] = answer
                try:
                    sent = _send_nowait(agent.sock, frame)
                    if sent < len(frame):
                        # A frame is sent whole or not at all.
                        with trio.CancelScope(shield=True):
                            await _send_all(agent.sock, memoryview(frame)[sent:])
                except (OSError, trio.ClosedResourceError):
                    # Its reader sees the end and fails what it held; this one was not
                    # taken.
                    agent.pending.pop(request_id, None)
                    raise AgentUnavailable("the delivery agent stopped") from None
                break
            finally:
                lock.release()
        result = await answer.wait()
        if isinstance(result, DeliveryReport):
            return result
        raise AgentUnavailable(result or "the delivery agent stopped")

    async def _current(self) -> _Agent:
        async with self._starting:
            agent = self._agent
            if agent is not None and agent.alive:
                return agent
            wait = self._started_at + RESTART_INTERVAL - time.monotonic()
            if wait > 0:
                await trio.sleep(wait)  # an agent that dies at once is not restarted in a loop
            self._started_at = time.monotonic()
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                process = self._launch(child)
            except OSError as exc:
                parent.close()
                raise AgentUnavailable(f"cannot start the delivery agent: {exc}") from None
            finally:
                child.close()
            parent.setblocking(False)
            agent = _Agent(process, parent)
            self._agent = agent
            self._agents.add(agent)
            self._nursery.start_soon(self._read, agent)
            log.info("delivery agent started (pid %d)", process.pid)
            return agent

    async def _read(self, agent: _Agent) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while True:
                try:
                    data = agent.sock.recv(READ_SIZE)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(agent.sock)
                    continue
                except OSError:
                    break
                if not data:
                    break
                unpacker.feed(data)
                try:
                    for frame in unpacker:
                        self._answer(agent, frame)
                except (ValueError, TypeError, IndexError, KeyError) as exc:
                    # Not what an agent sends: treat it as dead rather than guess.
                    log.error(
                        "delivery agent (pid %d) sent a bad answer: %r", agent.process.pid, exc
                    )
                    break
        except trio.Cancelled:
            # The server is stopping: close() ends the process; nothing waits on it now.
            agent.retired = True
            self._lost(agent)
            raise
        except trio.ClosedResourceError:  # close() closed it under this reader
            agent.retired = True
            self._lost(agent)
            return
        self._lost(agent)
        with trio.CancelScope(shield=True):
            await self._reap(agent)

    def _answer(self, agent: _Agent, frame: list[Any]) -> None:
        request_id = frame[0]
        if request_id == NOTICE:
            if frame[1] == "queued":
                self._on_queued(frame[2])
            return
        # Decoded before the waiter is taken: a malformed answer raises here, and the
        # waiter, still pending, is failed with the rest when the agent is given up.
        value: DeliveryReport | str = (
            str(frame[2]) if frame[1] is None else report_from_wire(frame[1])
        )
        answer = agent.pending.pop(request_id, None)
        if answer is None:
            return
        answer.set(value)
        if isinstance(value, DeliveryReport) and value.folders:
            self._on_stored(value)

    def _lost(self, agent: _Agent) -> None:
        """The agent's socket failed or closed: whatever it held has no answer."""
        if agent.alive and not agent.retired:
            log.error("delivery agent (pid %d) stopped; restarting it", agent.process.pid)
        agent.alive = False
        if self._agent is agent:
            self._agent = None
        for answer in agent.pending.values():
            answer.set(None)
        agent.pending.clear()

    async def _reap(self, agent: _Agent) -> None:
        _close(agent.sock)
        await trio.to_thread.run_sync(_wait_or_kill, agent.process)
        self._agents.discard(agent)
        if agent.process.returncode and not agent.retired:
            status = agent.process.returncode
            how = f"signal {-status}" if status < 0 else f"status {status}"
            log.error("delivery agent (pid %d) ended with %s", agent.process.pid, how)

    def restart(self) -> None:
        """Start a new agent for the next delivery (a reloaded config); the current one
        finishes what it holds and exits."""
        agent = self._agent
        self._agent = None
        if agent is not None:
            self._retire(agent)

    @staticmethod
    def _retire(agent: _Agent) -> None:
        agent.retired = True
        # The agent reads the end of its input, answers what it holds, and exits; its
        # reader here ends with it.
        with contextlib.suppress(OSError):
            agent.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """At shutdown (no delivery runs any more): let every agent finish and exit,
        killing one that takes longer than STOP_TIMEOUT. Blocking."""
        self._agent = None
        for agent in list(self._agents):
            self._retire(agent)
        for agent in list(self._agents):
            _wait_or_kill(agent.process)
            _close(agent.sock)
        self._agents.clear()


def _wait_or_kill(process: subprocess.Popen[bytes]) -> None:
    """Wait for an agent that was told to stop; kill it after STOP_TIMEOUT."""
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.error("delivery agent (pid %d) did not stop; killing it", process.pid)
        process.kill()
        process.wait()


def _close(sock: socket.socket) -> None:
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)  # a task waiting on it gets ClosedResourceError
        sock.close()


class _Answer:
    """The agent's answer to one request, and the task waiting for it: a report, the
    agent's error text, or None when the agent is gone.

    The wait cannot be cancelled (like a delivery in a worker thread, and as a shielded
    scope would make it, without the cost of one per message): once the request is
    sent the message may be landing, and the answer must be known.
    """

    __slots__ = ("_task", "_waiting", "done", "value")

    def __init__(self) -> None:
        self._task = trio.lowlevel.current_task()
        self._waiting = False
        self.done = False
        self.value: DeliveryReport | str | None = None

    def set(self, value: DeliveryReport | str | None) -> None:
        if self.done:
            return
        self.done = True
        self.value = value
        if self._waiting:
            self._waiting = False
            trio.lowlevel.reschedule(self._task)

    async def wait(self) -> DeliveryReport | str | None:
        if not self.done:
            self._waiting = True
            await trio.lowlevel.wait_task_rescheduled(_not_abortable)
        return self.value


def _not_abortable(raise_cancel: Callable[[], NoReturn]) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


def _send_nowait(sock: socket.socket, data: bytes) -> int:
    """As much of `data` as the non-blocking `sock` takes now."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


async def _send_all(sock: socket.socket, data: bytes | memoryview) -> None:
    """The whole of `data` on the non-blocking `sock`, waiting only when it is full."""
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]
