"""Deprecated alias of ``agentvigil.settings`` (kept for imports written against 0.1)."""

from .settings import ENV, Settings

__all__ = ["ENV", "Settings"]
