"""Alias of ``agentvigil.tail``: the one tailer, shared by ``watch`` and ``supervise``."""

from ..tail import ROTATION_GRACE, Tailer, Waker, _libc

__all__ = ["ROTATION_GRACE", "Tailer", "Waker", "_libc"]
