"""aiosmtpd servers on 127.0.0.1 (port 0) playing remote MXes and smart hosts in tests:
they record what they receive and can be told to refuse or delay."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]
    rcpt_options: list[str]
    tls: bool
    auth: str | None


@dataclass
class SinkBehaviour:
    """Replies a sink gives instead of accepting. Lists are used up one per attempt."""

    rcpt: dict[str, list[str]] = field(default_factory=dict)
    data: list[str] = field(default_factory=list)
    mail: list[str] = field(default_factory=list)


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sink.ehlos += 1
        session.host_name = hostname
        return [r for r in responses if r[4:].split(" ")[0] not in self.sink.hidden]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.sink.behaviour.mail:
            return self.sink.behaviour.mail.pop(0)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        replies = self.sink.behaviour.rcpt.get(address)
        if replies:
            return (
                replies.pop(0) if len(replies) > 1 or not replies[0].startswith("5") else replies[0]
            )
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.sink.delay:
            await asyncio.sleep(self.sink.delay)
        if self.sink.behaviour.data:
            return self.sink.behaviour.data.pop(0)
        auth = session.auth_data.login.decode() if session.authenticated else None
        self.sink.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.rcpt_tos),
                envelope.original_content or envelope.content,
                list(envelope.mail_options),
                list(envelope.rcpt_options),
                session.ssl is not None,
                auth,
            )
        )
        return "250 2.0.0 queued"


class _EphemeralController(Controller):
    """aiosmtpd's Controller on port 0: read the chosen port before the self-test connect."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


class Sink:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, **smtp_options: Any) -> None:
        self.messages: list[Received] = []
        self.behaviour = SinkBehaviour()
        self.ehlos = 0
        self.hidden: set[str] = set()  # EHLO keywords not to advertise
        self.delay = 0.0  # seconds before answering the end of DATA
        self.controller = _EphemeralController(
            _Handler(self), hostname=host, port=port, **smtp_options
        )

    def start(self) -> Sink:
        try:
            self.controller.start()
        except BaseException:
            # A failed start (the address taken) leaves aiosmtpd's event loop open.
            self.controller.loop.close()
            raise
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpt_tos]


def authenticator(username: str, password: str) -> Callable[..., AuthResult]:
    def check(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    return check
