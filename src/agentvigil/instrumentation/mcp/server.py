"""MCP server side (opt-in, ``MCPInstrumentor().instrument(server=True)``): each ``tools/call`` request a server
built with the ``mcp`` SDK (``Server`` or ``MCPServer``/``FastMCP``) handles is a **run of its own** on the
server's Monitor, holding one tool call named after the tool.

Why a run per request and not one run for the server's life: a server answers many clients and sessions at once;
one long run would mix their calls (loop verdicts across unrelated clients), never end (no run duration, no run
status) and never be judged. A request is the unit a server owns, and LLM calls a tool handler makes inside it are
costed to that request's run. The run is always the server's own, even when some run is current in the server's
context (an in-process client's): the client's run counts the call on its side, the server's run on its side.

The seam is where the SDK dispatches a request: ``ServerRunner._on_request`` (mcp 2.x) or the ``tools/call``
handler ``Server.call_tool()`` registers (mcp 1.x; servers whose tools are registered after ``instrument()``).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from agentvigil._safety import internal_error
from agentvigil.errors import INVALID_REQUEST
from agentvigil.instrumentation.mcp.patch import TOOLS_CALL, error_kind, judge_result, mark


class _State:
    """The Monitor server runs go to (None: ``agentvigil.default_monitor()``), and whether we are on: the 1.x
    handlers we wrapped stay registered after ``uninstrument()``, and pass through while off."""

    monitor: Any = None
    on = False


state = _State()


def _monitor() -> Any:
    if state.monitor is not None:
        return state.monitor
    from agentvigil.monitor import default_monitor

    return default_monitor()


def _request_kind(exc: BaseException) -> str:
    if type(exc).__name__ == "ValidationError":   # pydantic: the request's params did not validate
        return INVALID_REQUEST
    return error_kind(exc)


async def serve(name: Any, arguments: Any, handle: Callable[[], Awaitable[Any]],
                unwrap: Callable[[Any], Any] = lambda r: r) -> Any:
    """Run ``handle()`` (the SDK's own handling of one ``tools/call``) as a tool call of a new run."""
    try:
        run = _monitor().run()
    except Exception as exc:   # no Monitor: serve the request untouched
        internal_error("instrumentation", exc)
        return await handle()
    async with run:
        with run.tool_call(str(name), arguments) as call:
            mark(call, "server")
            try:
                result = await handle()
            except Exception as exc:
                kind = _request_kind(exc)
                if kind == INVALID_REQUEST:   # params that did not validate: the tool never ran
                    call.reject(kind)
                else:
                    call.error_kind = kind
                raise
            try:
                judge_result(call, unwrap(result))
            except Exception as exc:   # a result shape we do not know: the call is still counted
                internal_error("instrumentation", exc)
            return result


def _name_args(params: Any) -> tuple[Any, Any]:
    if isinstance(params, dict):
        return params.get("name"), params.get("arguments")
    return getattr(params, "name", None), getattr(params, "arguments", None)


def on_request_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """mcp 2.x: ``ServerRunner._on_request(dctx, method, params)``; the result is the wire dict."""
    method = args[1] if len(args) > 1 else kwargs.get("method")
    if not state.on or method != TOOLS_CALL:
        return wrapped(*args, **kwargs)
    name, arguments = _name_args(args[2] if len(args) > 2 else kwargs.get("params"))
    return serve(name, arguments, lambda: wrapped(*args, **kwargs))


def _server_result(result: Any) -> Any:
    return getattr(result, "root", result)   # 1.x: ServerResult(root=CallToolResult)


def call_tool_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    """mcp 1.x: ``Server.call_tool()`` returns the decorator that registers the ``tools/call`` handler; wrap the
    handler it registers."""
    decorator = wrapped(*args, **kwargs)

    def register(func: Any) -> Any:
        out = decorator(func)
        try:
            _wrap_handler(instance)
        except Exception as exc:
            internal_error("instrumentation", exc)
        return out

    return register


def _wrap_handler(server: Any) -> None:
    from mcp import types

    handlers = server.request_handlers
    handler = handlers.get(types.CallToolRequest)
    if handler is None or getattr(handler, "_agentvigil", False):
        return

    async def handle(req: Any) -> Any:
        if not state.on:
            return await handler(req)
        name, arguments = _name_args(getattr(req, "params", None))
        return await serve(name, arguments, lambda: handler(req), _server_result)

    handle._agentvigil = True   # type: ignore[attr-defined]
    handlers[types.CallToolRequest] = handle
