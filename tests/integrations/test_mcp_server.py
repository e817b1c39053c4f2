"""MCP server side (opt-in): the tool handlers a real MCP server of the ``mcp`` SDK runs become tool calls, one run
per ``tools/call`` request, on the server's Monitor. A real ClientSession of the same SDK talks to it over the
SDK's in-memory JSON-RPC streams (client and server in one process) and over stdio (the server a subprocess
instrumented by AGENTVIGIL_MCP_SERVER)."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")

import anyio  # noqa: E402
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.server.lowlevel import Server  # noqa: E402
from mcp.shared.memory import create_client_server_memory_streams  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import agentvigil  # noqa: E402
from agentvigil import result_fingerprint  # noqa: E402
from agentvigil.instrumentation import _env  # noqa: E402
from agentvigil.instrumentation.mcp import MCPInstrumentor  # noqa: E402
from agentvigil.instrumentation.mcp.patch import SIDE, result_payload  # noqa: E402

try:
    from mcp.server.mcpserver import MCPServer
except ImportError:   # mcp 1.x
    from mcp.server.fastmcp import FastMCP as MCPServer

SERVER = Path(__file__).with_name("mcp_server.py")
LOWLEVEL_2X = "on_call_tool" in inspect.signature(Server.__init__).parameters


def _seam() -> tuple[type, str]:
    try:
        from mcp.server.runner import ServerRunner

        return ServerRunner, "_on_request"
    except ImportError:
        return Server, "call_tool"


def is_error(result) -> bool:
    return bool(getattr(result, "is_error", getattr(result, "isError", None)))


class Traced:
    def __init__(self):
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def tools(self, agent: str) -> list:
        return [s for s in self.exporter.get_finished_spans()
                if s.name.startswith("execute_tool") and s.attributes.get("gen_ai.agent.name") == agent]


@pytest.fixture
def traced():
    return Traced()


@pytest.fixture
def make_monitor(registry, traced):
    monitors = []

    def make(agent, **kw):
        mon = agentvigil.Monitor(agent, registry=registry, heartbeat=False, tracer_provider=traced.provider, **kw)
        monitors.append(mon)
        return mon

    yield make
    for mon in monitors:
        mon.close()


@pytest.fixture
def server_mon(make_monitor):
    mon = make_monitor("mcp-server")
    inst = MCPInstrumentor()
    inst.instrument(server=True, monitor=mon)
    yield mon
    inst.uninstrument()


def tool_server(name: str = "tools"):
    """Built after instrument(): mcp 1.x registers its tools/call handler at construction."""
    srv = MCPServer(name)

    @srv.tool()
    def search(q: str) -> str:
        return f"results for {q}"

    @srv.tool()
    def deploy(env: str) -> str:
        raise RuntimeError(f"deploy to {env} refused")

    return getattr(srv, "_lowlevel_server", None) or srv._mcp_server


def raising_server():
    """A low-level server whose tools/call handler itself raises (no MCPServer layer to catch it)."""
    from mcp import types

    async def explode(name: str, arguments: dict):
        raise ConnectionResetError("backend gone")

    if LOWLEVEL_2X:
        async def on_call_tool(ctx, params):
            return await explode(params.name, params.arguments or {})

        return Server("raising", on_call_tool=on_call_tool)
    srv = Server("raising")

    @srv.list_tools()
    async def list_tools() -> list:
        return [types.Tool(name="fetch", inputSchema={"type": "object"})]

    srv.call_tool()(explode)
    return srv


@asynccontextmanager
async def connected(lowlevel):
    """A ClientSession talking JSON-RPC to ``lowlevel`` over the SDK's in-memory streams."""
    async with create_client_server_memory_streams() as (client_streams, server_streams):
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(lowlevel.run, server_streams[0], server_streams[1],
                                  lowlevel.create_initialization_options()))
            async with ClientSession(*client_streams) as session:
                await session.initialize()
                yield session
            tg.cancel_scope.cancel()


def _events(record_dir: Path) -> list[dict]:
    session = next(p for p in record_dir.iterdir() if p.is_dir())
    return [json.loads(line) for line in (session / "events.ndjson").read_text().splitlines()]


def test_each_tools_call_is_a_run_of_the_server(registry, traced, sample, tmp_path):
    mon = agentvigil.Monitor("mcp-rec", registry=registry, heartbeat=False, tracer_provider=traced.provider,
                             record_dir=str(tmp_path))
    inst = MCPInstrumentor()
    inst.instrument(server=True, monitor=mon)
    try:
        async def client():
            async with connected(tool_server()) as session:
                ok = await session.call_tool("search", {"q": "cats"})
                failed = await session.call_tool("deploy", {"env": "prod"})
                unknown = await session.call_tool("no_such_tool", {})
                return ok, failed, unknown

        ok, failed, unknown = asyncio.run(client())
    finally:
        inst.uninstrument()
        mon.flush()
        mon.close()
    assert not is_error(ok) and is_error(failed) and is_error(unknown)
    a = {"agent": "mcp-rec"}
    assert sample("agent_tool_calls_total", tool="search", status="ok", **a) == 1
    assert sample("agent_tool_calls_total", tool="deploy", status="error", **a) == 1
    assert sample("agent_tool_errors_total", tool="deploy", kind="tool_error", **a) == 1
    assert sample("agent_tool_calls_total", tool="no_such_tool", status="rejected", **a) == 1   # nothing ran
    assert sample("agent_tool_errors_total", tool="no_such_tool", kind="tool_error", **a) == 0
    assert sample("agent_runs_total", status="ok", **a) == 3      # one run per request
    spans = traced.tools("mcp-rec")
    assert sorted(s.name for s in spans) == ["execute_tool deploy", "execute_tool no_such_tool",
                                             "execute_tool search"]
    assert {s.attributes[SIDE] for s in spans} == {"server"}
    assert all(s.attributes["mcp.method.name"] == "tools/call" for s in spans)
    runs = {s.context.span_id: s for s in traced.exporter.get_finished_spans() if s.name == "invoke_agent mcp-rec"}
    assert len(runs) == 3 and {s.parent.span_id for s in spans} == set(runs)
    ends = {e["tool_name"]: e for e in _events(tmp_path) if e["event_type"] == "tool_end"}
    # the server fingerprints what the client receives: the same answer, the same fingerprint on both sides
    assert ends["search"]["result_fingerprint"] == result_fingerprint(result_payload(ok))
    assert ends["search"]["args_hash"] and "cats" not in json.dumps(list(ends.values()))


def test_a_raising_handler_is_a_failed_call(server_mon, sample):
    async def client():
        async with connected(raising_server()) as session:
            try:
                return await session.call_tool("fetch", {"url": "x"})
            except Exception as exc:   # mcp 2.x: a JSON-RPC error; 1.x: the SDK turns it into isError
                return exc

    answer = asyncio.run(client())
    assert isinstance(answer, Exception) or is_error(answer)
    a = {"agent": "mcp-server", "tool": "fetch"}
    assert sample("agent_tool_calls_total", status="error", **a) == 1
    kind = "network" if LOWLEVEL_2X else "tool_error"   # 1.x hands us the SDK's isError result, not the exception
    assert sample("agent_tool_errors_total", kind=kind, **a) == 1


def test_client_and_server_in_one_process_are_told_apart(server_mon, make_monitor, traced, sample):
    client_mon = make_monitor("mcp-client")

    async def client():
        async with connected(tool_server()) as session:
            async with client_mon.run(task_id="t-1"):
                await session.call_tool("search", {"q": "cats"})
                await session.call_tool("deploy", {"env": "prod"})

    asyncio.run(client())
    for agent in ("mcp-client", "mcp-server"):   # each side counts the call once, on its own agent
        assert sample("agent_tool_calls_total", agent=agent, tool="search", status="ok") == 1
        assert sample("agent_tool_errors_total", agent=agent, tool="deploy", kind="tool_error") == 1
    assert sample("agent_runs_total", agent="mcp-client", status="ok") == 1
    assert sample("agent_runs_total", agent="mcp-server", status="ok") == 2
    # (the 2.x client also lists the tools itself, to check results against their schemas: tools/list spans)
    client_side = {s.name: s for s in traced.tools("mcp-client") if s.attributes["mcp.method.name"] == "tools/call"}
    server_side = {s.name: s for s in traced.tools("mcp-server")}
    assert set(client_side) == set(server_side) == {"execute_tool search", "execute_tool deploy"}
    assert {s.attributes[SIDE] for s in client_side.values()} == {"client"}
    assert {s.attributes[SIDE] for s in server_side.values()} == {"server"}
    # same arguments, same hash: the two spans of one call can be joined
    assert (client_side["execute_tool search"].attributes["agentvigil.tool.args_hash"]
            == server_side["execute_tool search"].attributes["agentvigil.tool.args_hash"])


def test_server_side_is_off_by_default(monkeypatch, make_monitor, sample):
    klass, method = _seam()
    original = klass.__dict__[method]
    monkeypatch.delenv(_env.MCP_SERVER, raising=False)
    inst = MCPInstrumentor()
    inst.instrument(monitor=make_monitor("mcp-default"))
    try:
        assert klass.__dict__[method] is original

        async def client():
            async with connected(tool_server()) as session:
                await session.call_tool("search", {"q": "x"})

        asyncio.run(client())
        assert sample("agent_tool_calls_total", agent="mcp-default", tool="search", status="ok") == 0
    finally:
        inst.uninstrument()
    monkeypatch.setenv(_env.MCP_SERVER, "true")
    inst.instrument()
    try:
        assert klass.__dict__[method] is not original
    finally:
        inst.uninstrument()
    inst.instrument(server=False)     # the keyword wins over the environment
    try:
        assert klass.__dict__[method] is original
    finally:
        inst.uninstrument()


def test_uninstrument_restores_the_server(make_monitor, sample):
    klass, method = _seam()
    original = klass.__dict__[method]
    mon = make_monitor("mcp-off")
    inst = MCPInstrumentor()
    inst.instrument(server=True, monitor=mon)
    assert klass.__dict__[method] is not original
    lowlevel = tool_server()     # on mcp 1.x its handler is ours from here on, and passes through when off
    inst.uninstrument()
    assert klass.__dict__[method] is original

    async def client():
        async with connected(lowlevel) as session:
            return await session.call_tool("search", {"q": "x"})

    assert not is_error(asyncio.run(client()))
    assert sample("agent_tool_calls_total", agent="mcp-off", tool="search", status="ok") == 0


def test_stdio_server_instrumented_by_the_environment(tmp_path):
    """The test server of test_mcp.py, in its own process, with AGENTVIGIL_MCP_SERVER=true: its tool calls are
    recorded there, under its own agent name."""
    boot = ("import runpy, sys, agentvigil; agentvigil.instrument(only=['mcp']); "
            "runpy.run_path(sys.argv[1], run_name='__main__')")
    env = {**os.environ, "AGENTVIGIL_MCP_SERVER": "true", "AGENTVIGIL_RECORD_DIR": str(tmp_path),
           "AGENTVIGIL_AGENT": "stdio-server", "AGENTVIGIL_HEARTBEAT_INTERVAL": "60",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(agentvigil.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    params = StdioServerParameters(command=sys.executable, args=["-c", boot, str(SERVER)], env=env)

    async def client():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                ok = await session.call_tool("search", {"q": "cats"})
                await session.call_tool("deploy", {"env": "prod"})
                return ok

    ok = asyncio.run(client())
    ends = {e["tool_name"]: e for e in _events(tmp_path) if e["event_type"] == "tool_end"}
    assert set(ends) == {"search", "deploy"}
    assert ends["search"]["agent_id"] == "stdio-server"
    assert ends["search"]["status"] == "ok" and ends["deploy"]["error_kind"] == "tool_error"
    assert ends["search"]["result_fingerprint"] == result_fingerprint(result_payload(ok))


def test_params_that_do_not_validate_are_a_rejected_action(server_mon, sample):
    """The request's params did not validate (mcp 2.x raises pydantic's ValidationError before any handler):
    the tool never ran, so the call is a rejected action, not a failed one; the error still propagates."""
    from pydantic import BaseModel, ValidationError

    from agentvigil.instrumentation.mcp.server import serve

    class Params(BaseModel):
        q: str

    async def handle():
        return Params.model_validate({})

    with pytest.raises(ValidationError):
        asyncio.run(serve("search", {}, handle))
    a = {"agent": "mcp-server", "tool": "search"}
    assert sample("agent_tool_calls_total", status="rejected", **a) == 1
    assert sample("agent_tool_calls_total", status="error", **a) == 0
