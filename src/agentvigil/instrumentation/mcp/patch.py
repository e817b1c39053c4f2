"""MCP client calls as tool calls of the current run: ``ClientSession.call_tool(name, arguments)`` is
``run.tool_call(name, arguments)`` (span, tool metrics, loop verdicts, error kinds, result fingerprint), and
``list_tools`` is a tool call named ``tools/list`` (a name no MCP tool can take). Outside a run the call
goes through untouched.

A result with ``is_error`` set is a failed call of kind ``tool_error`` (the server reports tool failures in
the result, not as a JSON-RPC error); a JSON-RPC error (``McpError``/``MCPError``) is classified by its code.
A call the server could not execute (an unknown tool, arguments it refused: -32602, or the Python SDK's
"Unknown tool: ..." result) is a rejected action.
The guard exceptions (RunKilled, LoopDetected, RunLimitExceeded) are raised before the request is sent.
"""

from __future__ import annotations

from typing import Any, Callable

from agentvigil._context import current_run
from agentvigil._safety import internal_error
from agentvigil.errors import (
    INVALID_REQUEST,
    NETWORK,
    NOT_FOUND,
    SERVER_ERROR,
    TIMEOUT,
    TOOL_ERROR,
    UNKNOWN_TOOL,
    classify_exception,
)

LIST_TOOLS = "tools/list"
TOOLS_CALL = "tools/call"
SIDE = "agentvigil.mcp.side"          # "client" on ClientSession spans, "server" on a server's (server.py)
METHOD = "mcp.method.name"            # the OTel MCP semantic conventions' attribute

# A tools/call the server could not execute is a rejected action, not a tool failing (docs/events.md): the
# spec's protocol error for an unknown tool or invalid arguments (-32602), or the Python SDK servers' error
# result for an unknown tool ("Unknown tool: <name>")
INVALID_PARAMS = -32602
UNKNOWN_TOOL_TEXT = "Unknown tool: "

# JSON-RPC / MCP error codes (the SDK's ErrorData.code)
_BY_CODE = {
    -32700: INVALID_REQUEST,   # parse error
    -32600: INVALID_REQUEST,   # invalid request
    -32601: NOT_FOUND,         # method not found
    -32602: INVALID_REQUEST,   # invalid params (also: unknown tool, in some servers)
    -32603: SERVER_ERROR,      # internal error
    -32000: NETWORK,           # connection closed
    -32001: TIMEOUT,           # request timeout
    -32002: NOT_FOUND,         # resource not found
}


def _code(exc: BaseException) -> int | None:
    code = getattr(getattr(exc, "error", None), "code", None)
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def error_kind(exc: BaseException) -> str:
    """The kind of an exception raised by a client call: an MCP error by its code, else by the taxonomy."""
    code = _code(exc)
    if code is not None:
        return _BY_CODE.get(code, SERVER_ERROR if -32099 <= code <= -32000 else TOOL_ERROR)
    return classify_exception(exc, default=TOOL_ERROR)


def _get(obj: Any, key: str) -> Any:
    # SDK objects on the client, the wire dict (camelCase) on a 2.x server: one payload for both
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _field(result: Any, snake: str, camel: str) -> Any:
    value = _get(result, snake)
    return _get(result, camel) if value is None else value


def result_payload(result: Any) -> Any:
    """What is hashed and fingerprinted: the text of the content blocks and the structured content, so that
    two identical answers compare equal whatever object ids or metadata the SDK attaches."""
    parts: list[Any] = []
    for block in _field(result, "content", "content") or ():
        text = _get(block, "text")
        if text is not None:
            parts.append(str(text))
        else:   # images, audio, resources: their type and data, not the SDK object
            data = _get(block, "data") or _get(_get(block, "resource"), "uri")
            parts.append(f"{_get(block, 'type') or 'block'}:{data}")
    structured = _field(result, "structured_content", "structuredContent")
    if structured is not None:
        return {"content": parts, "structured": structured}
    return "\n".join(parts) if parts else None


def mark(call: Any, side: str, method: str = TOOLS_CALL) -> None:
    """Tell client and server spans of one tool apart: both are ``execute_tool {name}``."""
    from agentvigil.sinks.spans import span_of

    span = span_of(call)
    if span is not None:
        span.set_attribute(SIDE, side)
        span.set_attribute(METHOD, method)


def _tool_names(result: Any) -> list[str]:
    return sorted(str(getattr(tool, "name", "")) for tool in getattr(result, "tools", None) or ())


def call_tool_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    return _call_tool(wrapped, args, kwargs)


async def _call_tool(wrapped: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    run = current_run()
    if run is None:
        return await wrapped(*args, **kwargs)
    name = args[0] if args else kwargs.get("name")
    arguments = args[1] if len(args) > 1 else kwargs.get("arguments")
    with run.tool_call(str(name), arguments) as call:   # raises a pending guard exception, before the request
        mark(call, "client")
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            if _code(exc) == INVALID_PARAMS:
                call.reject(INVALID_REQUEST)   # a protocol error: an unknown tool or arguments it refused
            else:
                call.error_kind = error_kind(exc)
            raise
        _finish(call, result)
        return result


def list_tools_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
    return _list_tools(wrapped, args, kwargs)


async def _list_tools(wrapped: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    run = current_run()
    if run is None:
        return await wrapped(*args, **kwargs)
    params = args[0] if args else kwargs.get("params") or kwargs.get("cursor")
    cursor = getattr(params, "cursor", params)
    with run.tool_call(LIST_TOOLS, None if cursor is None else {"cursor": str(cursor)}) as call:
        mark(call, "client", LIST_TOOLS)
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            call.error_kind = error_kind(exc)
            raise
        try:
            call.set_result(_tool_names(result))
        except Exception as exc:
            internal_error("instrumentation", exc)
        return result


def judge_result(call: Any, result: Any) -> None:
    """Record a tools/call result on its call: a failed tool (``is_error``) is ``tool_error``; the Python SDK
    servers' answer to an unknown tool ("Unknown tool: <name>") is a rejected action: nothing ran."""
    payload = result_payload(result)
    call.set_result(payload)
    if _field(result, "is_error", "isError"):
        if isinstance(payload, str) and payload.startswith(UNKNOWN_TOOL_TEXT):
            call.reject(UNKNOWN_TOOL)
        else:
            call.error_kind = TOOL_ERROR


def _finish(call: Any, result: Any) -> None:
    try:
        judge_result(call, result)
    except Exception as exc:   # an SDK shape we do not know: the call is still counted
        internal_error("instrumentation", exc)
