"""The ``file`` action: append one JSON object per line to the alerts log, flushed per record (``tail -f``
friendly). The log and any directory it creates are owner-only whatever the umask: alerts name agents,
sessions and PIDs."""

from __future__ import annotations

import json
import os
import threading
from typing import TextIO


class FileLog:
    def __init__(self, path: str):
        self.path = path
        self._fh: TextIO | None = None
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._fh is None:
                self._fh = self._open()
            self._fh.write(line)
            self._fh.flush()

    def _open(self) -> TextIO:
        directory = os.path.dirname(self.path)
        if directory and not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
            os.chmod(directory, 0o700)   # makedirs' mode is filtered by the umask
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)
        except FileExistsError:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return os.fdopen(fd, "a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
