"""The watchers: small policy objects, one job each, no I/O.

Each has a ``name``, ``feed(event, now) -> list[Finding]`` and ``tick(now, live) -> list[Finding]``
(``live``: the watched process is verified alive). A watcher fires once per distinct trouble and re-arms
when the trouble goes away (a success after failures, activity after silence). Thresholds are plain
constructor arguments; ``config.py`` maps ``.agent-watch.json`` keys onto them.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections import deque
from typing import NamedTuple

from .. import events as ev
from ..detect import COST_OVER_BASELINE
from ..events import Event


class Finding(NamedTuple):
    watcher: str
    message: str
    detail: dict
    ts: float | None = None      # event time; None = now
    run_id: str | None = None


def _fmt_seconds(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class RetryWatcher:
    """The same command (tool + arguments) fails ``max`` times with no success in between."""

    name = "retry"

    def __init__(self, max: int = 5):
        if max < 1:
            raise ValueError("max must be >= 1")
        self.max = max
        self._fails: dict[tuple, int] = {}
        self.retries = 0        # failures that repeated an earlier failure (status line)

    def feed(self, event: Event, now: float) -> list[Finding]:
        if event.event_type != ev.TOOL_END:
            return []
        detail = event.detail or {}
        key = (event.run_id, event.tool_name, event.args_hash or detail.get("command"))
        if event.status != "error":
            self._fails.pop(key, None)
            return []
        count = self._fails.get(key, 0) + 1
        self._fails[key] = count
        if count > 1:
            self.retries += 1
        if count != self.max:
            return []
        what = detail.get("command") or event.tool_name or "?"
        return [Finding(self.name, f'RetryWatcher: "{what}" failed {count} times',
                        {"tool": event.tool_name, "command": detail.get("command"), "failures": count,
                         "threshold": self.max, "error_kind": event.error_kind}, event.ts, event.run_id)]

    def tick(self, now: float, live: bool) -> list[Finding]:
        return []


class CostWatcher:
    """Estimated spend of the session (sum of ``llm_call.cost_usd``) goes over ``max_dollars``."""

    name = "cost"

    def __init__(self, max_dollars: float = 10.0):
        self.max_dollars = max_dollars
        self.total = 0.0
        self._fired = False

    def feed(self, event: Event, now: float) -> list[Finding]:
        if event.event_type != ev.LLM_CALL or not event.cost_usd:
            return []
        self.total += event.cost_usd
        if self._fired or self.total <= self.max_dollars:
            return []
        self._fired = True
        return [Finding(self.name, f"CostWatcher: ${self.total:.2f} (threshold: ${self.max_dollars:.2f})",
                        {"cost_usd": round(self.total, 6), "threshold_usd": self.max_dollars}, event.ts,
                        event.run_id)]

    def tick(self, now: float, live: bool) -> list[Finding]:
        return []


class ScopePolicy:
    """``.agent-scope.json``: globs over file paths, relative to the policy file's directory.

    Two forms (mixable): agent-strace's ``{"files": {"read": {"allow": [...], "deny": [...]},
    "write": {...}}}``, and the short ``{"allow": [...], "deny": [...]}`` for any access. Deny wins; when an
    allow list applies, a path must match it. A glob matches the whole relative path (``*`` crosses ``/``)
    or the file name.
    """

    def __init__(self, rules: dict, root: str = "."):
        self.root = os.path.abspath(root)
        files = rules.get("files") or {}
        self.allow = {"any": list(rules.get("allow") or [])}
        self.deny = {"any": list(rules.get("deny") or [])}
        for access in ("read", "write"):
            section = files.get(access) or {}
            self.allow[access] = list(section.get("allow") or [])
            self.deny[access] = list(section.get("deny") or [])

    @classmethod
    def load(cls, path: str) -> ScopePolicy:
        with open(path, encoding="utf-8") as fh:
            rules = json.load(fh)
        if not isinstance(rules, dict):
            raise ValueError("the policy must be a JSON object")
        return cls(rules, os.path.dirname(os.path.abspath(path)))

    def relative(self, path: str) -> str:
        full = os.path.normpath(path if os.path.isabs(path) else os.path.join(self.root, path))
        rel = os.path.relpath(full, self.root)
        return rel.replace(os.sep, "/")

    def check(self, path: str, access: str = "read") -> str | None:
        """None if allowed, else the reason."""
        rel = self.relative(path)
        name = rel.rsplit("/", 1)[-1]
        scopes = ("any", access) if access in ("read", "write") else ("any", "read", "write")

        def matches(patterns):
            return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

        for scope in scopes:
            if matches(self.deny[scope]):
                return f"denied by {'deny' if scope == 'any' else f'files.{scope}.deny'}"
        for scope in scopes:
            if self.allow[scope] and not matches(self.allow[scope]):
                return f"not in {'allow' if scope == 'any' else f'files.{scope}.allow'}"
        return None


def event_paths(event: Event) -> list[tuple[str, str]]:
    """(path, access) pairs a tool event declares: ``detail.path`` or ``detail.paths`` (opt-in in our
    events; filled from arguments for agent-strace), ``detail.access`` = read (default) or write."""
    detail = event.detail
    if not detail:
        return []
    access = detail.get("access") if detail.get("access") in ("read", "write") else "read"
    found = []
    path = detail.get("path")
    if isinstance(path, str) and path:
        found.append((path, access))
    paths = detail.get("paths")
    if isinstance(paths, list):
        found.extend((p, access) for p in paths if isinstance(p, str) and p)
    return found


class ScopeWatcher:
    """A tool touches a file outside the ``.agent-scope.json`` policy."""

    name = "scope"

    def __init__(self, policy: ScopePolicy):
        self.policy = policy
        self._seen: set[tuple[str, str]] = set()
        self.violations = 0

    def feed(self, event: Event, now: float) -> list[Finding]:
        if event.event_type not in (ev.TOOL_START, ev.TOOL_END):
            return []
        found = []
        for path, access in event_paths(event):
            if (path, access) in self._seen:
                continue
            self._seen.add((path, access))
            reason = self.policy.check(path, access)
            if reason is not None:
                self.violations += 1
                found.append(Finding(self.name, f"ScopeWatcher: {access} {path} ({reason})",
                                     {"path": path, "access": access, "reason": reason, "tool": event.tool_name},
                                     event.ts, event.run_id))
        return found

    def tick(self, now: float, live: bool) -> list[Finding]:
        return []


class DurationWatcher:
    """The session has been running longer than ``max_seconds`` (from its start to the latest event, or to
    now while the process is alive)."""

    name = "duration"

    def __init__(self, max_seconds: float = 1800.0, started_at: float | None = None):
        self.max_seconds = max_seconds
        self.started_at = started_at
        self._fired = False

    def _check(self, at: float, ts: float | None) -> list[Finding]:
        if self._fired or self.started_at is None or at - self.started_at <= self.max_seconds:
            return []
        self._fired = True
        elapsed = at - self.started_at
        return [Finding(self.name, f"DurationWatcher: running {_fmt_seconds(elapsed)} "
                                   f"(threshold: {_fmt_seconds(self.max_seconds)})",
                        {"elapsed_seconds": round(elapsed, 3), "threshold_seconds": self.max_seconds}, ts)]

    def feed(self, event: Event, now: float) -> list[Finding]:
        if self.started_at is None:
            self.started_at = event.ts
        return self._check(event.ts, event.ts)

    def tick(self, now: float, live: bool) -> list[Finding]:
        return self._check(now, None) if live else []


class LoopWatcher:
    """A sequence of ``sequence_length``+ distinct tool calls (tool + arguments) repeats ``max_repeats``
    times back to back, within one run: read → edit → test → read → edit → test → ..."""

    name = "loop"

    def __init__(self, sequence_length: int = 3, max_repeats: int = 3, longest: int | None = None):
        if sequence_length < 2 or max_repeats < 2:
            raise ValueError("sequence_length >= 2 and max_repeats >= 2")
        self.sequence_length = sequence_length
        self.max_repeats = max_repeats
        self.longest = max(longest or 2 * sequence_length, sequence_length)
        self._history: dict[str | None, deque] = {}

    def feed(self, event: Event, now: float) -> list[Finding]:
        if event.event_type != ev.TOOL_END:
            return []
        history = self._history.get(event.run_id)
        if history is None:
            if len(self._history) > 1000:
                self._history.pop(next(iter(self._history)))
            history = self._history[event.run_id] = deque(maxlen=self.longest * self.max_repeats)
        history.append((event.tool_name or "?", event.args_hash or (event.detail or {}).get("command")))
        items = list(history)
        n = self.max_repeats
        for length in range(self.sequence_length, self.longest + 1):
            if len(items) < length * n:
                break
            tail = items[-length:]
            if len(set(tail)) < 2:
                continue
            if all(items[-length * (k + 1):len(items) - length * k] == tail for k in range(1, n)):
                history.clear()
                names = [tool for tool, _ in tail]
                return [Finding(self.name, f"LoopWatcher: detected loop ({'→'.join(names)}) × {n}",
                                {"sequence": names, "length": length, "repeats": n}, event.ts, event.run_id)]
        return []

    def tick(self, now: float, live: bool) -> list[Finding]:
        return []


class SilenceWatcher:
    """No event at all (heartbeats included) for ``max_seconds`` while the process is verified alive: the
    agent is hung so hard that even its heartbeat thread stopped, or its recorder is wedged."""

    name = "silence"

    def __init__(self, max_seconds: float = 30.0):
        self.max_seconds = max_seconds
        self.last_activity: float | None = None
        self._fired = False

    def activity(self, now: float) -> None:
        self.last_activity = now
        self._fired = False

    def feed(self, event: Event, now: float) -> list[Finding]:
        return []

    def tick(self, now: float, live: bool) -> list[Finding]:
        if not live or self._fired:
            return []
        if self.last_activity is None:
            self.last_activity = now
            return []
        quiet = now - self.last_activity
        if quiet <= self.max_seconds:
            return []
        self._fired = True
        return [Finding(self.name, f"SilenceWatcher: no events for {_fmt_seconds(quiet)} while the process "
                                   "is alive", {"silent_seconds": round(quiet, 3),
                                                "threshold_seconds": self.max_seconds})]


class BudgetWatcher:
    """A recorded ``budget_exceeded`` (a TokenBudget refused or overran), or the session's tokens going
    over ``max_tokens`` (for agents without an in-process budget)."""

    name = "budget"

    def __init__(self, max_tokens: int | None = None):
        self.max_tokens = max_tokens
        self.tokens = 0
        self._fired_tokens = False
        self._fired_budgets: set[str | None] = set()

    def feed(self, event: Event, now: float) -> list[Finding]:
        kind = event.event_type
        if kind == ev.BUDGET_EXCEEDED:
            if event.name in self._fired_budgets:
                return []
            self._fired_budgets.add(event.name)
            detail = dict(event.detail or {})
            limit = detail.get("limit")
            if isinstance(limit, (int, float)) and limit > 0:
                held = (detail.get("committed") or 0) + (detail.get("reserved") or 0)
                detail["utilization"] = round(held / limit, 4)
            detail.update(budget=event.name, tokens=event.token_count, how=event.reason)
            return [Finding(self.name, f"BudgetWatcher: budget {event.name!r} exceeded ({event.reason or '-'})",
                            detail, event.ts, event.run_id)]
        if kind == ev.LLM_CALL and self.max_tokens:
            used = event.token_count if event.token_count is not None else (
                (event.input_tokens or 0) + (event.output_tokens or 0))
            self.tokens += used
            if not self._fired_tokens and self.tokens > self.max_tokens:
                self._fired_tokens = True
                return [Finding(self.name, f"BudgetWatcher: {self.tokens} tokens (threshold: {self.max_tokens})",
                                {"tokens": self.tokens, "threshold_tokens": self.max_tokens,
                                 "utilization": round(self.tokens / self.max_tokens, 4)}, event.ts, event.run_id)]
        return []

    def tick(self, now: float, live: bool) -> list[Finding]:
        return []


class DetectorWatcher:
    """The Judge's verdicts (the same ``Judge.feed`` the in-process Monitor and ``replay`` run: loops, cost
    over baseline) and recorded breakers opening. The core feeds it detections, not raw events."""

    name = "detectors"

    def feed(self, event: Event, now: float) -> list[Finding]:
        if event.event_type == ev.DETECTION:
            detail = dict(event.detail or {})
            detail["detector"] = event.detector
            return [Finding(self.name, f"Detector {event.detector}: "
                                       f"{json.dumps(event.detail or {}, separators=(',', ':'))}",
                            detail, event.ts, event.run_id)]
        if event.event_type == ev.BREAKER_TRANSITION and event.state == "open":
            return [Finding(self.name, f"Detector breaker: {event.name!r} opened ({event.reason or '-'})",
                            {"detector": "breaker", "breaker": event.name, "reason": event.reason},
                            event.ts, event.run_id)]
        return []

    def tick(self, now: float, live: bool) -> list[Finding]:
        return []


def family(finding: Finding) -> str:
    """What a finding is about, for correlation: the loop watcher and the Judge's loop detectors see the
    same symptom, and so do the cost watcher and cost-over-baseline; they must not escalate each other."""
    if finding.watcher == "detectors":
        detector = finding.detail.get("detector")
        return "cost" if detector == COST_OVER_BASELINE else "breaker" if detector == "breaker" else "loop"
    return finding.watcher
