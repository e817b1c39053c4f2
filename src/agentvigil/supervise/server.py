"""HTTP endpoints of the supervisor: ``/metrics``, ``/healthz`` (liveness), ``/readyz`` (progressing).

The handler only reads a ``Probe`` snapshot that the supervisor loop replaces on every tick; it never takes
the supervisor's state lock or touches the child. TLS, basic auth and the idle timeout are the ones of
``/metrics`` everywhere (``exposition.serve``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..exposition import (
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    AuthHandler,
    resolve_web_config,
    serve,
)


@dataclass(frozen=True)
class Probe:
    """What the probes answer, as of ``updated`` (monotonic)."""

    state: str = "starting"
    child_pid: int | None = None
    child_live: bool = False
    progressing: bool = False
    restarts: int = 0
    last_incident: str | None = None
    updated: float = 0.0

    def healthz(self, stale_after: float) -> tuple[bool, str]:
        """Liveness of the *supervision*: fails when restarting the container is what helps: the
        supervisor gave up, or its own loop stopped updating."""
        if time.monotonic() - self.updated > stale_after:
            return False, "supervisor loop stalled"
        if self.state == "gave_up":
            return False, "restart policy exhausted"
        return True, "ok"

    def readyz(self) -> tuple[bool, str]:
        """Ready: the child runs, its heartbeats are fresh and it is making progress."""
        if self.state != "running":
            return False, f"state {self.state}"
        if not self.child_live:
            return False, "no fresh heartbeat"
        if not self.progressing:
            return False, "not progressing"
        return True, "ok"


class ProbeServer:
    def __init__(self, registry: CollectorRegistry, addr: str, port: int, stale_after: float, *,
                 web_config_file: str | None = None, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        """``web_config_file`` defaults to ``$AGENTVIGIL_WEB_CONFIG_FILE``; a bad one raises ValueError."""
        web = resolve_web_config(web_config_file, source="supervise")
        self.registry = registry
        self.stale_after = stale_after
        self.probe = Probe(updated=time.monotonic())
        outer = self

        class Handler(AuthHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                    self._reply(200, encoder(outer.registry), content_type)
                elif path in ("/healthz", "/readyz"):
                    probe = outer.probe
                    ok, why = probe.healthz(outer.stale_after) if path == "/healthz" else probe.readyz()
                    body = dict(asdict(probe), status="ok" if ok else "fail", reason=why)
                    del body["updated"]
                    self._reply(200 if ok else 503, json.dumps(body).encode() + b"\n", "application/json")
                else:
                    self._reply(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

            def _reply(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd, self._thread = serve(Handler, addr, port, web=web, idle_timeout=idle_timeout,
                                         max_connections=max_connections, name="agentvigil-supervise-http")
        self.port = self.httpd.server_address[1]
        self.scheme = self.httpd.scheme

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
