"""Security: STARTTLS command injection (checklist item 23; CVE-2011-0411 class).

A command pipelined after STARTTLS in the same plaintext packet must never be executed
inside the TLS session: the server discards what it had buffered before the handshake.
"""

from __future__ import annotations

import socket
import ssl

from harness import Instance, Server


def _read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    out = b""
    while not out.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        out += chunk
    return out


def test_command_injected_before_the_handshake_is_discarded(
    server: Server, instance: Instance
) -> None:
    sock = socket.create_connection(server.address("imap"), timeout=10)
    assert _read_line(sock).startswith(b"* OK")
    sock.sendall(b"A STARTTLS\r\nB NOOP\r\n")  # one send: B rides along in plaintext
    assert _read_line(sock).startswith(b"A OK")
    tls = instance.client_context(check_hostname=False).wrap_socket(sock)
    tls.sendall(b"C NOOP\r\n")
    first = _read_line(tls)
    assert first.startswith(b"C OK"), first  # nothing answers B inside TLS
    # The capabilities are re-advertised for the TLS session (RFC 3501 6.2.1).
    tls.sendall(b"D CAPABILITY\r\n")
    caps = _read_line(tls)
    assert caps.startswith(b"* CAPABILITY") and b"STARTTLS" not in caps
    assert b"AUTH=PLAIN" in caps and b"LOGINDISABLED" not in caps
    assert _read_line(tls).startswith(b"D OK")
    # A second STARTTLS is refused.
    tls.sendall(b"E STARTTLS\r\n")
    assert _read_line(tls).startswith(b"E BAD")
    tls.close()


def test_literal_injected_before_the_handshake_is_discarded(
    server: Server, instance: Instance
) -> None:
    """Also a half-sent command (a LOGIN waiting on a literal) does not survive."""
    sock = socket.create_connection(server.address("imap"), timeout=10)
    assert _read_line(sock).startswith(b"* OK")
    sock.sendall(b"A STARTTLS\r\nB LOGIN {4}\r\n")
    assert _read_line(sock).startswith(b"A OK")
    tls = instance.client_context(check_hostname=False).wrap_socket(sock)
    tls.sendall(b"C NOOP\r\n")
    assert _read_line(tls).startswith(b"C OK")
    tls.close()


def test_starttls_is_not_offered_on_the_implicit_tls_port(
    server: Server, instance: Instance
) -> None:
    sock = instance.client_context(check_hostname=False).wrap_socket(
        socket.create_connection(server.address("imaps"), timeout=10)
    )
    greeting = _read_line(sock)
    assert greeting.startswith(b"* OK") and b"STARTTLS" not in greeting
    sock.sendall(b"A STARTTLS\r\n")
    assert _read_line(sock).startswith(b"A BAD")
    sock.close()
