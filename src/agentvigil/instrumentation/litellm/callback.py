"""The LiteLLM callback: a ``CustomLogger`` whose hooks open an agentvigil LLM call before the provider is
called and finish it from LiteLLM's success / failure events (sync, async, streaming).

Where each hook runs, and why it matters:

* ``async_pre_call_deployment_hook`` — every ``acompletion`` / ``aembedding`` / ``atext_completion``, in the
  caller's task, before anything is sent. It is the one hook whose exception LiteLLM lets through to the caller,
  so the guards (breaker, budget, kill switch) are checked here and stop async calls.
* ``log_pre_api_call`` — every call, in the caller's thread, just before the provider request. Sync calls
  start here; LiteLLM swallows anything it raises, so sync calls cannot be stopped (docs/integrations/litellm.md).
  It also marks the context as "inside an instrumented call" until ``log_post_api_call``, so the OpenAI SDK
  integration does not record the SDK request LiteLLM makes for it a second time.
* success / failure events — in LiteLLM's logging thread (sync) or a task (async); a stream's success event
  comes once the stream is consumed, with the assembled response and its usage.

Calls are matched by ``litellm_call_id``; at most ``max_pending`` are held (a stream never consumed would
otherwise hold its call for ever), the oldest finished without usage when full.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from agentvigil._safety import fork_safe_lock
from agentvigil.exceptions import GuardError
from agentvigil.instrumentation._common import _IN_CALL, Invocation, Options, internal_error
from agentvigil.instrumentation.litellm import mapping as m

_COMPONENT = "instrumentation.litellm"


class _Pending:
    """One LiteLLM call in flight. Also the value of the in-call marker: true only while the call is open, so a
    marker left behind in a context LiteLLM never reset suppresses nothing once the call has finished."""

    __slots__ = ("inv", "guarded", "token")

    def __init__(self, inv: Invocation, guarded: bool) -> None:
        self.inv = inv
        self.guarded = guarded      # breaker / budget applied by Invocation (async); else accounted after
        self.token: Any = None

    def __bool__(self) -> bool:
        return not self.inv.done


class AgentVigilLogger(CustomLogger):  # type: ignore[misc]
    """Appended to ``litellm.callbacks`` by ``LiteLLMInstrumentor``; one instance serves every call."""

    def __init__(self, opts: Options, max_pending: int = 4096) -> None:
        super().__init__()
        self.opts = opts
        # sync calls cannot be refused: no reservation or probe slot is taken for them (see _account)
        self._unguarded = dataclasses.replace(opts, breaker=None, budget=None)
        self.max_pending = max_pending
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._lock = fork_safe_lock()
        self._idle = threading.Condition(self._lock)
        self._finishing = 0     # claimed from _pending, being finished: flush waits for these too

    @property
    def in_flight(self) -> int:
        """Calls started and not yet finished (for tests and leak checks)."""
        return len(self._pending)

    # -- starting ------------------------------------------------------------------------------------------
    def _start(self, call_id: Any, ctype: str, provider: str, model: str, request: dict[str, Any],
               attributes: dict[str, Any], guarded: bool) -> _Pending | None:
        operation = m.OPERATIONS.get(ctype)
        if operation is None or not isinstance(call_id, str):
            return None
        with self._lock:
            existing = self._pending.get(call_id)
        if existing is not None:
            return existing
        inv = Invocation.begin(provider, operation, model, request, self.opts if guarded else self._unguarded,
                               attributes=attributes)      # raises only GuardError
        pending = _Pending(inv, guarded)
        evicted: list[_Pending] = []
        with self._lock:
            self._pending[call_id] = pending
            while len(self._pending) > self.max_pending:
                evicted.append(self._pending.popitem(last=False)[1])
        for old in evicted:
            old.inv.finish(None)
        return pending

    def _start_from_logging(self, kwargs: dict[str, Any], guarded: bool = False) -> _Pending | None:
        """Start from LiteLLM's logging kwargs (``model_call_details``): the model is already stripped of its
        provider prefix and ``litellm_params`` names the provider."""
        params = kwargs.get("litellm_params") or {}
        slo = kwargs.get("standard_logging_object") or {}
        provider = m.provider_name(params.get("custom_llm_provider") or kwargs.get("custom_llm_provider")
                                   or m.get(slo, "custom_llm_provider"))
        model = str(kwargs.get("model") or m.get(slo, "model") or "unknown")
        optional = kwargs.get("optional_params") or {}
        request = {"messages": kwargs.get("messages"), "input": kwargs.get("input"), **optional}
        attrs = {**m.request_attributes(optional, kwargs.get("stream") is True),
                 **m.server_attributes(params.get("api_base") or m.get(slo, "api_base"))}
        return self._start(kwargs.get("litellm_call_id"), m.call_type(kwargs.get("call_type")), provider, model,
                           request, attrs, guarded)

    def _pop(self, call_id: Any) -> _Pending | None:
        with self._lock:
            return self._pending.pop(call_id, None) if isinstance(call_id, str) else None

    def _claim(self) -> None:
        with self._lock:
            self._finishing += 1

    def _release(self) -> None:
        with self._lock:
            self._finishing -= 1
            if not self._pending and not self._finishing:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until every started call has had its result from LiteLLM, which
        delivers a sync call's from a logging thread after the call returns. True when none is left open."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending and not self._finishing, timeout)

    # -- LiteLLM hooks -------------------------------------------------------------------------------------
    async def async_pre_call_deployment_hook(self, kwargs: dict[str, Any], call_type: Any) -> dict[str, Any] | None:
        try:
            ctype = m.call_type(call_type)
            if ctype not in m.OPERATIONS:
                return None
            provider, model = m.split_model(kwargs.get("model"), kwargs.get("custom_llm_provider"))
            attrs = {**m.request_attributes(kwargs, kwargs.get("stream") is True),
                     **m.server_attributes(kwargs.get("api_base") or kwargs.get("base_url"))}
            self._start(kwargs.get("litellm_call_id"), ctype, provider, model, kwargs, attrs, guarded=True)
        except GuardError:
            raise               # the documented way to stop the call: LiteLLM re-raises it to the caller
        except Exception as exc:
            internal_error(_COMPONENT, exc)
        return None

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: dict[str, Any]) -> None:
        try:
            with self._lock:
                pending = self._pending.get(kwargs.get("litellm_call_id"))  # type: ignore[arg-type]
            if pending is None:
                pending = self._start_from_logging(kwargs)
            if pending is not None and pending.token is None:
                pending.token = _IN_CALL.set(pending)  # type: ignore[arg-type]
        except GuardError:
            pass                # cannot happen unguarded; never raised into LiteLLM's logging
        except Exception as exc:
            internal_error(_COMPONENT, exc)

    def log_post_api_call(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        try:
            with self._lock:
                pending = self._pending.get(kwargs.get("litellm_call_id"))  # type: ignore[arg-type]
            token = pending.token if pending is not None else None
            if token is not None:
                pending.token = None  # type: ignore[union-attr]
                try:
                    _IN_CALL.reset(token)
                except ValueError:  # posted from another context: the marker there turns false when the call ends
                    pass
        except Exception as exc:
            internal_error(_COMPONENT, exc)

    def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._success(kwargs, response_obj)

    async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        self._success(kwargs, response_obj)

    def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        self._failure(kwargs)

    async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                      end_time: Any) -> None:
        self._failure(kwargs)

    # -- finishing -----------------------------------------------------------------------------------------
    def _success(self, kwargs: dict[str, Any], response: Any) -> None:
        self._claim()
        try:
            pending = self._pop(kwargs.get("litellm_call_id"))
            if pending is None:
                if kwargs.get("cache_hit") is True:
                    return      # served from LiteLLM's cache: no provider call, no tokens spent
                pending = self._start_from_logging(kwargs)
                self._pop(kwargs.get("litellm_call_id"))
                if pending is None:
                    return
            inv = pending.inv
            m.record_usage(inv, response, kwargs.get("standard_logging_object"),
                           embeddings=inv.llm is not None and inv.llm.operation == "embeddings")
            inv.set_response_model(m.get(response, "model"))
            inv.set_attributes(m.response_attributes(response))
            inv.finish(None)
            if not pending.guarded:
                self._account(inv, None, None)
        except Exception as exc:
            internal_error(_COMPONENT, exc)
        finally:
            self._release()

    def _failure(self, kwargs: dict[str, Any]) -> None:
        self._claim()
        try:
            error = kwargs.get("exception")
            if not isinstance(error, BaseException):
                error = RuntimeError(str(kwargs.get("exception") or "litellm call failed"))
            pending = self._pop(kwargs.get("litellm_call_id"))
            if pending is None:
                if isinstance(error, GuardError):
                    return      # our own refusal in the pre-call hook: the call was never made
                pending = self._start_from_logging(kwargs)
                self._pop(kwargs.get("litellm_call_id"))
                if pending is None:
                    return
            kind = m.error_kind(error)
            pending.inv.finish(error, error_kind=kind)
            if not pending.guarded:
                self._account(pending.inv, error, kind)
        except Exception as exc:
            internal_error(_COMPONENT, exc)
        finally:
            self._release()

    def _account(self, inv: Invocation, error: BaseException | None, kind: str | None) -> None:
        """A sync call the guards could not refuse still counts: its outcome feeds the breaker and its usage the
        budget (while the budget has room), so async calls sharing them are refused when they should be."""
        breaker, budget = self.opts.breaker, self.opts.budget
        try:
            if breaker is not None:
                if error is None:
                    breaker.record_success()
                elif isinstance(error, Exception) and not isinstance(error, GuardError):
                    breaker.record_failure(kind or error)
            tokens = inv.total_tokens() if error is None else None
            if budget is not None and tokens and budget.remaining > 0:
                budget.reserve(0).commit(tokens)
        except GuardError:
            pass
        except Exception as exc:
            internal_error(_COMPONENT, exc)

    def close_all(self) -> None:
        """Finish every call still open (uninstrument): nothing is left holding a span or a reservation."""
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._idle.notify_all()
        for p in pending:
            p.inv.finish(None)
