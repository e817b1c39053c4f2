"""The GenAI client metrics through the OpenTelemetry metrics API: ``gen_ai.client.token.usage`` and
``gen_ai.client.operation.duration``, with the spec's bucket boundaries and attributes.

The meter comes from, in order: the ``meter_provider`` given to ``instrument()``; the global provider when the
application set one; our own OTLP provider when ``OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT`` is set (and neither
``OTEL_SDK_DISABLED=true`` nor ``OTEL_METRICS_EXPORTER=none``); else the global proxy, which costs nothing
until a provider is set. The Prometheus ``agent_*`` contract is separate and unchanged.
"""

from __future__ import annotations

import atexit
import os
import threading
from typing import Any

from .._safety import fork_safe_lock, internal_error

TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
# https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-metrics/
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)

_own: Any = None
_own_lock = fork_safe_lock()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _own_meter_provider() -> Any:
    """An SDK MeterProvider exporting OTLP/HTTP per the OTEL_* variables, built once, flushed at exit."""
    global _own
    with _own_lock:
        if _own is None:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            _own = MeterProvider(metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
                                 shutdown_on_exit=False)
            provider = _own

            def _shutdown() -> None:  # a dead collector must not hold the exit
                t = threading.Thread(target=lambda: provider.shutdown(timeout_millis=2000), daemon=True)
                t.start()
                t.join(3.0)

            atexit.register(_shutdown)
    return _own


def resolve_meter_provider(meter_provider: Any = None) -> Any:
    if meter_provider is not None:
        return meter_provider
    from opentelemetry import metrics

    current = metrics.get_meter_provider()
    proxy = type(current).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider")
    if not proxy or _env_true("OTEL_SDK_DISABLED"):
        return current
    endpoint = (os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    if endpoint and os.environ.get("OTEL_METRICS_EXPORTER", "").strip() != "none":
        try:
            return _own_meter_provider()
        except Exception as exc:  # exporter missing or misconfigured: metrics stay on the proxy
            internal_error("otel_metrics", exc)
    return current


class GenAIMetrics:
    """The two GenAI client histograms. ``record`` never raises."""

    def __init__(self, meter_provider: Any = None) -> None:
        from opentelemetry import metrics

        from .._version import __version__

        provider = resolve_meter_provider(meter_provider)
        #: on the global proxy: nothing to record into until the application sets a provider
        self._proxy = type(provider).__name__ == "_ProxyMeterProvider"
        self._dead = type(provider).__name__ == "NoOpMeterProvider"
        meter = metrics.get_meter("agentvigil", __version__, provider)
        self.duration = _histogram(meter, OPERATION_DURATION, "s", "GenAI operation duration", DURATION_BUCKETS)
        self.tokens = _histogram(meter, TOKEN_USAGE, "{token}", "Number of input and output tokens used",
                                 TOKEN_BUCKETS)

    def live(self) -> bool:
        """False while the metrics would go to the global proxy with no provider set (skipped: hot path)."""
        if not self._proxy:
            return not self._dead
        from opentelemetry import metrics

        if type(metrics.get_meter_provider()).__name__ != "_ProxyMeterProvider":
            self._proxy = False   # a provider was set meanwhile: the proxy meter now forwards to it
            return True
        return False

    def record(self, duration_s: float, attributes: dict[str, Any], input_tokens: int | None,
               output_tokens: int | None) -> None:
        try:
            self.duration.record(max(0.0, duration_s), attributes=attributes)
            if input_tokens is not None:
                self.tokens.record(input_tokens, attributes={**attributes, "gen_ai.token.type": "input"})
            if output_tokens is not None:
                self.tokens.record(output_tokens, attributes={**attributes, "gen_ai.token.type": "output"})
        except Exception as exc:
            internal_error("otel_metrics", exc)


def _histogram(meter: Any, name: str, unit: str, description: str, buckets: tuple) -> Any:
    try:
        return meter.create_histogram(name, unit=unit, description=description,
                                      explicit_bucket_boundaries_advisory=list(buckets))
    except TypeError:  # API older than 1.23: no advisory; the SDK's default buckets apply
        return meter.create_histogram(name, unit=unit, description=description)


#: attributes of a model span that the spec also puts on the GenAI client metrics
METRIC_ATTRIBUTES = ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system", "gen_ai.request.model",
                     "gen_ai.response.model", "server.address", "server.port", "error.type",
                     "openai.response.service_tier", "gen_ai.openai.response.service_tier",
                     "openai.response.system_fingerprint", "gen_ai.openai.response.system_fingerprint",
                     "gen_ai.embeddings.dimension.count")
