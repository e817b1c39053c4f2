"""The /metrics endpoint: a thin layer over prometheus_client's own server (content negotiation included,
so OpenMetrics scrapes get the trace-id exemplars)."""

from __future__ import annotations

from prometheus_client import REGISTRY, start_http_server

from .metrics import metrics_for


def start_metrics_server(port: int = 9464, addr: str = "127.0.0.1", registry=None):
    """Serve ``/metrics`` on ``addr:port`` in a daemon thread. Binds loopback unless told otherwise (pass
    ``addr="0.0.0.0"`` inside a container). ``port=0`` picks a free port. Returns ``(server, thread)``;
    ``server.server_port`` is the bound port, ``server.shutdown()`` stops it."""
    registry = REGISTRY if registry is None else registry
    metrics_for(registry)  # make sure the families (and build_info) exist before the first scrape
    return start_http_server(port, addr=addr, registry=registry)
