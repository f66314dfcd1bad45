"""Helpers for end-to-end tests against the real server: imaplib clients on both ports,
a COMPRESS=DEFLATE capable imaplib subclass, a raw IDLE, and a nested multipart message."""

from __future__ import annotations

import imaplib
import re
import smtplib
import socket
import ssl
import time
import zlib

from harness import Instance, Server

# imaplib (3.11) does not know COMPRESS; it checks commands against this table.
imaplib.Commands.setdefault("COMPRESS", ("AUTH", "SELECTED"))

# A message whose parts exercise RFC 3501 6.4.5 numbering: a nested multipart, an
# attached message/rfc822 with its own multipart, and a base64 part.
NESTED = (
    b"From: Bob Sender <bob@example.org>\r\n"
    b"To: Demo <demo@example.test>\r\n"
    b"Cc: Carol <carol@example.org>\r\n"
    b"Subject: nested parts\r\n"
    b"Message-ID: <nested-1@example.org>\r\n"
    b"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"part one text\r\n"
    b"--outer\r\n"
    b'Content-Type: multipart/alternative; boundary="inner"\r\n'
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"alternative plain\r\n"
    b"--inner\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>alternative html</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"From: Inner <inner@example.org>\r\n"
    b"Subject: attached message\r\n"
    b'Content-Type: multipart/mixed; boundary="deep"\r\n'
    b"\r\n"
    b"--deep\r\n"
    b"Content-Type: text/plain\r\n"
    b"\r\n"
    b"deep text\r\n"
    b"--deep--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="bin.dat"\r\n'
    b"\r\n"
    b"AAECAwQFBgc=\r\n"
    b"--outer--\r\n"
)


def imaps(server: Server, instance: Instance) -> imaplib.IMAP4_SSL:
    host, port = server.address("imaps")
    return imaplib.IMAP4_SSL(host, port, ssl_context=instance.client_context(check_hostname=False))


def imap_starttls(server: Server, instance: Instance) -> imaplib.IMAP4:
    host, port = server.address("imap")
    client = imaplib.IMAP4(host, port)
    client.starttls(instance.client_context(check_hostname=False))
    return client


def login(client: imaplib.IMAP4, instance: Instance) -> imaplib.IMAP4:
    client.login(instance.user, instance.password)
    return client


def smtp_deliver(server: Server, to: str, message: bytes) -> None:
    host, port = server.address("smtp")
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.sendmail("sender@example.org", [to], message)


def fetch_items(data: list[object]) -> dict[bytes, bytes]:
    """imaplib FETCH data of one message as {item name: value} (literals included)."""
    text = b""
    for piece in data:
        if isinstance(piece, tuple):
            head, literal = piece
            text += head + b"\x00LIT" + str(len(literal)).encode() + b"\x00"
            text += literal
        elif isinstance(piece, bytes):
            text += piece
    return _parse_items(text)


def _parse_items(text: bytes) -> dict[bytes, bytes]:
    start = text.index(b"(") + 1
    out: dict[bytes, bytes] = {}
    pos = start
    while pos < len(text):
        while pos < len(text) and text[pos : pos + 1] in (b" ", b")"):
            pos += 1
        if pos >= len(text):
            break
        m = re.compile(rb"[A-Z0-9.]+(?:\[[^\]]*\])?(?:<\d+>)?").match(text, pos)
        assert m, text[pos:]
        name = m.group(0)
        pos = m.end() + 1
        if text.startswith(b"~", pos):  # literal8 (RFC 3516)
            pos += 1
        if text.startswith(b"{", pos):  # the literal marker imaplib left in the head
            end = text.index(b"}", pos)
            pos = end + 1
        if text.startswith(b"\x00LIT", pos):
            end = text.index(b"\x00", pos + 1)
            size = int(text[pos + 4 : end])
            out[name] = text[end + 1 : end + 1 + size]
            pos = end + 1 + size
            continue
        value, pos = _value(text, pos)
        out[name] = value
    return out


def _value(text: bytes, pos: int) -> tuple[bytes, int]:
    if text.startswith(b"(", pos):
        depth = 0
        i = pos
        in_quote = False
        while i < len(text):
            ch = text[i : i + 1]
            if in_quote:
                if ch == b"\\":
                    i += 1
                elif ch == b'"':
                    in_quote = False
            elif ch == b'"':
                in_quote = True
            elif ch == b"(":
                depth += 1
            elif ch == b")":
                depth -= 1
                if depth == 0:
                    return text[pos : i + 1], i + 1
            i += 1
        raise AssertionError(text[pos:])
    if text.startswith(b'"', pos):
        end = pos + 1
        while text[end : end + 1] != b'"':
            end += 2 if text[end : end + 1] == b"\\" else 1
        return text[pos : end + 1], end + 1
    m = re.compile(rb"[^ )]+").match(text, pos)
    assert m
    return m.group(0), m.end()


class CompressingIMAP4_SSL(imaplib.IMAP4_SSL):
    """imaplib with COMPRESS=DEFLATE (RFC 4978) layered under its read/send."""

    _deflate: zlib._Compress | None = None
    _inflate: zlib._Decompress | None = None
    _inbuf = b""

    def compress(self) -> tuple[str, list[bytes]]:
        typ, data = self._simple_command("COMPRESS", "DEFLATE")
        if typ == "OK":
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._inflate = zlib.decompressobj(-15)
        return typ, data

    def send(self, data: bytes) -> None:
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        super().send(data)

    def _more(self) -> None:
        assert self._inflate is not None
        chunk = self.sock.recv(65536)
        if not chunk:
            raise imaplib.IMAP4.abort("connection closed")
        self._inbuf += self._inflate.decompress(chunk)

    def read(self, size: int) -> bytes:
        if self._inflate is None:
            return super().read(size)
        while len(self._inbuf) < size:
            self._more()
        out, self._inbuf = self._inbuf[:size], self._inbuf[size:]
        return out

    def readline(self) -> bytes:
        if self._inflate is None:
            return super().readline()
        while b"\n" not in self._inbuf:
            self._more()
        i = self._inbuf.index(b"\n") + 1
        out, self._inbuf = self._inbuf[:i], self._inbuf[i:]
        return out


class RawImap:
    """A line-oriented IMAP client over a TLS socket, for IDLE and exact transcripts."""

    def __init__(self, server: Server, instance: Instance) -> None:
        host, port = server.address("imaps")
        ctx = instance.client_context(check_hostname=False)
        self.sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=10))
        self.file = self.sock.makefile("rb")
        self.counter = 0
        assert self.readline().startswith(b"* OK")

    def readline(self, timeout: float = 10.0) -> bytes:
        self.sock.settimeout(timeout)
        return self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, text: str) -> tuple[list[bytes], bytes]:
        self.counter += 1
        tag = f"R{self.counter}".encode()
        self.send(tag + b" " + text.encode() + b"\r\n")
        lines = []
        while True:
            line = self.readline()
            if not line:
                raise EOFError
            if line.startswith(tag + b" "):
                return lines, line
            lines.append(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except (OSError, ssl.SSLError):
            pass


def wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")
