"""MCP client calls against a real MCP server (tests/integrations/mcp_server.py, same SDK) over stdio and
streamable HTTP on 127.0.0.1: tool calls of the current run with spans, metrics, loop verdicts, error kinds
and result fingerprints."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil import LoopDetected, result_fingerprint  # noqa: E402
from agentvigil.instrumentation.mcp import MCPInstrumentor  # noqa: E402
from agentvigil.instrumentation.mcp.patch import result_payload  # noqa: E402

SERVER = Path(__file__).with_name("mcp_server.py")
# scripts/test-oldest.sh runs this file against mcp 1.x too: camelCase result fields, no structured content
# before 1.10, no streamable HTTP before 1.8
_FIELDS = getattr(mcp.types.CallToolResult, "model_fields", {})
HAS_STRUCTURED = "structured_content" in _FIELDS or "structuredContent" in _FIELDS


def is_error(result) -> bool:
    return bool(getattr(result, "is_error", getattr(result, "isError", None)))


def counted(n: int):
    """What result_payload makes of the count tool's answer n."""
    return {"content": [str(n)], "structured": {"result": n}} if HAS_STRUCTURED else str(n)


@pytest.fixture
def make_monitor(registry):
    monitors = []

    def make(agent, **kw):
        mon = agentvigil.Monitor(agent, registry=registry, heartbeat=False, **kw)
        monitors.append(mon)
        return mon

    yield make
    for mon in monitors:
        mon.close()


@pytest.fixture
def instrumented():
    inst = MCPInstrumentor()
    inst.instrument()
    yield inst
    inst.uninstrument()


@asynccontextmanager
async def stdio_session():
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def _events(record_dir: Path) -> list[dict]:
    session = next(p for p in record_dir.iterdir() if p.is_dir())
    return [json.loads(line) for line in (session / "events.ndjson").read_text().splitlines()]


def test_stdio_tool_calls_are_tool_calls_of_the_run(instrumented, make_monitor, sample, tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mon = make_monitor("mcp-agent", tracer_provider=provider, record_dir=str(tmp_path))

    async def agent():
        async with stdio_session() as session:
            with mon.run(task_id="t-1"):
                listed = await session.list_tools()
                ok = await session.call_tool("search", {"q": "cats"})
                failed = await session.call_tool("deploy", {"env": "prod"})
                unknown = await session.call_tool("no_such_tool", {})
            outside = await session.call_tool("search", {"q": "dogs"})   # no run: not ours to count
            return listed, ok, failed, unknown, outside

    listed, ok, failed, unknown, outside = asyncio.run(agent())
    assert {t.name for t in listed.tools} >= {"search", "status", "deploy"}
    assert not is_error(ok) and is_error(failed) and not is_error(outside)
    a = {"agent": "mcp-agent"}
    assert sample("agent_tool_calls_total", tool="tools/list", status="ok", **a) == 1
    assert sample("agent_tool_calls_total", tool="search", status="ok", **a) == 1
    assert sample("agent_tool_calls_total", tool="deploy", status="error", **a) == 1
    assert sample("agent_tool_errors_total", tool="deploy", kind="tool_error", **a) == 1
    assert sample("agent_tool_calls_total", tool="no_such_tool", status="rejected", **a) == 1   # nothing ran
    assert sample("agent_tool_errors_total", tool="no_such_tool", kind="tool_error", **a) == 0
    spans = {s.name for s in exporter.get_finished_spans()}
    assert {"execute_tool search", "execute_tool deploy", "execute_tool tools/list"} <= spans
    mon.flush()
    ends = [e for e in _events(tmp_path) if e["event_type"] == "tool_end"]
    search = next(e for e in ends if e["tool_name"] == "search")
    assert search["result_fingerprint"] == result_fingerprint(result_payload(ok))
    assert search["args_hash"] and "cats" not in json.dumps(ends)   # arguments hashed, never recorded


def test_repeated_identical_calls_raise_the_loop_guard_before_sending(instrumented, make_monitor, sample):
    mon = make_monitor("mcp-loop", loop_action="raise")

    async def agent():
        async with stdio_session() as session:
            sent = 0
            with pytest.raises(LoopDetected):
                with mon.run(task_id="stuck"):
                    for _ in range(10):
                        await session.call_tool("status", {})
                        sent += 1
            answer = await session.call_tool("count", {})   # outside the run: one call on the server
            return sent, answer

    sent, answer = asyncio.run(agent())
    assert 2 <= sent < 10      # stopped well before the loop's end
    assert sample("agent_tool_calls_total", agent="mcp-loop", tool="status", status="ok") == sent
    assert sum(sample("agent_loop_detections_total", agent="mcp-loop", detector=d)
               for d in ("repeat_call", "same_result", "repeated_sequence")) >= 1
    assert result_payload(answer) == counted(1)


def test_run_limit_stops_before_the_next_mcp_call(instrumented, make_monitor):
    mon = make_monitor("mcp-limit")

    async def agent():
        async with stdio_session() as session:
            with pytest.raises(agentvigil.RunLimitExceeded):
                with mon.run(max_steps=1) as run:
                    with run.step():
                        await session.call_tool("count", {})
                    await session.call_tool("count", {})   # refused before it is sent
            return await session.call_tool("count", {})

    assert result_payload(asyncio.run(agent())) == counted(2)


def test_uninstrument_leaves_the_sdk_as_it_was(make_monitor, sample):
    original = ClientSession.call_tool
    inst = MCPInstrumentor()
    inst.instrument()
    assert ClientSession.call_tool is not original
    inst.uninstrument()
    assert ClientSession.call_tool is original
    mon = make_monitor("mcp-off")

    async def agent():
        async with stdio_session() as session:
            with mon.run():
                await session.call_tool("search", {"q": "x"})

    asyncio.run(agent())
    assert sample("agent_tool_calls_total", agent="mcp-off", tool="search", status="ok") == 0


def test_instrument_all_includes_mcp():
    from agentvigil.instrumentation import instrumented as names

    try:
        assert "mcp" in agentvigil.instrument(only=["mcp"])
        assert "mcp" in names()
    finally:
        agentvigil.uninstrument()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server():
    pytest.importorskip("mcp.client.streamable_http", reason="this mcp has no streamable HTTP")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(SERVER), "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):     # bounded wait for the port to accept
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("the MCP server exited")
                time.sleep(0.05)
        else:
            pytest.fail("the MCP server did not listen")
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_streamable_http_on_loopback(instrumented, make_monitor, sample, http_server):
    from mcp.client import streamable_http as transport

    # named streamablehttp_client in 1.x
    streamable_http_client = getattr(transport, "streamable_http_client", None) or transport.streamablehttp_client

    mon = make_monitor("mcp-http")

    async def agent():
        async with streamable_http_client(http_server) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                await session.initialize()
                with mon.run():
                    await session.list_tools()
                    await session.call_tool("search", {"q": "cats"})
                    await session.call_tool("deploy", {"env": "prod"})

    asyncio.run(agent())
    a = {"agent": "mcp-http"}
    assert sample("agent_tool_calls_total", tool="search", status="ok", **a) == 1
    assert sample("agent_tool_calls_total", tool="tools/list", status="ok", **a) == 1
    assert sample("agent_tool_errors_total", tool="deploy", kind="tool_error", **a) == 1


def test_a_protocol_error_for_invalid_params_is_a_rejected_action(make_monitor, sample):
    """-32602 on tools/call: the spec's protocol error for an unknown tool or arguments the server refused
    (servers of other SDKs answer so). Nothing ran: a rejected action, and the error still reaches the caller."""
    from agentvigil.instrumentation.mcp.patch import _call_tool

    class InvalidParams(Exception):
        error = type("ErrorData", (), {"code": -32602, "message": "Invalid arguments for tool search"})()

    async def refused(name, arguments):
        raise InvalidParams("Invalid arguments for tool search")

    mon = make_monitor("mcp-agent")

    async def agent():
        with mon.run(task_id="t-1"):
            with pytest.raises(InvalidParams):
                await _call_tool(refused, ("search", {"q": 1}), {})

    asyncio.run(agent())
    a = {"agent": "mcp-agent", "tool": "search"}
    assert sample("agent_tool_calls_total", status="rejected", **a) == 1
    assert sample("agent_tool_calls_total", status="error", **a) == 0
