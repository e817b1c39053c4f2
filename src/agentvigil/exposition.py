"""The /metrics endpoint, and the HTTP server every agentvigil endpoint runs on.

Metrics are rendered by prometheus_client's own handler (content negotiation included, so OpenMetrics
scrapes get the trace-id exemplars). The server around it adds what prometheus_client's lacks: an idle
timeout on every connection, a bound on handler threads, the TLS handshake in the handler thread (so one
silent client cannot stall the accept loop) and basic auth. See docs/metrics-server.md.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from . import webconfig
from .metrics import metrics_for

log = logging.getLogger("agentvigil")

WEB_CONFIG_ENV = "AGENTVIGIL_WEB_CONFIG_FILE"
IDLE_TIMEOUT = 10.0      # seconds a connection may sit without sending (or reading) before it is closed
MAX_CONNECTIONS = 64     # handler threads at once; further connections are closed at once


class AgentvigilHTTPServer(ThreadingHTTPServer):
    """A thread-per-connection server whose threads are bounded in number and in idle time."""

    daemon_threads = True
    request_queue_size = 128  # listen backlog; socketserver's 5 drops SYNs (1 s retries) on a burst

    def __init__(self, addr: str, port: int, handler: type[BaseHTTPRequestHandler], *,
                 web: webconfig.WebConfig | None = None, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        if idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0, got {idle_timeout!r}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        web = web or webconfig.WebConfig()
        self.ssl_context: ssl.SSLContext | None = web.ssl_context
        self.auth: webconfig.BasicAuth | None = web.auth
        self.idle_timeout = idle_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        # IPv6 literals need an AF_INET6 socket (as prometheus_client's server does)
        family, _, _, _, sockaddr = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM,
                                                        flags=socket.AI_PASSIVE)[0]
        self.address_family = family
        super().__init__((str(sockaddr[0]), port), handler)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, client = self.socket.accept()
        sock.settimeout(self.idle_timeout)  # bounds the handshake, every read and every write
        return sock, client

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: refuse rather than grow threads without bound
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            if self.ssl_context is not None:
                try:
                    request = self.ssl_context.wrap_socket(request, server_side=True)
                except (OSError, ValueError):  # plain HTTP, no/untrusted client cert, silent client
                    self.shutdown_request(request)
                    return
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that resets or times out mid-request is not worth a traceback on stderr
        log.debug("agentvigil: HTTP request from %s failed: %r", client_address, sys.exc_info()[1])


class AuthHandler(BaseHTTPRequestHandler):
    """Base of our handlers: answers 401 before any method runs when basic auth is on."""

    server: AgentvigilHTTPServer

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        auth = self.server.auth
        if auth is None or auth.check(self.headers.get("Authorization")):
            return True
        body = b"unauthorized\n"
        self.close_connection = True
        self.send_response(401)
        self.send_header("WWW-Authenticate", webconfig.CHALLENGE)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        return False

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet, like prometheus_client's handler


def web_config_file_from_env() -> str | None:
    """The default for ``web_config_file`` (the one environment read here)."""
    return os.environ.get(WEB_CONFIG_ENV) or None


def resolve_web_config(web_config_file: str | None = None, *, certfile: str | None = None,
                       keyfile: str | None = None, client_cafile: str | None = None,
                       basic_auth: Mapping[str, str] | None = None,
                       source: str = "start_metrics_server") -> webconfig.WebConfig:
    """Keyword arguments, else the web-config file, else ``$AGENTVIGIL_WEB_CONFIG_FILE``, else plain HTTP
    (``web_config_file=""`` also means plain HTTP, ignoring the environment). Raises ValueError naming
    the field on a bad config, whichever way it was given."""
    explicit = any(value is not None for value in (certfile, keyfile, client_cafile, basic_auth))
    if explicit and web_config_file:
        raise webconfig.WebConfigError(f"{source}: pass web_config_file or certfile/keyfile/client_cafile/"
                                       "basic_auth, not both")
    if explicit:
        return webconfig.from_options(certfile, keyfile, client_cafile, basic_auth, source=source)
    if web_config_file:
        return webconfig.load(web_config_file)
    if web_config_file is None:
        path = web_config_file_from_env()
        if path:
            return webconfig.load(path, source=f"{WEB_CONFIG_ENV}={path}")
    return webconfig.WebConfig()


def serve(handler: type[BaseHTTPRequestHandler], addr: str, port: int, *, web: webconfig.WebConfig | None,
          idle_timeout: float = IDLE_TIMEOUT, max_connections: int = MAX_CONNECTIONS,
          name: str = "agentvigil-http") -> tuple[AgentvigilHTTPServer, threading.Thread]:
    """Bind ``addr:port`` and serve in a daemon thread."""
    server = AgentvigilHTTPServer(addr, port, handler, web=web, idle_timeout=idle_timeout,
                                  max_connections=max_connections)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    return server, thread


def start_metrics_server(port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None,
                         *, certfile: str | None = None, keyfile: str | None = None,
                         client_cafile: str | None = None, web_config_file: str | None = None,
                         basic_auth: Mapping[str, str] | None = None, idle_timeout: float = IDLE_TIMEOUT,
                         max_connections: int = MAX_CONNECTIONS) -> tuple[AgentvigilHTTPServer, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread. Binds loopback unless told otherwise (pass
    ``addr="0.0.0.0"`` inside a container). ``port=0`` picks a free port. Returns ``(server, thread)``;
    ``server.server_port`` is the bound port, ``server.shutdown()`` stops it.

    HTTPS: ``certfile`` + ``keyfile`` (+ ``client_cafile`` to require client certificates), or a
    node_exporter web-config file (``web_config_file``, default ``$AGENTVIGIL_WEB_CONFIG_FILE``) with
    ``tls_server_config`` and ``basic_auth_users``; ``basic_auth`` maps users to bcrypt hashes. A bad config
    raises ValueError naming the field, here, before anything is served; a taken port raises OSError.
    Connections idle for ``idle_timeout`` seconds are closed; at most ``max_connections`` are served at once.
    """
    registry = REGISTRY if registry is None else registry
    metrics_for(registry)  # make sure the families (and build_info) exist before the first scrape
    web = resolve_web_config(web_config_file, certfile=certfile, keyfile=keyfile, client_cafile=client_cafile,
                             basic_auth=basic_auth)
    handler = type("MetricsHandler", (AuthHandler, MetricsHandler), {"registry": registry})
    return serve(handler, addr, port, web=web, idle_timeout=idle_timeout, max_connections=max_connections,
                 name="agentvigil-metrics-http")
