"""A LangChain callback handler that turns chain, LLM, tool and agent callbacks into agentvigil runs, steps,
tool calls and LLM calls.

Mapping:

* top-level chain / graph (no parent run) → a **run** (``monitor.start_run``), made the current run so SDK-level
  instrumentation (OpenAI, Anthropic) inside it is attributed to it. If an agentvigil run is already active
  (``with mon.run():`` around ``chain.invoke``) that run is used instead and left for you to end.
* a LangGraph node (``metadata["langgraph_node"]`` equal to the runnable's name) → a **step** named after the
  node; ``on_agent_action`` (classic agents) → a step per action.
* tool start/end/error → a **tool call** (arguments hashed; raw arguments on the span only with content capture).
* chat model / LLM start/end/error → an **LLM call** with usage from ``AIMessage.usage_metadata`` (input
  inclusive of cache, cache read/creation from ``input_token_details``) or ``llm_output["token_usage"]``. When
  the model's SDK is itself instrumented by agentvigil (``ls_provider`` openai/azure with the OpenAI
  instrumentor, anthropic with the Anthropic one, amazon_bedrock with the Bedrock one) the handler leaves the
  call to the SDK wrapper, which sees cached tokens and SDK error classes: each call is recorded exactly once.

Guards: the handler runs inline and has ``raise_error = True``, but every method swallows its own failures;
only agentvigil's deliberate ``GuardError``s (RunKilled, LoopDetected with ``loop_action="raise"``) escape, at
the next step or tool boundary, which is how a kill switch stops a LangChain agent.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from agentvigil._context import current_run_var
from agentvigil._safety import fork_safe_lock
from agentvigil.errors import PARSE_ERROR, UNKNOWN_TOOL
from agentvigil.exceptions import GuardError
from agentvigil.instrumentation._common import internal_error

# The node step the handler opened in this context; ``monitored_node`` skips its own step when set.
NODE_STEP: ContextVar[Any] = ContextVar("agentvigil_langgraph_node_step", default=None)

# Exceptions LangGraph uses for control flow (interrupts, Command handoffs): not errors.
_CONTROL_FLOW = frozenset({"GraphInterrupt", "NodeInterrupt", "GraphBubbleUp", "ParentCommand",
                           "GraphRecursionError_"})

# ls_provider values whose calls go through an SDK we instrument: provider -> instrumentor import path.
_SDK_PROVIDERS = {
    "openai": ("agentvigil.instrumentation.openai", "OpenAIInstrumentor"),
    "azure": ("agentvigil.instrumentation.openai", "OpenAIInstrumentor"),
    "anthropic": ("agentvigil.instrumentation.anthropic", "AnthropicInstrumentor"),
    "amazon_bedrock": ("agentvigil.instrumentation.bedrock", "BedrockInstrumentor"),   # langchain-aws
}


def _sdk_instrumented(provider: str | None) -> bool:
    target = _SDK_PROVIDERS.get(str(provider or "").lower())
    if target is None:
        return False
    import sys

    module = sys.modules.get(target[0])
    if module is None:
        return False
    cls = getattr(module, target[1], None)
    return bool(cls is not None and cls._instance is not None and cls._instance.is_instrumented_by_opentelemetry)


def _is_control_flow(error: BaseException | None) -> bool:
    return error is not None and type(error).__name__ in _CONTROL_FLOW


class _Node:
    __slots__ = ("kind", "run", "obj", "prev", "agent_step", "node_token", "tool_call_ids")

    def __init__(self, kind: str, run: Any, obj: Any = None) -> None:
        self.kind = kind          # run | attached | step | chain | tool | llm | skip
        self.run = run            # the agentvigil Run this LangChain run belongs to (may be None)
        self.obj = obj            # Run / Step / ToolCall / LLMCall
        self.prev: Any = None     # current-run value to restore when a run we activated ends
        self.agent_step: Any = None
        self.node_token: Any = None
        self.tool_call_ids: set[str] | None = None   # of the tools this node ran (a LangGraph node)


# The tools a classic AgentExecutor runs in place of an action it could not parse or dispatch
# (langchain_classic.agents: ExceptionTool with handle_parsing_errors, InvalidTool for an unknown tool name):
# recorded as rejected actions, not tool calls, with their reason as error_kind.
REJECTED_ACTIONS = {"_Exception": PARSE_ERROR, "invalid_tool": UNKNOWN_TOOL}


def _unknown_tool_answers(outputs: Any, ran: set[str] | None) -> list[Any]:
    """The ToolMessages a LangGraph ToolNode answered a call of a tool it does not have with: it runs no tool
    (so no tool callback) and answers ``status="error"``, "Error: <name> is not a valid tool, ...". A message of
    a tool this node ran is never one."""
    messages = outputs.get("messages") if isinstance(outputs, dict) else outputs
    if not isinstance(messages, (list, tuple)):
        messages = [messages]
    found = []
    for message in messages:
        if getattr(message, "type", None) != "tool" or getattr(message, "status", None) != "error":
            continue
        call_id, content = getattr(message, "tool_call_id", None), getattr(message, "content", None)
        if (ran is None or call_id not in ran) and isinstance(content, str) \
                and content.startswith(f"Error: {getattr(message, 'name', None)} is not a valid tool"):
            found.append(message)
    return found


def _name(serialized: dict[str, Any] | None, kwargs: dict[str, Any], default: str) -> str:
    name = kwargs.get("name")
    if name:
        return str(name)
    if serialized:
        if serialized.get("name"):
            return str(serialized["name"])
        ident = serialized.get("id")
        if isinstance(ident, list) and ident:
            return str(ident[-1])
    return default


def _start_llm(run: Any, monitor: Any, provider: str, model: str) -> Any:
    """Start a core LLM call attributed to ``run`` (or ``monitor`` outside any run)."""
    from agentvigil.instrumentation import _api as agentvigil

    if run is None:
        return agentvigil.start_llm_call(provider=provider, model=model, monitor=monitor)
    starter = getattr(run, "start_llm_call", None)
    if starter is not None:
        return starter(provider=provider, model=model)
    token = current_run_var.set(run)
    try:
        return agentvigil.start_llm_call(provider=provider, model=model)
    finally:
        current_run_var.reset(token)


def _usage_from_result(response: Any) -> tuple[dict[str, int] | None, str | None]:
    """(usage, response model) from an LLMResult. Usage keys: input, output, cache_read, cache_write."""
    total: dict[str, int] = {}
    model = None
    for generations in getattr(response, "generations", None) or []:
        for gen in generations or []:
            message = getattr(gen, "message", None)
            meta = getattr(message, "usage_metadata", None)
            if meta:
                details = meta.get("input_token_details") or {}
                for key, value in (("input", meta.get("input_tokens")), ("output", meta.get("output_tokens")),
                                   ("cache_read", details.get("cache_read")),
                                   ("cache_write", details.get("cache_creation"))):
                    if isinstance(value, int):
                        total[key] = total.get(key, 0) + value
            rmeta = getattr(message, "response_metadata", None) or {}
            model = model or rmeta.get("model_name") or rmeta.get("model")
    llm_output = getattr(response, "llm_output", None) or {}
    model = model or llm_output.get("model_name") or llm_output.get("model")
    if not total:
        usage = llm_output.get("token_usage") or llm_output.get("usage") or {}
        if isinstance(usage, dict) and usage:
            inp = usage.get("prompt_tokens", usage.get("input_tokens"))
            out = usage.get("completion_tokens", usage.get("output_tokens"))
            if isinstance(inp, int) or isinstance(out, int):
                total = {"input": int(inp or 0), "output": int(out or 0)}
                details = usage.get("prompt_tokens_details") or {}
                if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                    total["cache_read"] = details["cached_tokens"]
    return (total or None), model


class AgentVigilCallbackHandler(BaseCallbackHandler):
    """Pass it in ``callbacks=[...]`` / ``config={"callbacks": [...]}``, or let ``LangChainInstrumentor`` add it
    to every callback manager. One handler may serve any number of concurrent runs."""

    run_inline = True     # so the run we activate is visible to the chain's own code (sync and async)
    raise_error = True    # only GuardErrors ever escape our methods (see the module docstring)

    def __init__(self, monitor: Any = None, *, record_llm_calls: bool | None = None) -> None:
        """``monitor``: the Monitor runs are started on (default: ``agentvigil.default_monitor()``).
        ``record_llm_calls``: ``None`` (default) records LLM calls unless the model's SDK is instrumented by
        agentvigil; ``True`` always; ``False`` never."""
        super().__init__()
        self.monitor = monitor
        self.record_llm_calls = record_llm_calls
        self._nodes: dict[UUID, _Node] = {}
        self._lock = fork_safe_lock()

    # -- bookkeeping ---------------------------------------------------------------------------------------
    def _get(self, run_id: UUID | None) -> _Node | None:
        if run_id is None:
            return None
        with self._lock:
            return self._nodes.get(run_id)

    def _put(self, run_id: UUID, node: _Node) -> None:
        with self._lock:
            self._nodes[run_id] = node

    def _pop(self, run_id: UUID) -> _Node | None:
        with self._lock:
            return self._nodes.pop(run_id, None)

    def _run_for(self, parent_run_id: UUID | None) -> Any:
        parent = self._get(parent_run_id)
        if parent is not None:
            return parent.run
        return current_run_var.get()

    def _monitor(self) -> Any:
        if self.monitor is not None:
            return self.monitor
        from agentvigil.instrumentation import _api as agentvigil

        return agentvigil.default_monitor()

    @property
    def active(self) -> int:
        """LangChain runs in flight that this handler is tracking (for tests / leak checks)."""
        return len(self._nodes)

    # -- chains: runs and steps -------------------------------------------------------------------------------
    def on_chain_start(self, serialized: dict[str, Any], inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            md = metadata or {}
            name = _name(serialized, kwargs, "chain")
            parent = self._get(parent_run_id)
            if parent is None:
                existing = current_run_var.get()
                if existing is not None:
                    self._put(run_id, _Node("attached", existing))
                    return
                task_id = md.get("agentvigil_task_id") or md.get("task_id") or md.get("thread_id")
                run = self._monitor().start_run(task_id=str(task_id) if task_id is not None else None)
                node = _Node("run", run, run)
                node.prev = current_run_var.get()
                current_run_var.set(run)
                self._put(run_id, node)
                return
            run = parent.run
            # LangGraph 0.2 runs its START node visibly (tagged langsmith:hidden only): not a step
            if (run is not None and md.get("langgraph_node") == name and name != "__start__"
                    and not any(str(t).startswith("langgraph:hidden") for t in tags or ())):
                run.check()  # kill switch / loop guard boundary
                step = run.start_step(name)
                node = _Node("step", run, step)
                node.node_token = NODE_STEP.set(step)
                self._put(run_id, node)
                return
            self._put(run_id, _Node("chain", run))
        except GuardError:
            raise
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    def _end_chain(self, run_id: UUID, error: BaseException | None) -> None:
        node = self._pop(run_id)
        if node is None:
            return
        if _is_control_flow(error):
            error = None
        if node.agent_step is not None:
            node.agent_step.end(error)
        if node.kind == "run":
            node.obj.end(error)
            current_run_var.set(node.prev)
        elif node.kind == "step":
            node.obj.end(error)
            try:
                NODE_STEP.reset(node.node_token)
            except ValueError:  # ended in another context than started
                NODE_STEP.set(None)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            node = self._get(run_id)
            if node is not None and node.kind == "step" and node.run is not None:
                for message in _unknown_tool_answers(outputs, node.tool_call_ids):
                    call = node.run.start_tool_call(str(message.name), None, call_id=message.tool_call_id)
                    call.reject(UNKNOWN_TOOL)
                    call.end(result=message.content)
            self._end_chain(run_id, None)
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end_chain(run_id, error)
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    # -- classic agents: one step per action -----------------------------------------------------------------
    def on_agent_action(self, action: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            node = self._get(run_id)
            if node is None or node.run is None:
                return
            if node.agent_step is not None:
                node.agent_step.end()
            node.run.check()
            node.agent_step = node.run.start_step(str(getattr(action, "tool", None) or "agent_action"))
        except GuardError:
            raise
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    def on_agent_finish(self, finish: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            node = self._get(run_id)
            if node is not None and node.agent_step is not None:
                node.agent_step.end()
                node.agent_step = None
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    # -- tools -------------------------------------------------------------------------------------------------
    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: list[str] | None = None,
                      metadata: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        try:
            run = self._run_for(parent_run_id)
            if run is None:
                return
            run.check()  # kill switch / loop guard boundary
            name = _name(serialized, kwargs, "tool")
            call_id = kwargs.get("tool_call_id")
            call = run.start_tool_call(name, inputs if inputs is not None else input_str, call_id=call_id)
            parent = self._get(parent_run_id)
            if call_id is not None and parent is not None and parent.kind == "step":
                if parent.tool_call_ids is None:
                    parent.tool_call_ids = set()
                parent.tool_call_ids.add(str(call_id))
            rejected = REJECTED_ACTIONS.get(name)
            if rejected is not None:
                call.reject(rejected)
            self._put(run_id, _Node("tool", run, call))
        except GuardError:
            raise
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            node = self._pop(run_id)
            if node is None or node.kind != "tool":
                return
            # ToolNode(handle_tool_errors=...) or a tool may *return* an error ToolMessage instead of raising.
            if getattr(output, "status", None) == "error":
                node.obj.end(result=getattr(output, "content", output), error_kind="tool_error")
            else:
                node.obj.end(result=getattr(output, "content", output))
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            node = self._pop(run_id)
            if node is not None and node.kind == "tool":
                node.obj.end(error=error)
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    # -- LLM calls -----------------------------------------------------------------------------------------------
    def _llm_start(self, serialized: dict[str, Any] | None, run_id: UUID, parent_run_id: UUID | None,
                   metadata: dict[str, Any] | None, kwargs: dict[str, Any]) -> None:
        try:
            md = metadata or {}
            params = kwargs.get("invocation_params") or {}
            provider = str(md.get("ls_provider") or params.get("_type") or "langchain")
            if self.record_llm_calls is False or (self.record_llm_calls is None and _sdk_instrumented(provider)):
                return
            model = str(md.get("ls_model_name") or params.get("model") or params.get("model_name")
                        or _name(serialized, {}, "unknown"))
            run = self._run_for(parent_run_id)
            call = _start_llm(run, self.monitor, provider, model)
            if call.span is not None:
                call.set_attributes(_request_attributes(params))
            self._put(run_id, _Node("llm", run, call))
        except GuardError:
            raise
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    def on_chat_model_start(self, serialized: dict[str, Any], messages: Any, *, run_id: UUID,
                            parent_run_id: UUID | None = None, tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._llm_start(serialized, run_id, parent_run_id, metadata, kwargs)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._llm_start(serialized, run_id, parent_run_id, metadata, kwargs)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            node = self._pop(run_id)
            if node is None or node.kind != "llm":
                return
            call = node.obj
            usage, model = _usage_from_result(response)
            if usage:
                call.set_usage(usage.get("input", 0), usage.get("output", 0), usage.get("cache_read", 0),
                               usage.get("cache_write", 0))
            if model:
                call.set_response_model(model)
            if call.span is not None:
                reasons = _finish_reasons(response)
                if reasons:
                    call.set_attributes({"gen_ai.response.finish_reasons": reasons})
            call.end()
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            node = self._pop(run_id)
            if node is not None and node.kind == "llm":
                node.obj.end(error)
        except Exception as exc:
            internal_error("instrumentation.langchain", exc)


_REQUEST_PARAMS = (("temperature", "gen_ai.request.temperature"), ("top_p", "gen_ai.request.top_p"),
                   ("max_tokens", "gen_ai.request.max_tokens"), ("max_completion_tokens", "gen_ai.request.max_tokens"),
                   ("seed", "gen_ai.request.seed"), ("frequency_penalty", "gen_ai.request.frequency_penalty"),
                   ("presence_penalty", "gen_ai.request.presence_penalty"), ("top_k", "gen_ai.request.top_k"))


def _request_attributes(params: dict[str, Any]) -> dict[str, Any]:
    """GenAI request attributes from LangChain's ``invocation_params`` (only scalar values that were given)."""
    out: dict[str, Any] = {}
    for key, name in _REQUEST_PARAMS:
        value = params.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    stop = params.get("stop") or params.get("stop_sequences")
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, (list, tuple)) and all(isinstance(x, str) for x in stop):
        out["gen_ai.request.stop_sequences"] = list(stop)
    return out


def _finish_reasons(response: Any) -> list[str]:
    reasons: list[str] = []
    for batch in getattr(response, "generations", None) or ():
        for generation in batch or ():
            info = getattr(generation, "generation_info", None) or {}
            reason = info.get("finish_reason") or info.get("stop_reason")
            if isinstance(reason, str):
                reasons.append(reason)
    return reasons
