"""What the server and its delivery agent send each other comes back as it went."""

from __future__ import annotations

from pathlib import Path

import msgpack

from transport.agent import (
    AgentRecipient,
    DeliveryRequest,
    decode_request,
    encode_request,
    report_from_wire,
    report_to_wire,
)
from transport.hub import DeliveryReport, MessageInfo


def _round_trip(request: DeliveryRequest) -> tuple[int, DeliveryRequest]:
    return decode_request(msgpack.unpackb(encode_request(7, request), raw=False))


def test_a_request_comes_back_whole() -> None:
    info = MessageInfo("HDRS", "env-1", "ann@example.test", "helo.example", "192.0.2.1",
                       "mail.example.test", "8BITMIME", True)  # fmt: skip
    recipients = [
        AgentRecipient("ann@example.test", "Ann@example.test"),
        AgentRecipient(
            '"b c"@example.test', '"b c"@Example.test', ("FAILURE", "SUCCESS"), "rfc822;b@x.test"
        ),
    ]
    for content in (b"Subject: x\r\n\r\nbody\r\n", Path("/spool/message-1")):
        request = DeliveryRequest(content, b"Received: x\r\n", None, recipients, True, "ID1", info)
        assert _round_trip(request) == (7, request)
    request = DeliveryRequest(b"x", b"", "s@x.test", [], False, "ID2", MessageInfo())
    assert _round_trip(request) == (7, request)


def test_a_report_comes_back_whole() -> None:
    report = DeliveryReport(
        "ID1",
        delivered=["ann@example.test"],
        queued=["far@remote.test"],
        temporary={"t@example.test": "disk"},
        quota={"q@example.test": "full"},
        permanent={"p@example.test": "gone"},
        folders=[("mailbox-1", "inbox-1")],
    )
    wire = msgpack.unpackb(msgpack.packb(report_to_wire(report)), raw=False)
    assert report_from_wire(wire) == report
