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
        """Raises ValueError naming the key (``deny: expected a list of strings, got "secrets/*"``) when a
        value has the wrong type: a string where a list belongs would otherwise be matched character by
        character (its ``*`` denying every path). A missing or null key is an empty list / section."""
        if not isinstance(rules, dict):
            raise ValueError(f"the policy must be a JSON object, got {_shown(rules)}")
        self.root = os.path.abspath(root)
        files = _section(rules, "files", "files")
        self.allow = {"any": _patterns(rules, "allow", "allow")}
        self.deny = {"any": _patterns(rules, "deny", "deny")}
        for access in ("read", "write"):
            section = _section(files, access, f"files.{access}")
            self.allow[access] = _patterns(section, "allow", f"files.{access}.allow")
            self.deny[access] = _patterns(section, "deny", f"files.{access}.deny")

    @classmethod
    def load(cls, path: str) -> ScopePolicy:
        with open(path, encoding="utf-8") as fh:
            try:
                rules = json.load(fh)
            except RecursionError:
                raise ValueError("the policy is nested too deeply") from None
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


def _shown(value: object, limit: int = 60) -> str:
    """A wrong value as JSON (control characters escaped), cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _section(rules: dict, key: str, name: str) -> dict:
    value = rules.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name}: expected an object, got {_shown(value)}")
    return value


def _patterns(rules: dict, key: str, name: str) -> list[str]:
    value = rules.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"{name}: expected a list of strings, got {_shown(value)}")
    return list(value)


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
