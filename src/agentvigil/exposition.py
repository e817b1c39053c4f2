"""The /metrics endpoint, and the HTTP server every agentvigil endpoint runs on.

Metrics are rendered by prometheus_client's own handler (content negotiation included, so OpenMetrics
scrapes get the trace-id exemplars). The server around it adds what prometheus_client's lacks: an idle
timeout on every connection, a bound on handler threads, the TLS handshake in the handler thread (so one
silent client cannot stall the accept loop) and basic auth. See docs/metrics-server.md.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import MetricsHandler, choose_encoder, gzip_accepted

from . import multiprocess, webconfig
from ._safety import internal_error
from .metrics import metrics_for

log = logging.getLogger("agentvigil")

WEB_CONFIG_ENV = "AGENTVIGIL_WEB_CONFIG_FILE"
IDLE_TIMEOUT = 10.0      # seconds a connection may sit without sending (or reading) before it is closed
MAX_CONNECTIONS = 64     # handler threads at once; further connections are closed at once
STANDBY_RETRY = 5.0      # seconds between a standby worker's attempts to take the metrics port over


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


class FleetMetricsHandler(AuthHandler, MetricsHandler):
    """/metrics of the multiprocess directory: prometheus_client's content negotiation and compression, the
    body rendered by the fleet collector from cached lines (``FleetCollector.render``), the same bytes as
    prometheus_client's encoders. ``name[]`` filters go through prometheus_client's path."""

    fleet: multiprocess.FleetCollector

    def do_GET(self) -> None:
        if "name[]" in parse_qs(urlparse(self.path).query):
            return super().do_GET()
        encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
        try:
            output = self.fleet.render(encoder)
        except Exception as exc:  # e.g. an encoder whose lines are not "<series> <value>": its own path
            internal_error("multiprocess", exc)
            return super().do_GET()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if gzip_accepted(self.headers.get("Accept-Encoding") or ""):
            output = gzip.compress(output)
            self.send_header("Content-Encoding", "gzip")
        self.end_headers()
        self.wfile.write(output)
        return None


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


class StandbyServer:
    """What a worker gets when another process of the pod already serves the metrics port (multiprocess
    mode): that process exposes this worker's series too. The standby retries the bind every ``retry``
    seconds and takes over if the holder goes away, so the pod keeps one /metrics."""

    def __init__(self, start: Callable[[], AgentvigilHTTPServer], port: int, retry: float = STANDBY_RETRY):
        self.server_port = port
        self.server: AgentvigilHTTPServer | None = None
        self._start = start
        self._retry = retry
        self._stop = threading.Event()

    @property
    def scheme(self) -> str:
        return self.server.scheme if self.server is not None else "http"

    @property
    def serving(self) -> bool:
        """True once this process holds the port."""
        return self.server is not None

    def run(self) -> None:
        while not self._stop.wait(self._retry):
            try:
                server = self._start()
            except OSError:
                continue  # still held by another worker
            except Exception as exc:  # never raise in a background thread of the agent
                internal_error("multiprocess", exc)
                return
            self.server = server
            log.info("agentvigil: this worker (pid %d) now serves /metrics on port %d", os.getpid(), self.server_port)
            if self._stop.is_set():  # shutdown() raced with the bind
                server.server_close()
                return
            server.serve_forever()
            return

    def shutdown(self) -> None:
        self._stop.set()
        if self.server is not None:
            self.server.shutdown()

    def server_close(self) -> None:
        if self.server is not None:
            self.server.server_close()


def start_metrics_server(port: int = 9464, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None,
                         *, certfile: str | None = None, keyfile: str | None = None,
                         client_cafile: str | None = None, web_config_file: str | None = None,
                         basic_auth: Mapping[str, str] | None = None, idle_timeout: float = IDLE_TIMEOUT,
                         max_connections: int = MAX_CONNECTIONS,
                         ) -> tuple[AgentvigilHTTPServer | StandbyServer, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread. Binds loopback unless told otherwise (pass
    ``addr="0.0.0.0"`` inside a container). ``port=0`` picks a free port. Returns ``(server, thread)``;
    ``server.server_port`` is the bound port, ``server.shutdown()`` stops it.

    HTTPS: ``certfile`` + ``keyfile`` (+ ``client_cafile`` to require client certificates), or a
    node_exporter web-config file (``web_config_file``, default ``$AGENTVIGIL_WEB_CONFIG_FILE``) with
    ``tls_server_config`` and ``basic_auth_users``; ``basic_auth`` maps users to bcrypt hashes. A bad config
    raises ValueError naming the field, here, before anything is served; a taken port raises OSError.
    Connections idle for ``idle_timeout`` seconds are closed; at most ``max_connections`` are served at once.

    Multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, no ``registry`` given): the server exposes every
    worker's series merged from the directory. A worker that finds the port taken by another gets a
    ``StandbyServer`` instead of an OSError: the holder serves its series, and the standby takes the port
    over if the holder exits. See docs/fleet.md.
    """
    fleet = registry is None and multiprocess.directory() is not None
    registry = REGISTRY if registry is None else registry
    metrics_for(registry)  # make sure the families (and build_info) exist before the first scrape
    web = resolve_web_config(web_config_file, certfile=certfile, keyfile=keyfile, client_cafile=client_cafile,
                             basic_auth=basic_auth)
    if fleet and not multiprocess.enabled():
        # the variable was set after prometheus_client chose its value class: nothing reaches the files
        internal_error("multiprocess", RuntimeError(f"{multiprocess.ENV} was set after prometheus_client was "
                                                    "imported; call agentvigil.multiprocess.prepare() first"))
        fleet = False
    if fleet:
        collector = multiprocess.fleet_collector()
        registry = multiprocess.fleet_registry(collector=collector)
        multiprocess.watch_space()
        handler: type = type("MetricsHandler", (FleetMetricsHandler,), {"registry": registry, "fleet": collector})
    else:
        handler = type("MetricsHandler", (AuthHandler, MetricsHandler), {"registry": registry})

    def bind() -> AgentvigilHTTPServer:
        return AgentvigilHTTPServer(addr, port, handler, web=web, idle_timeout=idle_timeout,
                                    max_connections=max_connections)

    if fleet and port:
        try:
            server = bind()
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            standby = StandbyServer(bind, port, STANDBY_RETRY)
            thread = threading.Thread(target=standby.run, name="agentvigil-metrics-standby", daemon=True)
            thread.start()
            log.info("agentvigil: port %d is served by another worker; pid %d stands by", port, os.getpid())
            return standby, thread
        thread = threading.Thread(target=server.serve_forever, name="agentvigil-metrics-http", daemon=True)
        thread.start()
    else:
        server, thread = serve(handler, addr, port, web=web, idle_timeout=idle_timeout,
                               max_connections=max_connections, name="agentvigil-metrics-http")
    if fleet:  # this process serves the fleet: decode new file entries as they appear, not in a scrape
        collector.start_prefetch()
    return server, thread
