"""agent-strace sessions (``.agent-traces/<id>/{meta.json,events.ndjson}``) mapped onto our events.

agent-strace writes one ``TraceEvent`` per line: ``{"event_type", "timestamp", "event_id", "session_id",
"parent_id", "duration_ms", "data": {...}}`` (github.com/Siddhant-K-code/agent-trace, ``models.py``,
``hooks.py``). Its meta has ``agent_name``, ``command``, ``started_at`` and no PID, so ``kill`` needs
``--pid``.

| agent-strace            | agentvigil                                                               |
|-------------------------|--------------------------------------------------------------------------|
| ``session_start``       | ``run_start`` (run_id = session id)                                      |
| ``session_end``         | ``run_end`` status ok (the watch of that session is over)                 |
| ``tool_call``           | ``tool_start``; ``data.arguments`` hashed (``args_hash``); path, command in ``detail`` |
| ``tool_result``         | ``tool_end`` status ok, ``result_hash``, paired with the pending call of the same tool |
| ``error``               | ``tool_end`` status error, ``error_kind=tool_error`` (paired likewise)    |
| ``file_read/_write``    | ``tool_end`` tool ``read``/``write`` with ``detail.path``, ``detail.access`` |
| ``llm_response``        | ``llm_call`` with the usage fields it carries, ``model``, and ``cost_usd`` if present |
| ``user_prompt``         | ``step_start``; ``assistant_response``: ``step_end``                      |
| anything else           | no event (still counts as activity for the silence watcher)              |

Usage fields are read under their common names (``input_tokens``/``prompt_tokens``, ...).
Raw arguments are only hashed, as in our own events; the file path (for the scope watcher) and the command
(for the retry watcher's message) stay in memory in ``detail``.
"""

from __future__ import annotations

from typing import Any

from .. import events as ev
from ..codec import digest
from ..events import Event

WRITE_TOOLS = frozenset({"write", "edit", "create", "multiedit", "notebookedit", "str_replace_editor"})
_INPUT_KEYS = ("input_tokens", "prompt_tokens", "inputTokens", "promptTokenCount")
_OUTPUT_KEYS = ("output_tokens", "completion_tokens", "outputTokens", "candidatesTokenCount")


def is_strace_record(data: Any) -> bool:
    return data.__class__ is dict and "timestamp" in data and "ts" not in data


def is_strace_meta(meta: dict) -> bool:
    return "schema_version" not in meta and ("agent_name" in meta or "command" in meta or "tool_calls" in meta)


def _hash(value: Any) -> str | None:
    """The same digest the in-process Monitor writes (``agentvigil.codec.digest``)."""
    return digest(value)


def _tokens(data: dict, keys: tuple[str, ...]) -> int | None:
    for source in (data, data.get("usage") if isinstance(data.get("usage"), dict) else None):
        if source is None:
            continue
        for key in keys:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
    return None


class StraceMapper:
    """Stateful (pairs results with their calls); one per session."""

    def __init__(self, session_id: str | None = None, agent: str | None = None):
        self.session_id = session_id
        self.agent = agent or "agent-strace"
        self._pending: dict[str, tuple[str | None, dict]] = {}

    def map(self, data: dict) -> list[Event]:
        kind = data.get("event_type")
        ts = data.get("timestamp")
        if ts.__class__ not in (int, float):
            raise ValueError(f"timestamp must be a number, got {ts!r}")
        raw = data.get("data")
        payload: dict = raw if isinstance(raw, dict) else {}
        session = self.session_id or data.get("session_id") or None
        base: dict[str, Any] = {"agent_id": self.agent, "session_id": session, "run_id": session}
        duration = data.get("duration_ms") if isinstance(data.get("duration_ms"), (int, float)) else None
        tool = str(payload.get("tool_name") or "?")
        if kind == "tool_call":
            args = payload.get("arguments")
            detail = _detail(tool, args if isinstance(args, dict) else {})
            args_hash = _hash(args)
            self._pending[tool] = (args_hash, detail)
            return [Event(ev.TOOL_START, float(ts), tool_name=tool, args_hash=args_hash, detail=detail or None,
                          **base)]
        if kind in ("tool_result", "error"):
            args_hash, detail = self._pending.pop(tool, (None, {}))
            ok = kind == "tool_result"
            result = payload.get("result") if ok else payload.get("error")
            return [Event(ev.TOOL_END, float(ts), tool_name=tool, args_hash=args_hash, result_hash=_hash(result),
                          status="ok" if ok else "error", error_kind=None if ok else "tool_error",
                          duration_ms=duration, detail=detail or None, **base)]
        if kind in ("file_read", "file_write"):
            path = payload.get("path") or payload.get("file_path")
            access = "write" if kind == "file_write" else "read"
            file_detail = {"path": str(path), "access": access} if path else None
            return [Event(ev.TOOL_END, float(ts), tool_name=access, args_hash=_hash(path), status="ok",
                          detail=file_detail, **base)]
        if kind == "llm_response":
            inp, out = _tokens(payload, _INPUT_KEYS), _tokens(payload, _OUTPUT_KEYS)
            cost = payload.get("cost_usd", payload.get("cost"))
            cost = float(cost) if isinstance(cost, (int, float)) and not isinstance(cost, bool) else None
            total = (inp or 0) + (out or 0) if inp is not None or out is not None else None
            return [Event(ev.LLM_CALL, float(ts), provider=str(payload.get("provider") or "unknown"),
                          model=str(payload.get("model") or "unknown"), input_tokens=inp, output_tokens=out,
                          token_count=total, cost_usd=cost, status="ok", duration_ms=duration, **base)]
        if kind == "session_start":
            return [Event(ev.RUN_START, float(ts), **base)]
        if kind == "session_end":
            return [Event(ev.RUN_END, float(ts), status="ok", **base)]
        if kind == "user_prompt":
            return [Event(ev.STEP_START, float(ts), **base)]
        if kind == "assistant_response":
            return [Event(ev.STEP_END, float(ts), **base)]
        return []


def _detail(tool: str, args: dict) -> dict:
    detail: dict = {}
    path = args.get("file_path") or args.get("path") or args.get("notebook_path")
    if isinstance(path, str) and path:
        detail["path"] = path
        detail["access"] = "write" if tool.lower() in WRITE_TOOLS else "read"
    command = args.get("command")
    if isinstance(command, str) and command.strip():
        detail["command"] = command.strip()[:200]
    return detail
