from __future__ import annotations

import math


def seconds(value: float) -> str:
    if not math.isfinite(value):   # a run from ts -1.79e308 to +1.79e308 lasts inf: int() would raise
        return f"{value}s"
    value = int(value)
    return f"{value // 60}m{value % 60:02d}s" if value >= 60 else f"{value}s"


def command_of(event_detail: dict | None) -> str | None:
    """``detail.command`` when it is a string (agent-strace records it; anything else is ignored)."""
    if not event_detail:
        return None
    command = event_detail.get("command")
    return command if isinstance(command, str) else None
