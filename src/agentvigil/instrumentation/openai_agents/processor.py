"""The OpenAI Agents SDK's traces as agentvigil runs: a ``TracingProcessor`` that turns the SDK's trace and span
callbacks into calls of the Monitor API (docs/integrations/openai_agents.md has the mapping table).

* trace → **run** (started on the ``monitor`` option, or adopted when a run is already current), made current in
  the trace's context so the OpenAI / MCP integrations and the user's tools attach to it;
* response / generation span → the start of a **step** (one model turn, named after the agent) and an **LLM
  call**, unless the OpenAI SDK integration recorded that call itself (it claims it: see ``MODEL_CALL_CLAIM``);
* agent span → the agent the steps are named after; its end (a handoff, or the agent's last turn) ends the step;
* function span → **tool call** (arguments hashed, output fingerprinted, errors as ``tool_error``); arguments
  the SDK could not parse (not a JSON object) make it a **rejected** action (``parse_error``);
* handoff span → a tool call named ``handoff`` (arguments: the two agent names);
* guardrail span → a tool call named ``guardrail:<name>``, ``rejected`` when its tripwire triggered.

The SDK catches whatever a processor raises, so nothing here can stop a run: guard exceptions are raised at the
model call by the OpenAI SDK integration. Every callback is wrapped: our failures are counted, never raised.
Prompts, completions and raw tool arguments / results are read only to hash them.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from typing import Any

from agents.tracing import TracingProcessor

from agentvigil._context import current_run_var
from agentvigil._safety import fork_safe_lock
from agentvigil.codec import digest
from agentvigil.errors import PARSE_ERROR, TOOL_ERROR, classify_exception
from agentvigil.exceptions import GuardError
from agentvigil.instrumentation._common import MODEL_CALL_CLAIM, internal_error

COMPONENT = "instrumentation.openai_agents"
PROVIDER = "openai"
HANDOFF = "handoff"
GUARDRAIL_PREFIX = "guardrail:"
GUARDRAIL_TRIPPED = "guardrail_tripped"
MAX_OPEN_TRACES = 4096     # traces never ended (an SDK bug, a killed task) must not grow memory without bound
MAX_OPEN_SPANS = 16384
_MODEL_SPANS = frozenset({"response", "generation"})
_STATUS = re.compile(r"error code:\s*(\d{3})", re.IGNORECASE)


class AgentsSpanError(Exception):
    """An error the SDK reported on a span (``SpanError``): only its message and data survive the SDK."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def _span_error(span: Any) -> AgentsSpanError | None:
    error = getattr(span, "error", None)
    if not error:
        return None
    message = str(error.get("message") or "error") if isinstance(error, dict) else str(error)
    data = error.get("data") if isinstance(error, dict) else None
    detail = str(data.get("error") or "") if isinstance(data, dict) else ""
    match = _STATUS.search(detail)
    return AgentsSpanError(f"{message}: {detail}" if detail else message,
                           int(match.group(1)) if match else None)


def _seconds(span: Any) -> float | None:
    try:
        start, end = getattr(span, "started_at", None), getattr(span, "ended_at", None)
        if not start or not end:
            return None
        return max(0.0, (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())
    except (TypeError, ValueError):
        return None


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_of(data: Any) -> tuple[int, int, int, int] | None:
    """(input inclusive of cache, output, cache read, cache write) from a model span: its ``usage`` dict (SDK
    releases since mid-2025), else the Responses API object's ``usage`` (older releases)."""
    usage = getattr(data, "usage", None)
    if usage is None:
        usage = getattr(getattr(data, "response", None), "usage", None)
    if usage is None:
        return None
    inp = _int(_get(usage, "input_tokens"))
    if inp is None:
        inp = _int(_get(usage, "prompt_tokens"))
    out = _int(_get(usage, "output_tokens"))
    if out is None:
        out = _int(_get(usage, "completion_tokens"))
    if inp is None and out is None:
        return None
    details = _get(usage, "input_tokens_details") or _get(usage, "prompt_tokens_details")
    read = _int(_get(details, "cached_tokens")) if details is not None else None
    if read is None:
        read = _int(_get(usage, "cached_input_tokens"))
    write = _int(_get(details, "cache_write_tokens")) if details is not None else None
    return inp or 0, out or 0, read or 0, write or 0


def model_of(data: Any) -> tuple[str, str | None]:
    """(requested model, response model): generation spans name the model; response spans carry the Responses
    API object only when the run includes sensitive data in its traces (the SDK's default)."""
    model = getattr(data, "model", None)
    response = getattr(data, "response", None)
    answered = getattr(response, "model", None) if response is not None else None
    return str(model or answered or "unknown"), str(answered) if answered else None


def _arguments(raw: Any) -> Any:
    """Tool arguments as the model sent them (a JSON string), parsed so equal calls hash equal."""
    if raw is None or not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _unparsable(raw: Any, args: Any) -> bool:
    """Arguments the SDK refuses before calling the tool ("Invalid JSON input for tool"): the input ``raw``
    parsed (``_arguments``) to something other than an object, or not at all. The SDK may redact its error's
    text, so the input itself is what tells. No input (sensitive data off) or an empty one (the SDK calls the
    tool with {}): not refused."""
    return isinstance(raw, str) and bool(raw) and not isinstance(args, dict)


class _Trace:
    __slots__ = ("run", "owned", "token", "agents", "step", "error", "lock", "handling", "models")

    def __init__(self, run: Any, owned: bool, token: Any) -> None:
        self.run = run
        self.owned = owned
        self.token = token
        # the exception already being handled where the trace started (a run inside an ``except`` block): not the
        # run's failure when it is still the one in flight at the trace's end
        self.handling = sys.exc_info()[1]
        self.models: dict[str | None, str] = {}   # agent -> the model that last answered it (for failed calls)
        self.agents: list[str] = []     # the SDK agents active in this trace (agents as tools nest)
        self.step: Any = None           # the open step: the current model turn
        self.error: AgentsSpanError | None = None
        self.lock = fork_safe_lock()

    def end_step(self) -> None:
        step, self.step = self.step, None
        if step is not None:
            step.end()

    def start_step(self) -> None:
        self.end_step()
        self.step = self.run.start_step(self.agents[-1] if self.agents else None)


class AgentsProcessor(TracingProcessor):  # type: ignore[misc]
    """Registered with ``agents.add_trace_processor`` by ``OpenAIAgentsInstrumentor``."""

    def __init__(self, monitor: Any = None, limits: dict[str, Any] | None = None) -> None:
        self.monitor = monitor
        self.limits = {k: v for k, v in (limits or {}).items() if v is not None}
        self.active = True      # False once uninstrumented: a processor the SDK still holds does nothing
        self._lock = fork_safe_lock()
        self._traces: dict[str, _Trace] = {}
        # span id -> (trace id, ToolCall or the (claim list, contextvar token) of a model span)
        self._spans: dict[str, tuple[str, Any]] = {}

    # -- traces -------------------------------------------------------------------------------------------
    def on_trace_start(self, trace: Any) -> None:
        if not self.active:
            return
        try:
            self._trace_start(trace)
        except Exception as exc:
            internal_error(COMPONENT, exc)

    def _trace_start(self, trace: Any) -> None:
        trace_id = str(getattr(trace, "trace_id", "") or "")
        with self._lock:
            if trace_id in self._traces:
                return   # a resumed trace started again: the run is already open
            if len(self._traces) >= MAX_OPEN_TRACES:
                raise OverflowError(f"more than {MAX_OPEN_TRACES} Agents SDK traces open; this one is skipped")
        run = current_run_var.get()
        if run is not None and run.status is not None:
            run = None   # ended: left current by a streamed run of an SDK before 0.1 (its trace ends in a task)
        owned = run is None
        token = None
        if owned:
            from agentvigil.instrumentation import _api

            monitor = self.monitor or _api.default_monitor()
            group = getattr(trace, "group_id", None)
            try:
                run = monitor.start_run(task_id=str(group) if group else None, correlation_id=trace_id or None,
                                        **self.limits)
            except GuardError:
                return   # a kill signal is in force: no run to record (the SDK cannot be stopped from here)
            token = current_run_var.set(run)
        with self._lock:
            self._traces[trace_id] = _Trace(run, owned, token)

    def on_trace_end(self, trace: Any) -> None:
        if not self.active and not self._traces:
            return
        try:
            trace_id = str(getattr(trace, "trace_id", "") or "")
            with self._lock:
                state = self._traces.pop(trace_id, None)
                keys = [key for key, (owner, _) in self._spans.items() if owner == trace_id] if state else ()
                orphans = [self._spans.pop(key)[1] for key in keys]
            if state is None:
                return
            for orphan in orphans:   # spans the SDK never ended (a cancelled tool): not kept past their trace
                if not isinstance(orphan, tuple):
                    orphan.end(error=AgentsSpanError("the SDK never ended this span"))
            with state.lock:
                state.end_step()
            if state.token is not None:
                try:
                    current_run_var.reset(state.token)
                except ValueError:   # the SDK ended the trace in another context than it started it in
                    current_run_var.set(None)
            if state.owned:
                state.run.end(self._run_error(state))
        except Exception as exc:
            internal_error(COMPONENT, exc)

    @staticmethod
    def _run_error(state: _Trace) -> BaseException | None:
        # The SDK ends its trace while the exception that failed the run propagates: the real one classifies
        # best (guard exceptions keep their name, RunKilled makes the run "killed"). Releases that mark no span
        # as failed are covered by it too.
        raised = sys.exc_info()[1]
        if isinstance(raised, Exception) and raised is not state.handling:
            return raised
        return state.error

    # -- spans --------------------------------------------------------------------------------------------
    def on_span_start(self, span: Any) -> None:
        if not self.active:
            return
        try:
            self._span_start(span)
        except Exception as exc:
            internal_error(COMPONENT, exc)

    def _span_start(self, span: Any) -> None:
        state = self._traces.get(str(getattr(span, "trace_id", "") or ""))
        if state is None:
            return
        data = span.span_data
        kind = data.type
        if kind == "agent":
            with state.lock:
                state.agents.append(str(getattr(data, "name", "") or "agent"))
        elif kind in _MODEL_SPANS:
            with state.lock:
                state.start_step()
            claim: list[Any] = []
            self._open(span, (claim, MODEL_CALL_CLAIM.set(claim)))
        elif kind == "function":
            self._open(span, state.run.start_tool_call(str(getattr(data, "name", "") or "function")))
        elif kind == "handoff":
            self._open(span, state.run.start_tool_call(HANDOFF))
        elif kind == "guardrail":
            self._open(span, state.run.start_tool_call(GUARDRAIL_PREFIX + str(getattr(data, "name", "") or "")))

    def _open(self, span: Any, value: Any) -> None:
        with self._lock:
            if len(self._spans) >= MAX_OPEN_SPANS:
                raise OverflowError(f"more than {MAX_OPEN_SPANS} Agents SDK spans open; this one is skipped")
            self._spans[str(span.span_id)] = (str(getattr(span, "trace_id", "") or ""), value)

    def on_span_end(self, span: Any) -> None:
        if not self.active and not self._spans:
            return
        try:
            self._span_end(span)
        except Exception as exc:
            internal_error(COMPONENT, exc)

    def _span_end(self, span: Any) -> None:
        with self._lock:
            _, opened = self._spans.pop(str(span.span_id), (None, None))
        state = self._traces.get(str(getattr(span, "trace_id", "") or ""))
        data = span.span_data
        kind = data.type
        error = _span_error(span)
        if kind in _MODEL_SPANS:
            if opened is not None:
                self._model_end(state, span, data, opened, error)
            return
        if opened is not None:
            self._tool_end(opened, kind, data, error)
        if state is None:
            return
        if kind in ("agent", "task", "turn"):
            with state.lock:
                if error is not None and state.error is None:
                    state.error = error
                if kind == "agent":
                    state.end_step()
                    if state.agents:
                        state.agents.pop()

    def _model_end(self, state: _Trace | None, span: Any, data: Any, opened: Any,
                   error: AgentsSpanError | None) -> None:
        claim, token = opened
        try:
            MODEL_CALL_CLAIM.reset(token)
        except ValueError:   # ended in another context: that context's value is not ours to restore
            pass
        if claim or state is None:
            return   # the OpenAI SDK integration recorded this call (with its guards, stream and error detail)
        model, answered = model_of(data)
        agent = state.agents[-1] if state.agents else None
        if answered is not None:
            state.models[agent] = model
        elif model == "unknown":   # a failed Responses call names no model: the one that answered this agent
            model = state.models.get(agent, model)
        usage = usage_of(data) if error is None else None
        inp, out, read, write = usage or (0, 0, 0, 0)
        state.run.llm_usage(PROVIDER, model, inp, out, read, write, duration_s=_seconds(span),
                            response_model=answered, error=error)

    @staticmethod
    def _tool_end(call: Any, kind: str, data: Any, error: AgentsSpanError | None) -> None:
        if kind == "function":
            raw = getattr(data, "input", None)
            args = _arguments(raw)
            if args is not None:   # the SDK sets the input when the tool ran: hashed here, never kept
                call.args_hash = digest(args)
            output = getattr(data, "output", None)
            if output is not None:
                call.set_result(output)
            if error is not None and _unparsable(raw, args):
                call.reject(PARSE_ERROR)   # the SDK could not call the tool: not a tool failing
                call.end(error=error)
                return
            kind_of = None if error is None else classify_exception(error, default=TOOL_ERROR)
            call.end(error=error, error_kind=kind_of)
        elif kind == "handoff":
            call.args_hash = digest({"from": getattr(data, "from_agent", None), "to": getattr(data, "to_agent", None)})
            call.end(error=error)
        else:   # guardrail
            if getattr(data, "triggered", False):
                call.reject(GUARDRAIL_TRIPPED)
            call.end(error=error)

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass
