"""SMTP smuggling against the real server and store (reliability-security item 21).

For every end-of-data look-alike, a message carrying a smuggled second transaction
after it leaves the store with no message from the smuggler: only <CRLF>.<CRLF> ends
DATA, and a body with bare CR or LF is refused whole.
"""

from __future__ import annotations

import socket

from harness import Instance, Server

SEQUENCES = [
    b"\n.\n", b"\n.\r", b"\r.\n", b"\r.\r", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r",
    b"\r\n\x00.\r\n", b"\r\n.\r\r\n", b"\r\r\n.\r\r\n",
]  # fmt: skip

SMUGGLED = (
    b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\n"
    b"From: smuggled@evil.example\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n.\r\n"
)


def _transcript(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    sock.settimeout(5)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
            if out.rstrip().endswith((b"Bye", b"closing connection")) or b"221 " in out:
                break
    except TimeoutError:
        pass
    return out


def test_no_sequence_lets_a_second_message_into_the_store(
    server: Server, instance: Instance
) -> None:
    for sequence in SEQUENCES:
        with socket.create_connection(server.address("smtp"), timeout=10) as sock:
            assert sock.recv(1024).startswith(b"220")
            for line in (b"EHLO attacker.example\r\n", b"MAIL FROM:<a@remote.example>\r\n",
                         b"RCPT TO:<demo@example.test>\r\n", b"DATA\r\n"):  # fmt: skip
                sock.sendall(line)
                reply = b""
                while not reply.endswith(b"\r\n") or reply.split(b"\r\n")[-2][3:4] == b"-":
                    reply += sock.recv(4096)
            body = (
                b"From: a@remote.example\r\nSubject: carrier\r\n\r\ncarrier text"
                + sequence
                + SMUGGLED
            )
            _transcript(sock, body + b"QUIT\r\n")
    for message in instance.inbox("demo@example.test"):
        assert message["From"] != "smuggled@evil.example"
        assert message["Return-Path"] != "<smuggled@evil.example>"
        assert message["Subject"] != "smuggled"


def test_a_clean_message_after_a_refused_one_still_arrives(
    server: Server, instance: Instance
) -> None:
    with socket.create_connection(server.address("smtp"), timeout=10) as sock:
        sock.recv(1024)
        script = b"EHLO a.example\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\n"
        sock.sendall(script)
        sock.settimeout(5)
        got = b""
        while b"354" not in got:
            got += sock.recv(4096)
        out = _transcript(
            sock,
            b"Subject: bad\r\n\r\nbare\nLF\r\n.\r\nRSET\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<demo@example.test>\r\nDATA\r\n",
        )
        assert b"550 5.5.2" in out
        out = _transcript(sock, b"Subject: good\r\n\r\nfine\r\n.\r\nQUIT\r\n")
        assert b"250 2.0.0 Ok: queued as" in out
    subjects = [m["Subject"] for m in instance.inbox("demo@example.test")]
    assert subjects == ["good"]
