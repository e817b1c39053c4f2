"""CrewAI wiring.

* ``Crew.kickoff`` / ``kickoff_async`` / ``akickoff`` → a **run** (entered as a context manager in the thread that
  runs the crew, so SDK-level LLM instrumentation, OpenAI / Anthropic, attributes calls to it). A kickoff inside
  an agentvigil run you opened yourself uses that run.
* ``Task._execute_core`` / ``_aexecute_core`` → a **step** per task, in the thread that runs it.
* CrewAI's event bus → **tool calls** (``ToolUsageStarted`` / ``ToolUsageFinished`` / ``ToolUsageError``).
  CrewAI runs sync handlers in a thread pool with a copy of the emitting context, so ``current_run()`` inside a
  handler is the crew's run; events may be handled out of order, so finish events that arrive before their
  start are held until it arrives (paired by ``started_event_id``).
* :class:`CrewCallbacks` — the explicit ``step_callback`` / ``task_callback`` adapter for crews you do not want
  patched: each agent step marks progress, each finished task counts as a step.
"""

from __future__ import annotations

from typing import Any

from agentvigil._safety import fork_safe_lock
from agentvigil.exceptions import GuardError
from agentvigil.instrumentation._common import internal_error


def _task_name(task: Any) -> str:
    name = getattr(task, "name", None)
    if not name:
        desc = getattr(task, "description", None) or "task"
        name = str(desc).strip().splitlines()[0][:60] if desc else "task"
    return str(name)


def _start_key(event: Any) -> str | None:
    return getattr(event, "started_event_id", None)


class EventBridge:
    """Pairs CrewAI tool start/finish events and turns them into agentvigil tool calls."""

    def __init__(self) -> None:
        # CrewAI before 1.10 has no ``crewai_event_bus.off``: after uninstrument() the handlers stay registered,
        # so they check this flag and do nothing.
        self.active = True
        self._lock = fork_safe_lock()
        self._open: dict[str, Any] = {}        # start event id -> Step / ToolCall
        self._early: dict[str, tuple] = {}     # start event id -> (result, error) for finishes seen first
        self._fifo: dict[tuple, list[str]] = {}  # (kind, run id, name) -> start ids, when no started_event_id
        # (kind, run id, name) -> finishes seen before any start: CrewAI before 1.10 sends no started_event_id
        self._early_fifo: dict[tuple, list[tuple]] = {}

    def _open_obj(self, kind: str, event: Any, run: Any, obj: Any, name: str) -> None:
        key = getattr(event, "event_id", None) or str(id(obj))
        with self._lock:
            early = self._early.pop(key, None)
            waiting = self._early_fifo.get((kind, id(run), name))
            if early is None and waiting:
                early = waiting.pop(0)
            if early is None:
                self._open[key] = obj
                self._fifo.setdefault((kind, id(run), name), []).append(key)
        if early is not None:
            self._finish(obj, *early)

    def _close_obj(self, kind: str, event: Any, name: str, result: Any, error: Any) -> None:
        from agentvigil.instrumentation import _api as agentvigil

        key = _start_key(event)
        run = agentvigil.current_run()
        with self._lock:
            if key is None:
                queue = self._fifo.get((kind, id(run), name)) or []
                key = queue[0] if queue else None
            obj = self._open.pop(key, None) if key is not None else None
            if key is not None:
                pending = self._fifo.get((kind, id(run), name))
                if pending and key in pending:
                    pending.remove(key)
            if obj is None and key is not None:
                self._early[key] = (result, error)
                return
            if obj is None:
                self._early_fifo.setdefault((kind, id(run), name), []).append((result, error))
                return
        if obj is not None:
            self._finish(obj, result, error)

    @staticmethod
    def _finish(obj: Any, result: Any, error: Any) -> None:
        obj.end(result=result, error=error)

    # -- handlers (called by CrewAI's event bus, never raise) -------------------------------------------------
    def on_tool_started(self, source: Any, event: Any) -> None:
        if not self.active:
            return
        try:
            from agentvigil.instrumentation import _api as agentvigil

            run = agentvigil.current_run()
            if run is None:
                return
            name = str(getattr(event, "tool_name", None) or "tool")
            call = run.start_tool_call(name, getattr(event, "tool_args", None))
            self._open_obj("tool", event, run, call, name)
        except Exception as exc:
            internal_error("instrumentation.crewai", exc)

    def on_tool_finished(self, source: Any, event: Any) -> None:
        if not self.active:
            return
        try:
            name = str(getattr(event, "tool_name", None) or "tool")
            error = None
            if getattr(event, "type", "") == "tool_usage_error":
                raw = getattr(event, "error", None)
                error = raw if isinstance(raw, BaseException) else _ToolError(str(raw))
            self._close_obj("tool", event, name, getattr(event, "output", None), error)
        except Exception as exc:
            internal_error("instrumentation.crewai", exc)


def task_wrapper(is_async: bool) -> Any:
    """``wrapt`` wrapper for ``Task._execute_core`` / ``_aexecute_core``: the task's step, opened in the thread
    that runs the task. A step opened from ``TaskStartedEvent`` would race the task's first model call (the
    bus runs handlers later, in a pool), and that call's span would then hang off the run, not the step."""

    def _start(instance: Any) -> Any:
        try:
            from agentvigil.instrumentation import _api as agentvigil

            run = agentvigil.current_run()
            return run.start_step(_task_name(instance)) if run is not None else None
        except Exception as exc:
            internal_error("instrumentation.crewai", exc)
            return None

    if is_async:
        async def async_wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
            step = _start(instance)
            if step is None:
                return await wrapped(*args, **kwargs)
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                step.end(exc)
                raise
            step.end()
            return result

        return async_wrapper

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        step = _start(instance)
        if step is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            step.end(exc)
            raise
        step.end()
        return result

    return wrapper


class _ToolError(Exception):
    """A CrewAI tool error reported as text by the event bus (classified as ``tool_error``)."""


def kickoff_wrapper(monitor: Any, is_async: bool) -> Any:
    """``wrapt`` wrapper: run the kickoff inside an agentvigil run (unless one is already active)."""

    def _run_for(instance: Any) -> Any:
        from agentvigil.instrumentation import _api as agentvigil

        if agentvigil.current_run() is not None:
            return None
        mon = monitor or agentvigil.default_monitor()
        task_id = getattr(instance, "name", None) or None
        return mon.run(task_id=str(task_id) if task_id else None)

    if is_async:
        async def async_wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
            try:
                run = _run_for(instance)
            except Exception as exc:
                internal_error("instrumentation.crewai", exc)
                run = None
            if run is None:
                return await wrapped(*args, **kwargs)
            async with run:
                return await wrapped(*args, **kwargs)

        return async_wrapper

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            run = _run_for(instance)
        except Exception as exc:
            internal_error("instrumentation.crewai", exc)
            run = None
        if run is None:
            return wrapped(*args, **kwargs)
        with run:
            return wrapped(*args, **kwargs)

    return wrapper


def _instrumentor_active() -> bool:
    import sys

    module = sys.modules.get("agentvigil.instrumentation.crewai")
    cls = getattr(module, "CrewAIInstrumentor", None)
    return bool(cls is not None and cls._instance is not None and cls._instance.is_instrumented_by_opentelemetry)


class CrewCallbacks:
    """Explicit adapter: ``Crew(..., step_callback=cb.step_callback, task_callback=cb.task_callback)``.

    ``step_callback`` (each agent step: AgentAction, AgentFinish or ToolResult) marks progress on the current
    run's monitor (or ``monitor``) and raises a pending guard (kill switch, loop guard) so the crew stops at the
    next step. ``task_callback`` (each finished task) records a step named after the task in the current run.
    Wrap ``crew.kickoff()`` in ``with monitor.run():`` to get runs; ``CrewAIInstrumentor`` does all of this
    without callbacks.
    """

    def __init__(self, monitor: Any = None) -> None:
        self.monitor = monitor
        self.steps = 0
        self.tasks = 0

    def _run_and_monitor(self) -> tuple[Any, Any]:
        from agentvigil.instrumentation import _api as agentvigil

        run = agentvigil.current_run()
        mon = run.monitor if run is not None else (self.monitor or agentvigil.default_monitor())
        return run, mon

    def step_callback(self, step_output: Any) -> None:
        run = None
        try:
            self.steps += 1
            run, mon = self._run_and_monitor()
            mon.heartbeat()
        except Exception as exc:
            internal_error("instrumentation.crewai", exc)
        if run is not None:
            run.check()  # GuardError only: stops the crew at this step

    def task_callback(self, task_output: Any) -> None:
        try:
            self.tasks += 1
            run, mon = self._run_and_monitor()
            if run is None or _instrumentor_active():
                mon.heartbeat()  # the instrumentor already records tasks as steps: do not count twice
                return
            name = getattr(task_output, "name", None) or str(getattr(task_output, "description", "task"))[:60]
            run.start_step(str(name)).end()
        except GuardError:
            raise
        except Exception as exc:
            internal_error("instrumentation.crewai", exc)
