"""A WSGI app for the gunicorn test: every request is one agent run with one tool call; /gauge?v= sets a
breaker-state gauge to show how worker values combine."""

from __future__ import annotations

import os
from urllib.parse import parse_qs

import agentvigil
from agentvigil.metrics import default_metrics

monitor = agentvigil.Monitor("web-agent", heartbeat=False)


def app(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/gauge":
        value = float(parse_qs(environ.get("QUERY_STRING", ""))["v"][0])
        default_metrics().breaker_state.labels("shared").set(value)
    else:
        with monitor.run() as run:
            with run.tool_call("search", {"q": "x"}):
                pass
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
