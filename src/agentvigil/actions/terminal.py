"""The ``terminal`` action: human lines on stderr, or one JSON object per line with ``json_out``."""

from __future__ import annotations

import json
import re
from typing import TextIO

# what must never reach a terminal raw from an event or a meta.json: C0 (ESC, CR, LF, BS, ...), DEL, C1 (CSI
# 0x9b, ...), the bidi overrides and isolates, and the Unicode line/paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as its escape (``\\x1b``, ``\\n``, ``\\u202e``): a label
    cannot move the cursor, colour the terminal or forge a line of its own."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


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
            # one line per record: what the text carries from events (agent, tool, session names) is escaped
            self.out.write(f"{self.prefix} {self._clock(now)}  {escape_controls(text)}\n")
        self.out.flush()
