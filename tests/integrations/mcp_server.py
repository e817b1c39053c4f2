"""A real MCP server written with the ``mcp`` SDK, for tests/integrations/test_mcp.py.

    python mcp_server.py                 # stdio
    python mcp_server.py http PORT       # streamable HTTP on 127.0.0.1:PORT/mcp
"""

from __future__ import annotations

import sys

try:
    from mcp.server.mcpserver import MCPServer
except ImportError:   # mcp 1.x (scripts/test-oldest.sh): the same server was called FastMCP
    from mcp.server.fastmcp import FastMCP as MCPServer

server = MCPServer("agentvigil-test")
calls = {"n": 0}


@server.tool()
def search(q: str) -> str:
    """Search: a different answer per query."""
    return f"results for {q}"


@server.tool()
def status() -> str:
    """The same answer every time (a loop candidate)."""
    return "build is still running"


@server.tool()
def count() -> int:
    """How many times it was called (proves a call was not sent)."""
    calls["n"] += 1
    return calls["n"]


@server.tool()
def deploy(env: str) -> str:
    """Always fails inside the tool."""
    raise RuntimeError(f"deploy to {env} refused")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        try:
            server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
        except TypeError:   # mcp 1.x: host and port are settings
            server.settings.host, server.settings.port = "127.0.0.1", int(sys.argv[2])
            server.run("streamable-http")
    else:
        server.run()
