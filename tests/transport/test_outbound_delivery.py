"""End-to-end outbound delivery: the queue runner against aiosmtpd servers on 127.0.0.1
playing the remote MXes and smart hosts, with DNS answered from a table."""

from __future__ import annotations

import email
import email.policy
import errno
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import TypeVar

import pytest
import trio
from sinks import Sink, authenticator

from transport.delivery import RetrySchedule
from transport.dns import FakeResolver
from transport.envelope import (
    BodyType,
    DsnReturn,
    EntryKind,
    Notify,
    OriginalRecipient,
    RecipientSpec,
    RecipientState,
)
from transport.queue import Queue
from transport.routing import SendConnector, SmartHost, SmartHostAuth, TlsMode

MX = SendConnector(name="Internet", address_spaces=("*",))
MESSAGE = (
    b"From: Alice <alice@local.test>\r\nTo: bob@remote.test\r\nSubject: hello\r\n"
    b"Message-ID: <m1@local.test>\r\n\r\nHello Bob.\r\n"
)
ALICE = "alice@local.test"
BOB = "bob@remote.test"
# Tries at finding a port number free on two loopback addresses at once.
SAME_PORT_ATTEMPTS = 20
T = TypeVar("T")


def mx_resolver(*records: tuple[int, str, str], domain: str = "remote.test") -> FakeResolver:
    """MX records (preference, host, address) for `domain`."""
    return FakeResolver(
        mx={domain: [(p, h) for p, h, _a in records]}, a={h: [a] for _p, h, a in records}
    )


def parse(message: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def status_blocks(dsn: EmailMessage) -> list:
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = list(dsn.iter_parts())
    assert parts[1].get_content_type() == "message/delivery-status"
    return parts[1].get_payload()


def enqueue(h, message: bytes = MESSAGE, sender: str | None = ALICE, *rcpts: str, **kw):
    specs = [r if isinstance(r, RecipientSpec) else RecipientSpec(r) for r in rcpts or (BOB,)]
    return h.queue.enqueue(message, sender=sender, recipients=specs, **kw)


async def test_delivers_via_mx(make_sink, harness) -> None:
    sink = make_sink()
    async with harness(
        mx_resolver((10, "mx1.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h)
        await h.settle()
        assert h.queue.statistics().messages == 0
    [received] = sink.messages
    assert received.mail_from == ALICE
    assert received.rcpt_tos == [BOB]
    assert received.content.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
    assert not received.tls


async def _sink_and_same_port_on_127_0_0_2(make_sink, bind: Callable[[int], Awaitable[T]]):
    """A sink on 127.0.0.1 and what `bind` puts on the same port number on 127.0.0.2 (the
    harness has one MX port). The number is free on 127.0.0.1 when the kernel picks it;
    on 127.0.0.2 another test may hold it, and then another number is tried."""
    for _ in range(SAME_PORT_ATTEMPTS):
        sink = make_sink(host="127.0.0.1")
        try:
            return sink, await bind(sink.port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
    pytest.fail("no port number free on both 127.0.0.1 and 127.0.0.2")


async def test_lowest_preference_mx_is_used_first(make_sink, harness) -> None:
    async def primary_mx(port: int) -> Sink:
        return make_sink(host="127.0.0.2", port=port)

    backup, primary = await _sink_and_same_port_on_127_0_0_2(make_sink, primary_mx)
    resolver = mx_resolver(
        (20, "backup.remote.test", "127.0.0.1"), (10, "mx.remote.test", "127.0.0.2")
    )
    async with harness(resolver, (MX,), mx_port=primary.port) as h:
        enqueue(h)
        await h.settle()
    assert len(primary.messages) == 1
    assert backup.messages == []


async def test_next_mx_when_the_first_refuses_the_connection(make_sink, harness, caplog) -> None:
    backup = make_sink()
    resolver = mx_resolver(
        (10, "dead.remote.test", "127.0.0.3"), (20, "backup.remote.test", "127.0.0.1")
    )
    async with harness(resolver, (MX,), mx_port=backup.port) as h:
        enqueue(h)
        await h.settle()
    assert backup.recipients() == [BOB]
    assert "dead.remote.test[127.0.0.3]" in caplog.text
    assert "status=sent" in caplog.text


async def test_next_mx_when_the_first_greets_with_554(make_sink, harness) -> None:
    refusals = 0

    async def refuse(stream: trio.SocketStream) -> None:
        nonlocal refusals
        refusals += 1
        await stream.send_all(b"554 go away\r\n")
        await stream.aclose()

    async def rude_mx(port: int) -> list[trio.SocketListener]:
        return await trio.open_tcp_listeners(port, host="127.0.0.2")

    backup, listeners = await _sink_and_same_port_on_127_0_0_2(make_sink, rude_mx)
    resolver = mx_resolver(
        (10, "rude.remote.test", "127.0.0.2"), (20, "ok.remote.test", "127.0.0.1")
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, refuse, listeners)
        async with harness(resolver, (MX,), mx_port=backup.port) as h:
            enqueue(h)
            await h.settle()
        nursery.cancel_scope.cancel()
    assert refusals == 1
    assert backup.recipients() == [BOB]


async def test_no_mx_falls_back_to_the_address_record(make_sink, harness) -> None:
    sink = make_sink()
    resolver = FakeResolver(a={"remote.test": ["127.0.0.1"]})
    async with harness(resolver, (MX,), mx_port=sink.port) as h:
        enqueue(h)
        await h.settle()
    assert sink.recipients() == [BOB]


async def test_servfail_on_mx_defers_without_a_fallback(make_sink, harness) -> None:
    sink = make_sink()
    resolver = FakeResolver(a={"remote.test": ["127.0.0.1"]}, fail={"remote.test": "MX"})
    async with harness(resolver, (MX,), mx_port=sink.port) as h:
        entry = enqueue(h)
        await h.settle()
        stored = h.queue.get(entry.id)
    assert sink.messages == []
    assert stored.recipients[0].state is RecipientState.DEFERRED
    assert stored.recipients[0].diagnostic.status == "4.4.3"
    assert ("remote.test", "A") not in resolver.queries


async def test_null_mx_fails_at_once_with_5_1_10(harness) -> None:
    resolver = FakeResolver(mx={"remote.test": [(0, ".")]})
    async with harness(resolver, (MX,)) as h:
        enqueue(h)
        await h.settle()
        assert h.queue.statistics().messages == 0
    [(to, dsn)] = h.local.delivered
    assert to == ALICE
    [_message, recipient] = status_blocks(parse(dsn))
    assert recipient["Status"] == "5.1.10"
    assert recipient["Action"] == "failed"


async def test_smart_host_with_auth_over_required_tls(
    make_sink, harness, server_tls, ca_file
) -> None:
    sink = make_sink(
        tls_context=server_tls,
        require_starttls=True,
        auth_require_tls=True,
        authenticator=authenticator("relay-user", "s3cret"),
        auth_required=True,
    )
    connector = SendConnector(
        name="Relay",
        address_spaces=("*",),
        smart_hosts=(SmartHost("127.0.0.1", sink.port),),
        auth=SmartHostAuth("relay-user", "s3cret"),
        tls=TlsMode.REQUIRED,
        verify_certificate=True,
        fqdn="out.local.test",
    )
    async with harness(FakeResolver(), (connector,), ca_file=ca_file) as h:
        enqueue(h)
        await h.settle()
        assert h.queue.statistics().messages == 0
    [received] = sink.messages
    assert received.tls
    assert received.auth == "relay-user"


async def test_required_tls_without_starttls_defers(make_sink, harness) -> None:
    sink = make_sink()
    connector = SendConnector(
        name="Relay", smart_hosts=(SmartHost("127.0.0.1", sink.port),), tls=TlsMode.REQUIRED
    )
    async with harness(FakeResolver(), (connector,)) as h:
        entry = enqueue(h)
        await h.settle()
        stored = h.queue.get(entry.id)
    assert sink.messages == []
    assert stored.recipients[0].diagnostic.status == "4.7.5"


async def test_opportunistic_tls_to_mx(make_sink, harness, server_tls) -> None:
    sink = make_sink(tls_context=server_tls)
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h)
        await h.settle()
    assert sink.messages[0].tls


async def test_wrong_credentials_defer(make_sink, harness, server_tls, ca_file) -> None:
    sink = make_sink(
        tls_context=server_tls, authenticator=authenticator("u", "right"), auth_required=True
    )
    connector = SendConnector(
        name="Relay",
        smart_hosts=(SmartHost("127.0.0.1", sink.port),),
        auth=SmartHostAuth("u", "wrong"),
        tls=TlsMode.REQUIRED,
    )
    async with harness(FakeResolver(), (connector,), ca_file=ca_file) as h:
        entry = enqueue(h)
        await h.settle()
        stored = h.queue.get(entry.id)
    assert stored.recipients[0].state is RecipientState.DEFERRED
    assert "authentication failed" in stored.recipients[0].diagnostic.text


async def test_temporary_failure_then_success_on_schedule(make_sink, harness, caplog) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["451 4.7.1 greylisted, come back later"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        entry = enqueue(h)
        await h.settle()
        stored = h.queue.get(entry.id)
        assert stored.attempts == 1
        assert stored.next_attempt == pytest.approx(entry.arrival + 300)
        [rcpt] = stored.recipients
        assert rcpt.state is RecipientState.DEFERRED
        assert rcpt.diagnostic.status == "4.7.1"
        assert "status=deferred" in caplog.text
        await h.advance(299)
        assert sink.messages == []
        await h.advance(1)
        assert h.queue.statistics().messages == 0
    assert sink.recipients() == [BOB]
    assert h.local.delivered == []  # no DSN: NOTIFY default has no SUCCESS


async def test_backoff_doubles_up_to_the_cap(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["451 4.3.0 later"] * 20
    schedule = RetrySchedule(delay_warning=0)
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")),
        (MX,),
        mx_port=sink.port,
        schedule=schedule,
    ) as h:
        entry = enqueue(h)
        await h.settle()
        waits = []
        for _ in range(6):
            stored = h.queue.get(entry.id)
            wait = stored.next_attempt - h.clock.now()
            waits.append(round(wait))
            await h.advance(wait)
    assert waits == [300, 600, 1200, 2400, 4000, 4000]


async def test_permanent_failure_returns_a_dsn(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["550 5.1.1 <bob@remote.test>: no such user"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        entry = enqueue(
            h,
            MESSAGE,
            ALICE,
            RecipientSpec(BOB, orcpt=OriginalRecipient("rfc822", "bobby@remote.test")),
            envid="env-42",
        )
        await h.settle()
        assert h.queue.statistics().messages == 0
    [(to, raw)] = h.local.delivered
    assert to == ALICE
    dsn = parse(raw)
    assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.local.test"
    assert dsn["To"] == ALICE
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["In-Reply-To"] == "<m1@local.test>"
    per_message, recipient = status_blocks(dsn)
    assert per_message["Reporting-MTA"] == "dns; mail.local.test"
    assert per_message["Original-Envelope-Id"] == "env-42"
    assert per_message["Arrival-Date"]
    assert recipient["Final-Recipient"] == f"rfc822; {BOB}"
    assert recipient["Original-Recipient"] == "rfc822;bobby@remote.test"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert recipient["Remote-MTA"].startswith("dns; mx.remote.test[127.0.0.1]")
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@remote.test>: no such user"
    assert recipient["Last-Attempt-Date"]
    returned = list(dsn.iter_parts())[2]
    assert returned.get_content_type() == "text/rfc822-headers"  # RET not given: headers
    assert b"Subject: hello" in returned.get_payload(decode=True)
    assert b"Hello Bob." not in raw
    assert entry.id in raw.decode()


async def test_partial_failure_bounces_only_the_failed_recipient(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt["carol@remote.test"] = ["550 5.1.1 unknown"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h, MESSAGE, ALICE, BOB, "carol@remote.test", RecipientSpec("dave@remote.test"))
        await h.settle()
        assert h.queue.statistics().messages == 0
    assert sorted(sink.recipients()) == [BOB, "dave@remote.test"]
    [(_to, raw)] = h.local.delivered
    [_m, recipient] = status_blocks(parse(raw))
    assert recipient["Final-Recipient"] == "rfc822; carol@remote.test"


async def test_full_return_is_truncated(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["554 5.7.1 rejected"]
    big = MESSAGE + b"x" * 80 + b"\r\n" + (b"y" * 70 + b"\r\n") * 2000
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")),
        (MX,),
        mx_port=sink.port,
        bounce_size_limit=5000,
    ) as h:
        enqueue(h, big, ALICE, BOB, ret=DsnReturn.FULL)
        await h.settle()
    [(_to, raw)] = h.local.delivered
    returned = list(parse(raw).iter_parts())[2]
    assert returned.get_content_type() == "message/rfc822"
    inner = returned.get_payload()[0]
    assert inner["Subject"] == "hello"
    assert len(raw) < 5000 + 4000


async def test_notify_never_and_success(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt["carol@remote.test"] = ["550 5.1.1 unknown"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(
            h,
            MESSAGE,
            ALICE,
            RecipientSpec("carol@remote.test", notify=frozenset({Notify.NEVER})),
            RecipientSpec(BOB, notify=frozenset({Notify.SUCCESS})),
        )
        await h.settle()
        assert h.queue.statistics().messages == 0
    # aiosmtpd offers no DSN extension: we report "relayed" for the SUCCESS request.
    [(_to, raw)] = h.local.delivered
    [_m, recipient] = status_blocks(parse(raw))
    assert recipient["Action"] == "relayed"
    assert recipient["Final-Recipient"] == f"rfc822; {BOB}"


async def test_delay_notice_once_after_the_warning_time(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["450 4.2.0 mailbox busy"] * 10
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        entry = enqueue(h)
        await h.settle()
        assert h.local.delivered == []
        await h.advance(4 * 3600)
        [(to, raw)] = h.local.delivered
        assert to == ALICE
        dsn = parse(raw)
        assert dsn["Subject"] == "Delayed Mail (still being retried)"
        [_m, recipient] = status_blocks(dsn)
        assert recipient["Action"] == "delayed"
        assert recipient["Status"] == "4.2.0"
        assert recipient["Will-Retry-Until"]
        assert h.queue.get(entry.id).delay_notified
        await h.advance(4000)
        assert len(h.local.delivered) == 1  # one warning only
        assert h.queue.statistics().messages == 1


async def test_expiry_after_the_lifetime(make_sink, harness, caplog) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["451 4.3.0 try later"] * 100
    schedule = RetrySchedule(lifetime=3600, delay_warning=0)
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")),
        (MX,),
        mx_port=sink.port,
        schedule=schedule,
    ) as h:
        entry = enqueue(h)
        await h.settle()
        for _ in range(10):
            if h.queue.statistics().messages == 0:
                break
            stored = h.queue.get(entry.id)
            assert stored.next_attempt <= entry.arrival + 3600  # the last try at expiry
            await h.advance(stored.next_attempt - h.clock.now())
        assert h.queue.statistics().messages == 0
    [(_to, raw)] = h.local.delivered
    [_m, recipient] = status_blocks(parse(raw))
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "4.4.7"
    assert "451 4.3.0 try later" in recipient["Diagnostic-Code"]
    assert "status=expired" in caplog.text


async def test_no_bounce_for_the_null_sender(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["550 5.1.1 unknown"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port, postmaster=None
    ) as h:
        enqueue(h, MESSAGE, None, BOB)
        await h.settle()
        assert h.queue.statistics().messages == 0
    assert h.local.delivered == []


async def test_double_bounce_goes_to_the_postmaster_once(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["550 5.1.1 unknown"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h, MESSAGE, None, BOB)
        enqueue(h, MESSAGE, None, BOB, kind=EntryKind.DOUBLE_BOUNCE)
        await h.settle()
        assert h.queue.statistics().messages == 0
    [(to, raw)] = h.local.delivered
    assert to == "postmaster@local.test"
    assert parse(raw)["To"] == "postmaster@local.test"


async def test_dsn_for_a_remote_sender_goes_through_the_queue(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["550 5.1.1 unknown"]
    resolver = FakeResolver(
        mx={"remote.test": [(10, "mx.remote.test")], "elsewhere.test": [(10, "mx.elsewhere.test")]},
        a={"mx.remote.test": ["127.0.0.1"], "mx.elsewhere.test": ["127.0.0.1"]},
    )
    async with harness(resolver, (MX,), mx_port=sink.port) as h:
        enqueue(h, MESSAGE, "zoe@elsewhere.test", BOB)
        await h.settle()
        assert h.queue.statistics().messages == 0
    [dsn] = sink.messages
    assert dsn.mail_from == "<>"
    assert dsn.rcpt_tos == ["zoe@elsewhere.test"]
    assert parse(dsn.content).get_content_type() == "multipart/report"


async def test_dsn_to_a_local_mailbox_retried_when_delivery_fails(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["550 5.1.1 unknown"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        h.local.fail_temporarily = 2  # the DSN hand-off, then its first queued attempt
        enqueue(h)
        await h.settle()
        [queued] = h.queue.entries()
        assert queued.kind is EntryKind.DSN and queued.sender is None
        assert queued.recipients[0].local
        await h.advance(300)
        assert h.queue.statistics().messages == 0
    [(to, _raw)] = h.local.delivered
    assert to == ALICE


async def test_smuggled_end_of_data_stays_inside_one_message(make_sink, harness) -> None:
    sink = make_sink()
    body = (
        b"Subject: smuggle\r\n\r\nfirst\n.\r\nMAIL FROM:<evil@remote.test>\r\n"
        b"RCPT TO:<victim@remote.test>\r\nDATA\r\nsmuggled\r\n.\r\nlast\r.\rend\r\n"
    )
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h, body, ALICE, BOB)
        await h.settle()
    [received] = sink.messages
    assert received.rcpt_tos == [BOB]
    assert b"MAIL FROM:<evil@remote.test>" in received.content
    assert b"\r\n.\r\nMAIL FROM" in received.content  # the dot line arrived as text
    assert b"\n" not in received.content.replace(b"\r\n", b"")
    assert b"\r" not in received.content.replace(b"\r\n", b"")


async def test_one_connection_carries_several_messages(make_sink, harness) -> None:
    sink = make_sink()
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")),
        (MX,),
        mx_port=sink.port,
        max_per_destination=1,
    ) as h:
        async with trio.open_nursery() as nursery:
            for i in range(6):
                message = MESSAGE.replace(b"<m1@", f"<m{i}@".encode())
                nursery.start_soon(
                    trio.to_thread.run_sync,
                    lambda m=message: h.queue.enqueue(
                        m, sender=ALICE, recipients=[RecipientSpec(BOB)]
                    ),
                )
        await h.settle()
    assert len(sink.messages) == 6
    assert sink.ehlos < 6  # connections were reused (RSET between messages)


async def test_enqueue_from_a_worker_thread_wakes_the_runner(make_sink, harness) -> None:
    sink = make_sink()
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        await trio.to_thread.run_sync(
            lambda: h.queue.enqueue(MESSAGE, sender=ALICE, recipients=[RecipientSpec(BOB)])
        )
        await h.settle()
    assert sink.recipients() == [BOB]


async def test_smtputf8_address_not_sent_to_a_server_without_it(make_sink, harness) -> None:
    sink = make_sink()
    sink.hidden.add("SMTPUTF8")
    resolver = mx_resolver((10, "mx.remote.test", "127.0.0.1"))
    async with harness(resolver, (MX,), mx_port=sink.port) as h:
        enqueue(h, MESSAGE, ALICE, "bjørn@remote.test", BOB, smtputf8=True)
        await h.settle()
    assert sink.recipients() == [BOB]
    [(_to, raw)] = h.local.delivered
    [_m, recipient] = status_blocks(parse(raw))
    assert recipient["Status"] == "5.6.7"
    assert recipient["Final-Recipient"] == "utf-8; bjørn@remote.test"


async def test_smtputf8_address_to_a_server_with_it(make_sink, harness) -> None:
    sink = make_sink(enable_SMTPUTF8=True)
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h, MESSAGE, ALICE, "bjørn@remote.test", smtputf8=True)
        await h.settle()
    [received] = sink.messages
    assert received.rcpt_tos == ["bjørn@remote.test"]
    assert "SMTPUTF8" in received.mail_options


async def test_size_limits(make_sink, harness) -> None:
    sink = make_sink(data_size_limit=100)
    small = SendConnector(name="Small", address_spaces=("small.test",), max_message_size=50)
    resolver = FakeResolver(
        mx={"remote.test": [(10, "mx.remote.test")], "small.test": [(10, "mx.remote.test")]},
        a={"mx.remote.test": ["127.0.0.1"]},
    )
    async with harness(resolver, (MX, small), mx_port=sink.port) as h:
        enqueue(h, MESSAGE, ALICE, BOB, "eve@small.test")
        await h.settle()
        assert h.queue.statistics().messages == 0
    assert sink.messages == []
    [(_to, raw)] = h.local.delivered
    statuses = sorted(b["Status"] for b in status_blocks(parse(raw))[1:])
    assert statuses == ["5.3.4", "5.3.4"]


async def test_eight_bit_body_announced(make_sink, harness) -> None:
    sink = make_sink()
    message = MESSAGE.replace(b"Hello Bob.", "Grüße".encode())
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h, message)
        await h.settle()
    assert "BODY=8BITMIME" in sink.messages[0].mail_options
    assert "Grüße".encode() in sink.messages[0].content


async def test_no_connector_defers_with_4_4_4(harness) -> None:
    only = SendConnector(name="Partner", address_spaces=("partner.test",))
    async with harness(FakeResolver(), (only,)) as h:
        entry = enqueue(h)
        await h.settle()
        stored = h.queue.get(entry.id)
    assert stored.recipients[0].diagnostic.status == "4.4.4"


async def test_hold_release_retry_and_delete(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["451 4.3.0 later"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        first = enqueue(h)
        h.queue.hold(first.id)
        await h.settle()
        assert h.queue.get(first.id).attempts == 0
        h.queue.release(first.id)
        await h.settle()
        stored = h.queue.get(first.id)
        assert stored.attempts == 1
        assert stored.recipients[0].state is RecipientState.DEFERRED
        assert h.queue.retry(first.id) == 1  # due now, although the backoff runs
        await h.settle()
        assert h.queue.statistics().messages == 0
        sink.behaviour.rcpt[BOB] = ["451 4.3.0 later"] * 3
        second = enqueue(h)
        await h.settle()
        h.queue.delete(second.id, notify_sender=True)
        await h.settle()
        third = enqueue(h)
        await h.settle()
        h.queue.delete(third.id)
        await h.settle()
        assert h.queue.statistics().messages == 0
    assert sink.recipients() == [BOB]
    [(_to, raw)] = h.local.delivered  # the delete with DSN only
    [_m, recipient] = status_blocks(parse(raw))
    assert recipient["Status"] == "5.0.0"
    assert "administrator" in recipient["Diagnostic-Code"]


async def test_statistics(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["451 4.3.0 later"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h)
        await h.settle()
        stats = h.runner.statistics()
        assert stats.deferred == 1 and stats.delivered == 0
        assert stats.queue.messages == 1 and stats.queue.deferred_messages == 1
        assert stats.active_messages == 0
        await h.advance(300)
        assert h.runner.statistics().delivered == 1


async def test_more_due_messages_than_the_active_limit(make_sink, harness) -> None:
    sink = make_sink()
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")),
        (MX,),
        mx_port=sink.port,
        max_active_messages=2,
    ) as h:
        for _ in range(7):
            enqueue(h)
        await h.settle()
        assert h.queue.statistics().messages == 0
    assert len(sink.messages) == 7


async def test_a_command_from_another_process_wakes_the_runner(make_sink, harness) -> None:
    sink = make_sink()
    sink.behaviour.rcpt[BOB] = ["451 4.3.0 later"]
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        entry = enqueue(h)
        await h.settle()
        cli = Queue(h.queue.folder, clock=h.clock)  # as `mailhost queue retry` would
        cli.open()
        assert cli.retry(entry.id) == 1  # no listener there: the wakeup FIFO carries it
        with trio.fail_after(10):
            while not sink.messages:
                await trio.sleep(0.01)
        await h.settle()
    assert sink.recipients() == [BOB]


async def test_binarymime_to_an_mx_without_it(make_sink, harness) -> None:
    # aiosmtpd offers neither CHUNKING nor BINARYMIME (RFC 3030). A message received as
    # BINARYMIME whose bytes DATA would change is returned with 5.6.3; one that DATA
    # carries unchanged goes.
    sink = make_sink()
    binary = MESSAGE.replace(b"Hello Bob.", b"Hello\nBob.\x00")
    async with harness(
        mx_resolver((10, "mx.remote.test", "127.0.0.1")), (MX,), mx_port=sink.port
    ) as h:
        enqueue(h, binary, body=BodyType.BINARY_MIME)
        enqueue(h, MESSAGE, body=BodyType.BINARY_MIME)
        await h.settle()
        assert h.queue.statistics().messages == 0
    [received] = sink.messages
    assert received.content.replace(b"\r\n", b"\n") == MESSAGE.replace(b"\r\n", b"\n")
    [(to, raw)] = h.local.delivered
    assert to == ALICE
    [_m, recipient] = status_blocks(parse(raw))
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.6.3"
