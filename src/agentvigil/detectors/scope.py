"""scope: a tool touches a file outside the ``.agent-scope.json`` policy (paths the tool declares:
``detail.path``/``detail.paths``, ``detail.access``)."""

from __future__ import annotations

import fnmatch
import json
import os

from .. import events as ev
from ..events import Event
from ..verdicts import detection


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
    access = "write" if detail.get("access") == "write" else "read"
    found: list[tuple[str, str]] = []
    path = detail.get("path")
    if isinstance(path, str) and path:
        found.append((path, access))
    paths = detail.get("paths")
    if isinstance(paths, list):
        found.extend((p, access) for p in paths if isinstance(p, str) and p)
    return found


class ScopeDetector:
    name = "scope"
    family = "scope"
    consumes = frozenset({ev.TOOL_START, ev.TOOL_END})

    def __init__(self, policy: ScopePolicy):
        self.policy = policy
        self._seen: set[tuple[str, str]] = set()
        self.violations = 0

    def feed(self, event: Event) -> list[Event] | None:
        found = []
        for path, access in event_paths(event):
            if (path, access) in self._seen:
                continue
            if len(self._seen) < 100_000:
                self._seen.add((path, access))
            reason = self.policy.check(path, access)
            if reason is not None:
                self.violations += 1
                found.append(detection(event, self.name, {"path": path, "access": access, "reason": reason,
                                                          "tool": event.tool_name},
                                       f"ScopeWatcher: {access} {path} ({reason})"))
        return found or None

    def tick(self, now: float) -> None:
        return None
