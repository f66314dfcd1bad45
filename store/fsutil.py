"""Durable file-system steps (STYLE rule 12) and maildir unique names.

Everything that must survive a crash goes through here: write a temporary file in the same
directory, fsync it, rename (or link) it into place, fsync the directory. A failed fsync is
never retried as if it had worked (the page cache may already have dropped the data).
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import shutil
import socket
from pathlib import Path

from .clock import Clock

_sequence = itertools.count(1)


def fsync_dir(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never a mix."""
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def write_new_file(path: str | Path, data: bytes, *, fsync: bool = True) -> None:
    """Create `path` (which must not exist) with `data`, fsynced; unlink it on failure.

    fdatasync(2) is enough: it flushes the data and the metadata needed to read it back
    (the size); timestamps may lag. The directory entry is made durable by the caller
    (fsync of the directory after linking)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise


def link_or_copy(src: str | Path, dst: str | Path, *, fsync: bool = True) -> None:
    """Hard-link `src` to the new name `dst`, copying when they are on different file systems.

    Like link(2), fails with FileExistsError if `dst` exists: names are never overwritten.
    """
    try:
        os.link(src, dst)
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            with open(src, "rb") as source, os.fdopen(os.dup(fd), "wb") as target:
                shutil.copyfileobj(source, target, 1024 * 1024)
                target.flush()
            if fsync:
                os.fdatasync(fd)
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(dst)
        except FileNotFoundError:
            pass
        raise


def unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def safe_hostname(hostname: str | None = None) -> str:
    """The host part of maildir names: '/' and ':' (and '.', our field separator) escaped.

    The maildir specification writes '/' as \\057 and ':' as \\072; we also escape ',' (our
    field separator) so the unique part stays one token.
    """
    host = hostname or socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054").replace(" ", "_")


def unique_name(clock: Clock, host: str) -> str:
    """A maildir unique name: time, microseconds, pid, sequence, random bits, host.

    Dovecot's wiki ("Always create filenames that are guaranteed to be unique") and the
    maildir specification; the sequence and the random part keep names unique when the
    clock stands still or jumps backwards, the pid across processes on one host, the host
    across machines sharing the file system. Callers still create with link()/O_EXCL.
    """
    now = clock.now()
    seconds = int(now)
    micros = int((now - seconds) * 1_000_000)
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_sequence)}R{secrets.token_hex(4)}.{host}"
