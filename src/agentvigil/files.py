"""Small files read whole (meta.json, .active-session, runaway's state file, a prices file), and the one check
every reader of a recording makes first: a regular file, opened without blocking. A FIFO without a writer or a
device (``/dev/zero``) where a file is expected would hang the reader or fill its memory."""

from __future__ import annotations

import errno
import os
import stat

_CHUNK = 1 << 20
NOT_REGULAR_FILE = "not_regular_file"
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """The path names a FIFO, device, directory or socket where a regular file is expected: refused.
    ``str()`` is a one-line message; ``reason`` the stable label it is counted under."""

    reason = NOT_REGULAR_FILE


class FileTooLarge(OSError):
    """A small file (meta.json, .active-session, a state file) is larger than the bound it is read with."""

    reason = "file_too_large"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str) -> int:
    """``path`` opened read-only, never blocking (a FIFO without a writer, a device), if it is a regular file
    (a symlink is followed). Raises NotRegularFile for anything else (nothing is read from it; its message
    names what it is, not the path) and OSError as ``os.open`` raises it (FileNotFoundError...)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:   # a socket (or a FIFO opened for writing): not a file
            raise NotRegularFile("not a regular file (a socket)") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(f"not a regular file ({_kind(mode)})")
    return fd


def read_regular(path: str, limit: int) -> bytes:
    """The whole of a small regular file, at most ``limit`` bytes. Raises NotRegularFile, FileTooLarge (nothing
    past ``limit`` + 1 bytes is read) or the OSError of open/read."""
    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        raise NotRegularFile(f"{path}: {exc}; not read") from None
    try:
        parts: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            parts.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise FileTooLarge(f"{path}: larger than {limit} bytes; not read")
    return b"".join(parts)
