"""Helpers shared by the store tests (`from store_testkit import ...`)."""

from __future__ import annotations

import os
from pathlib import Path

from store import Store


def message(n: int = 1, *, body: bytes = b"hello\r\n", subject: str | None = None) -> bytes:
    """A small, unique RFC 5322 message (CRLF line ends)."""
    subject = subject if subject is not None else f"message {n}"
    return (
        f"From: Sender {n} <sender{n}@example.org>\r\n"
        f"To: rcpt@example.com\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: <m{n}@example.org>\r\n"
        f"Date: Tue, 1 Jul 2003 10:52:37 +0200\r\n"
        "\r\n"
    ).encode() + body


def reopen(store: Store) -> Store:
    """A second Store on the same root: behaves like another process."""
    return Store(store.root, clock=store.clock, hostname="other.example")


def files_in(folder_dir: Path) -> list[str]:
    return sorted(name for sub in ("new", "cur") for name in os.listdir(folder_dir / sub))
