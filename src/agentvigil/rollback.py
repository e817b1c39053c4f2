"""Rollback registry: compensating actions per action type, run in reverse order when a run is killed.

Runtime-control practice (seed 002): rollback semantics are defined at design time, per action type —

* ``read``: nothing to undo;
* ``write``: undone by a compensating action (delete the row you inserted, restore the file you changed);
* ``irreversible`` (an email sent, a payment made): a human decides. The compensation (an apology mail, a
  refund) runs only if the approval callback returns True; otherwise the action is reported as
  ``needs_approval`` and left alone.

Usage::

    rollback = agentvigil.RollbackRegistry(approve=ask_on_call)       # approve(action) -> bool
    rollback.register("db_insert", "write", compensate=lambda a: db.delete(a.data["row_id"]))
    rollback.register("send_email", "irreversible", compensate=lambda a: send_correction(a.data["to"]))
    rollback.register("search", "read")

    with mon.run() as run, rollback.scope() as journal:
        row = db.insert(...)
        rollback.record("db_insert", row_id=row.id)      # after the action succeeded
        ...
    # RunKilled leaving the scope (run.kill(), a kill signal or file, `agentvigil watch --on-violation kill`
    # with AGENTVIGIL_KILL_SIGNAL=TERM) runs the compensations, newest first; journal.report says what happened.

Compensations run on the thread that leaves the scope, after the agent has stopped at a boundary, never
concurrently with its own work. A failing compensation is logged and reported, and the others still run.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ._safety import fork_safe_lock
from .exceptions import RunKilled

log = logging.getLogger("agentvigil")

READ = "read"
WRITE = "write"
IRREVERSIBLE = "irreversible"
ACTION_KINDS = (READ, WRITE, IRREVERSIBLE)

# Outcomes of one compensation.
COMPENSATED = "compensated"          # the compensating action ran
NOTHING_TO_UNDO = "nothing_to_undo"  # a read
NEEDS_APPROVAL = "needs_approval"    # irreversible, and the approval callback said no (or there is none)
FAILED = "failed"                    # the compensating action raised
NO_COMPENSATION = "no_compensation"  # a write with no compensating action registered


@dataclass(frozen=True)
class ActionType:
    name: str
    kind: str
    compensate: Callable[[Action], Any] | None = None


@dataclass
class Action:
    """One recorded action: its type, kind, the data its compensation needs, and when it happened."""

    type: str
    kind: str
    data: dict
    ts: float
    compensate: Callable[[Action], Any] | None = None


@dataclass
class Compensation:
    action: Action
    outcome: str
    error: str | None = None


@dataclass
class Journal:
    """Actions recorded in one scope, oldest first; ``report`` is filled by a rollback."""

    actions: list[Action] = field(default_factory=list)
    report: list[Compensation] | None = None
    reason: str | None = None


class RollbackRegistry:
    """Action types, and the journal of actions to compensate. Thread-safe."""

    def __init__(self, approve: Callable[[Action], bool] | None = None):
        self.approve = approve
        self._types: dict[str, ActionType] = {}
        self._lock = fork_safe_lock()
        self._global = Journal()
        self._current: contextvars.ContextVar[Journal | None] = contextvars.ContextVar(
            f"agentvigil_rollback_{id(self)}", default=None)

    def register(self, name: str, kind: str, compensate: Callable[[Action], Any] | None = None) -> ActionType:
        """Declare an action type. ``compensate(action)`` undoes one action of this type; required in spirit
        for ``write``, optional for ``irreversible`` (approval alone then only records the decision)."""
        if kind not in ACTION_KINDS:
            raise ValueError(f"kind must be one of {', '.join(ACTION_KINDS)}, got {kind!r}")
        action_type = ActionType(name, kind, compensate)
        with self._lock:
            self._types[name] = action_type
        return action_type

    def types(self) -> dict[str, ActionType]:
        with self._lock:
            return dict(self._types)

    def record(self, name: str, compensate: Callable[[Action], Any] | None = None, **data: Any) -> Action:
        """Record that an action of type ``name`` happened (call it after the action succeeded). ``data`` is
        what its compensation needs; ``compensate`` overrides the type's for this one action. Goes to the
        innermost ``scope()`` of this context, else to the registry-wide journal."""
        action_type = self._types.get(name)
        if action_type is None:
            raise KeyError(f"unknown action type {name!r}: register it first (rollback semantics are decided "
                           "at design time, not during an incident)")
        action = Action(name, action_type.kind, data, time.time(), compensate or action_type.compensate)
        journal = self._current.get() or self._global
        with self._lock:
            journal.actions.append(action)
        return action

    def pending(self) -> list[Action]:
        journal = self._current.get() or self._global
        with self._lock:
            return list(journal.actions)

    def rollback(self, reason: str = "kill", approve: Callable[[Action], bool] | None = None,
                 journal: Journal | None = None) -> list[Compensation]:
        """Compensate every recorded action of ``journal`` (default: the current scope's, else the
        registry-wide one), newest first, and empty it."""
        journal = journal or self._current.get() or self._global
        with self._lock:
            actions, journal.actions = journal.actions, []
        approve = approve or self.approve
        report = [self._compensate(action, approve, reason) for action in reversed(actions)]
        journal.report, journal.reason = report, reason
        return report

    def commit(self, journal: Journal | None = None) -> None:
        """Forget recorded actions: they are final."""
        journal = journal or self._current.get() or self._global
        with self._lock:
            journal.actions = []

    @contextmanager
    def scope(self, rollback_on: tuple[type[BaseException], ...] = (RunKilled,)) -> Iterator[Journal]:
        """A journal for one run (or any unit of work). Leaving it with one of ``rollback_on`` (RunKilled by
        default) runs the compensations, then re-raises; leaving it otherwise commits."""
        journal = Journal()
        token = self._current.set(journal)
        token_live = True
        try:
            yield journal
        except rollback_on as exc:
            self._current.reset(token)
            token_live = False
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            self.rollback(str(reason), journal=journal)
            raise
        else:
            self.commit(journal)
        finally:
            if token_live:
                self._current.reset(token)

    @staticmethod
    def _compensate(action: Action, approve: Callable[[Action], bool] | None, reason: str) -> Compensation:
        if action.kind == READ:
            return Compensation(action, NOTHING_TO_UNDO)
        if action.kind == IRREVERSIBLE:
            try:
                approved = bool(approve(action)) if approve is not None else False
            except Exception as exc:
                log.warning("agentvigil: rollback approval for %s raised %r; treating as not approved",
                            action.type, exc)
                approved = False
            if not approved:
                log.warning("agentvigil: irreversible action %s (%s) needs a human: not compensated", action.type,
                            reason)
                return Compensation(action, NEEDS_APPROVAL)
        if action.compensate is None:
            if action.kind == WRITE:
                log.warning("agentvigil: no compensating action for write %s", action.type)
            return Compensation(action, NO_COMPENSATION)
        try:
            action.compensate(action)
            return Compensation(action, COMPENSATED)
        except Exception as exc:
            log.warning("agentvigil: compensation of %s failed: %r", action.type, exc)
            return Compensation(action, FAILED, f"{type(exc).__name__}: {exc}")
