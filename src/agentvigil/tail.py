"""Follow an append-only NDJSON file, and wake up the moment it changes.

``Tailer.read()`` returns the complete lines written since the last call, in order, each exactly once:

* the file may not exist yet (read returns nothing until it does);
* a line without its newline yet stays buffered until the rest arrives, up to ``MAX_LINE_BYTES`` (4 MiB):
  a longer line is not kept. Its bytes are discarded up to its newline and it is counted once in
  ``skipped["line_too_long"]`` (memory per file stays bounded, and the copying stays linear);
* only a regular file is read: the path is opened without blocking and checked with fstat, and a FIFO,
  device, directory or socket there is refused (``read`` raises ``NotRegularFile``, an ``OSError`` with a
  one-line message, and goes on raising it) instead of blocking in open or reading without end;
* ``Tailer(path, max_read=N)`` reads at most about N bytes per file per ``read`` (``more`` then says data is
  left), so one busy file cannot hold up the caller's other files; without it ``read`` drains to the end;
* truncation in place restarts at 0 and drops the partial buffer. It is seen by size (below our offset) and
  by the file's first bytes (kept from the first read): a file truncated and refilled past our offset while
  we were not looking has the same inode and a larger size, but not the same beginning;
* rotation (the path now names another inode, or is gone) keeps draining the old file for
  ``ROTATION_GRACE`` seconds (a writer may still hold it open), then follows the new file from 0. A final
  unterminated line of a rotated-away file is passed on as is: the decoder counts it as ``truncated``.

``Tailer.read(upto=N)`` stops at byte N of the file (a reader resuming where an earlier one stopped reads up
to there first); ``identity`` and ``head`` say which file that was.

``Tailer.rest()`` hands over what is still buffered (a final line without its newline) when the caller stops
reading for good (``watch --no-follow``), so it is judged or counted, never silently dropped.

``Waker.wait(timeout)`` blocks until something changes in a watched directory: Linux inotify through ctypes
(no dependency; wake-up in well under a millisecond), else an adaptive poll (1 ms after activity, backing off
to 50 ms when idle). ``unwatch`` gives a directory's watch back (inotify watches are a per-user kernel
limit, ``fs.inotify.max_user_watches``); one the kernel dropped itself (the directory was removed:
``IN_IGNORED``) is forgotten when ``wait`` reads that, so the name can be watched again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import struct
import time
from collections import Counter
from typing import cast

from .files import NotRegularFile, open_regular

ROTATION_GRACE = 2.0
HEAD_BYTES = 64          # how much of the file's beginning identifies it across a truncate-and-refill
MAX_LINE_BYTES = 4 << 20  # longest line kept (twice the recorder's largest batch); longer: line_too_long
_CHUNK = 1 << 20          # at most MAX_LINE_BYTES: a line inside one chunk is never too long
LINE_TOO_LONG = "line_too_long"



class _Partial:
    """A file's line in progress: its bytes so far, or ``dropping`` its rest (it passed MAX_LINE_BYTES)."""

    __slots__ = ("buf", "dropping")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.dropping = False

    def take(self) -> bytes:
        out, self.buf = bytes(self.buf), bytearray()
        return out


class Tailer:
    __slots__ = ("_error", "_fd", "_head", "_id", "_max_read", "_old", "_part", "_pos", "more", "path",
                 "rotations", "skipped", "truncations")

    def __init__(self, path: str, max_read: int | None = None):
        self.path = path
        self._fd: int | None = None
        self._id: tuple[int, int] | None = None
        self._pos = 0
        self._part = _Partial()
        self._head = b""
        self._old: list[tuple[int, _Partial, float]] = []   # (fd, partial line, deadline) of rotated files
        self._max_read = max_read if max_read is None else max(int(max_read), 1)
        self._error: str | None = None   # the path was refused (not a regular file): read raises this
        self.more = False                # the last read stopped at max_read with data left
        self.rotations = 0
        self.truncations = 0
        self.skipped: Counter = Counter()   # lines dropped here, by reason (line_too_long)

    @property
    def exists(self) -> bool:
        return self._fd is not None

    @property
    def offset(self) -> int:
        return self._pos

    @property
    def identity(self) -> tuple[int, int] | None:
        """(st_dev, st_ino) of the file being read, once it was opened."""
        return self._id

    @property
    def head(self) -> bytes:
        """The first bytes read from it (up to ``HEAD_BYTES``): a file truncated and refilled starts otherwise."""
        return self._head

    @property
    def rotating(self) -> bool:
        """A rotated-away file is still being drained."""
        return bool(self._old)

    @property
    def refused(self) -> str | None:
        """Why the path is not read (it is not a regular file), or None."""
        return self._error

    def read(self, upto: int | None = None) -> list[bytes]:
        """The complete lines since the last call. Raises NotRegularFile once the path names something that
        is not a regular file (after handing over, first, the lines read before it was seen), and the
        OSError of a failed read. ``upto``: read the current file no further than that byte offset (the
        rest, and any rotation, next time)."""
        lines: list[bytes] = []
        self.more = False
        if self._old:
            self._drain_old(lines)   # a rotated-away file is still drained, even once the path is refused
        if self._error is not None or self._fd is None and not self._open():
            return self._handed(lines)
        fd = cast(int, self._fd)  # open at this point
        if self._pos and self._rewritten(fd):
            self._restart(fd)
        if self._drain(fd, self._part, lines, upto=upto):
            return lines  # stopped at max_read or upto: the rest (and any rotation) next time
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # moved away and not recreated yet: keep reading what we have open
        if (st.st_dev, st.st_ino) != self._id:
            self.rotations += 1
            self._old.append((fd, self._part, time.monotonic() + ROTATION_GRACE))
            self._fd, self._part, self._pos, self._head = None, _Partial(), 0, b""
            if self._open():
                self._drain(cast(int, self._fd), self._part, lines)
        elif st.st_size < self._pos:
            self._restart(fd)
            self._drain(fd, self._part, lines)
        return self._handed(lines)

    def _handed(self, lines: list[bytes]) -> list[bytes]:
        if self._error is not None and not lines:
            raise NotRegularFile(self._error)
        return lines

    def rest(self) -> list[bytes]:
        """The buffered unterminated lines (of the current file and of rotated-away ones), handed over once:
        the caller is done reading and judges them (or counts them as truncated). A line being dropped as too
        long was counted already and is not handed over."""
        out = [part.take() for _, part, _ in self._old if part.buf]
        if self._part.buf:
            out.append(self._part.take())
        return out

    def _rewritten(self, fd: int) -> bool:
        """The file no longer starts with the bytes we read at its start: it was truncated and refilled."""
        if not self._head:
            return False
        try:
            return os.pread(fd, len(self._head), 0) != self._head
        except OSError:
            return False

    def _restart(self, fd: int) -> None:
        self.truncations += 1
        os.lseek(fd, 0, os.SEEK_SET)
        self._pos, self._part, self._head = 0, _Partial(), b""

    def close(self) -> None:
        for fd, _, _ in self._old:
            os.close(fd)
        self._old = []
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> bool:
        try:
            fd = open_regular(self.path)
        except NotRegularFile as exc:
            self._error = f"{exc}; not followed"   # refused for good: read raises it from now on
            return False
        except OSError:
            return False
        st = os.fstat(fd)
        self._fd, self._id, self._pos, self._head = fd, (st.st_dev, st.st_ino), 0, b""
        return True

    def _drain(self, fd: int, part: _Partial, lines: list[bytes], count: bool = True,
               upto: int | None = None) -> bool:
        """Read to the end of the file, or about ``max_read`` bytes (True: stopped there, data is left), or to
        byte ``upto`` (True: stopped there)."""
        budget = self._max_read
        taken = 0
        while True:
            if budget is not None and taken >= budget:
                self.more = True
                return True
            size = _CHUNK
            if upto is not None:
                size = min(size, upto - self._pos)
                if size <= 0:
                    return True
            chunk = os.read(fd, size)
            if not chunk:
                return False
            taken += len(chunk)
            if count:
                if self._pos < HEAD_BYTES:
                    self._head += chunk[:HEAD_BYTES - self._pos]
                self._pos += len(chunk)
            self._split(chunk, part, lines)

    def _split(self, chunk: bytes, part: _Partial, lines: list[bytes]) -> None:
        """Add a chunk: complete lines go to ``lines``, the unterminated end to ``part`` (each byte is copied
        a bounded number of times: no ``buf + chunk`` per chunk)."""
        start = 0
        if part.dropping:
            start = chunk.find(b"\n") + 1
            if not start:
                return    # still inside the line that is too long
            part.dropping = False
        cut = chunk.rfind(b"\n", start)
        if cut >= 0:
            if part.buf:
                first = chunk.find(b"\n", start)
                if len(part.buf) + first - start > MAX_LINE_BYTES:
                    self.skipped[LINE_TOO_LONG] += 1
                    part.buf = bytearray()
                else:
                    part.buf += memoryview(chunk)[start:first]
                    lines.append(part.take())
                start = first + 1
            if start <= cut:
                lines.extend(chunk[start:cut].split(b"\n"))
            start = cut + 1
        if start < len(chunk):
            if len(part.buf) + len(chunk) - start > MAX_LINE_BYTES:
                self.skipped[LINE_TOO_LONG] += 1   # counted once; its bytes are dropped up to its newline
                part.buf = bytearray()
                part.dropping = True
            else:
                part.buf += memoryview(chunk)[start:]

    def _drain_old(self, lines: list[bytes]) -> None:
        keep = []
        now = time.monotonic()
        for fd, part, deadline in self._old:
            left = self._drain(fd, part, lines, count=False)
            if now < deadline or left:   # past its grace, a file is read to its end before it is closed
                keep.append((fd, part, deadline))
                continue
            if part.buf:
                lines.append(part.take())
            os.close(fd)
        self._old = keep


# -- wake-ups ------------------------------------------------------------------------------------------------
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x002, 0x004, 0x008
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x040, 0x080, 0x100, 0x200
_MASK = _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE | _IN_DELETE
_IN_IGNORED = 0x8000      # the watch is gone: removed by us, or by the kernel (directory deleted, unmounted)
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000
_EVENT = struct.Struct("iIII")   # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


class Waker:
    """Wait for a change in any watched directory. ``inotify`` tells which mechanism is in use."""

    MIN_POLL = 0.001
    MAX_POLL = 0.05

    def __init__(self, use_inotify: bool = True):
        self._fd = -1
        self._libc = _libc() if use_inotify else None
        if self._libc is not None:
            fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd >= 0:
                self._fd = fd
        self._wds: dict[str, int] = {}          # directory -> its watch descriptor (-1 when polling)
        self._paths: dict[int, set[str]] = {}   # watch descriptor -> the names it was added under
        self._poll = self.MIN_POLL

    @property
    def inotify(self) -> bool:
        return self._fd >= 0

    @property
    def watching(self) -> int:
        """How many directories are watched."""
        return len(self._wds)

    def watch(self, directory: str) -> bool:
        """Watch a directory (files inside it included). False if it does not exist (yet)."""
        directory = os.path.abspath(directory)
        if directory in self._wds:
            return True
        if not os.path.isdir(directory):
            return False
        wd = -1
        if self._fd >= 0 and self._libc is not None:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK)
            if wd < 0:
                err = ctypes.get_errno()
                if err not in (errno.ENOENT, errno.ENOTDIR):
                    self._fall_back()   # e.g. out of watches: fall back to polling for good
                return False
            self._paths.setdefault(wd, set()).add(directory)   # one inode under two names shares its wd
        self._wds[directory] = wd
        return True

    def unwatch(self, directory: str) -> None:
        """Stop watching a directory (its session was released). A no-op for one not watched, or whose watch
        the kernel already dropped."""
        directory = os.path.abspath(directory)
        wd = self._wds.pop(directory, None)
        if wd is None or wd < 0:
            return
        names = self._paths.get(wd)
        if names is not None:
            names.discard(directory)
            if names:
                return          # still watched under another name
            del self._paths[wd]
        if self._fd >= 0 and self._libc is not None:
            self._libc.inotify_rm_watch(self._fd, wd)   # EINVAL if the kernel dropped it already: nothing to do

    def _forget(self, data: bytes) -> None:
        """Drop the watches the kernel says are gone (IN_IGNORED), so their names can be watched anew. A wd
        removed by ``unwatch`` is no longer known here; a later watch of the same name has another wd."""
        offset, end = 0, len(data) - _EVENT.size
        while offset <= end:
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size + length
            if mask & _IN_IGNORED:
                for name in self._paths.pop(wd, ()):
                    if self._wds.get(name) == wd:
                        del self._wds[name]

    def _fall_back(self) -> None:
        os.close(self._fd)
        self._fd = -1
        self._paths.clear()
        self._wds = dict.fromkeys(self._wds, -1)

    def wait(self, timeout: float) -> bool:
        """Block until a change (True) or ``timeout`` seconds (False). With polling, returns after the
        current poll interval: the caller simply reads again."""
        if timeout <= 0:
            return False
        if self._fd >= 0:
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return False
            try:
                while data := os.read(self._fd, 65536):   # whole events only, never one split across reads
                    self._forget(data)
            except BlockingIOError:
                pass
            return True
        time.sleep(min(timeout, self._poll))
        self._poll = min(self._poll * 2, self.MAX_POLL)
        return False

    def activity(self) -> None:
        """Data arrived: poll fast again (no-op with inotify)."""
        self._poll = self.MIN_POLL

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._wds.clear()
        self._paths.clear()
