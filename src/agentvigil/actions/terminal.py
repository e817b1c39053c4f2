"""The ``terminal`` action: human lines on stderr, or one JSON object per line with ``json_out``."""

from __future__ import annotations

import json
from typing import TextIO


class Terminal:
    def __init__(self, out: TextIO, json_out: bool, started: float, quiet: bool = False, prefix: str = "[watch]"):
        self.out = out
        self.json_out = json_out
        self.started = started
        self.quiet = quiet
        self.prefix = prefix

    def _clock(self, now: float) -> str:
        elapsed = max(0, int(now - self.started))
        return f"+{elapsed // 60}:{elapsed % 60:02d}"

    def emit(self, record: dict, text: str, now: float) -> None:
        if self.json_out:
            if "ts" not in record:
                record = {"type": record.get("type"), "ts": now, **record}
            self.out.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        elif not self.quiet or record.get("type") in ("breach", "action", "error"):
            self.out.write(f"{self.prefix} {self._clock(now)}  {text}\n")
        self.out.flush()
