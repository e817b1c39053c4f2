"""OpenTelemetry tracing setup and GenAI semantic-convention attribute names.

We keep our own string constants: the semconv Python constants for GenAI are deprecated and moving.
With no tracer provider configured and no ``OTEL_EXPORTER_OTLP_*ENDPOINT`` set, ``build_tracer`` returns
None and no span objects are created at all.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from .._safety import fork_safe_lock, internal_error

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("agentvigil")

# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/)
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"  # the older name of the provider
AGENT_NAME = "gen_ai.agent.name"
AGENT_ID = "gen_ai.agent.id"
CONVERSATION_ID = "gen_ai.conversation.id"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"  # opt-in only
TOOL_TYPE = "gen_ai.tool.type"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"  # opt-in only
#: ``gen_ai.provider.name`` of an ``invoke_agent`` span: the agent runs in this process, instrumented by us
AGENT_PROVIDER = "agentvigil"
ERROR_TYPE = "error.type"
# agentvigil's own attributes
TASK_ID = "agentvigil.task_id"
RUN_ID = "agentvigil.run_id"
CORRELATION_ID = "agentvigil.correlation_id"
STEP_INDEX = "agentvigil.step.index"
ARGS_HASH = "agentvigil.tool.args_hash"
COST_USD = "agentvigil.cost_usd"
RUN_STATUS = "agentvigil.run.status"

_own_provider = None
_own_lock = fork_safe_lock()


class _CountingExporter:
    """Wraps a SpanExporter to count spans lost to failed exports (dead collector) as dropped events."""

    def __init__(self, inner):
        self._inner = inner
        self.in_flight = 0   # spans of the export under way: lost too if the process ends before it returns

    def export(self, spans):
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.in_flight = len(spans)
        try:
            result = self._inner.export(spans)
        except Exception as exc:
            internal_error("otlp_export", exc)
            result = SpanExportResult.FAILURE
        finally:
            self.in_flight = 0
        if result != SpanExportResult.SUCCESS:
            from ..metrics import default_metrics

            default_metrics().events_dropped.labels("otlp").inc(len(spans))
        return result

    def shutdown(self):
        return self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return getattr(self._inner, "force_flush", lambda *_: True)(timeout_millis)


def _count_otlp_drops(n: int) -> None:
    if n > 0:
        from ..metrics import default_metrics

        default_metrics().events_dropped.labels("otlp").inc(n)


def _counting_batch_processor(exporter: Any) -> Any:
    """A BatchSpanProcessor that also counts the spans it loses without exporting: queue full (a collector that
    accepts and never answers fills it; the SDK then drops the oldest), ended after shutdown, and still queued when
    shutdown gives up. Failed exports are counted by ``_CountingExporter``."""
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    class CountingBatchSpanProcessor(BatchSpanProcessor):
        def _queue(self) -> Any:
            return getattr(getattr(self, "_batch_processor", None), "_queue", None)

        def on_end(self, span: Any) -> None:
            try:
                ctx = span.context
                if ctx is not None and ctx.trace_flags.sampled:
                    inner = getattr(self, "_batch_processor", None)
                    queue = self._queue()
                    if getattr(inner, "_shutdown", False) or (
                            queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen):
                        _count_otlp_drops(1)
            except Exception as exc:  # SDK internals moved: counting is best effort, exporting goes on
                internal_error("otlp_export", exc)
            super().on_end(span)

        def shutdown(self) -> None:
            super().shutdown()
            try:
                queue = self._queue()
                _count_otlp_drops(len(queue) if queue is not None else 0)
            except Exception as exc:
                internal_error("otlp_export", exc)

    return CountingBatchSpanProcessor(exporter)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _otlp_endpoint_set() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def _otlp_span_exporter() -> SpanExporter | None:
    """The OTLP span exporter for OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL, or None when it is not installed.

    http/protobuf (the OTLP default) ships with agentvigil; gRPC is an extra because grpcio alone is ~19 MB.
    """
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc
        except ImportError:
            _warn_once("grpc", "agentvigil: OTLP gRPC needs pip install agentvigil[grpc]; spans are not exported")
            return None
        return grpc.OTLPSpanExporter()
    if protocol != "http/protobuf":
        _warn_once("protocol", f"agentvigil: OTLP protocol {protocol!r} is not supported; using http/protobuf")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _build_own_provider(service_name: str) -> TracerProvider | None:
    """An SDK TracerProvider exporting OTLP per the standard OTEL_* variables. Shut down at exit with a short
    deadline so a dead collector cannot hold the process."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    exporter = _otlp_span_exporter()
    if exporter is None:
        return None
    attrs = {}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = service_name
    provider = TracerProvider(resource=Resource.create(attrs), shutdown_on_exit=False)
    counting = _CountingExporter(exporter)
    processor = _counting_batch_processor(counting)
    provider.add_span_processor(processor)

    def _shutdown():
        # Flush what we can in 2 s, in a daemon thread: a dead collector must not block exit.
        t = threading.Thread(target=lambda: (provider.force_flush(2000), provider.shutdown()), daemon=True)
        t.start()
        t.join(3.0)
        if t.is_alive():   # the collector never answered: the queue and the export under way die with us
            try:
                queue = processor._queue()
                _count_otlp_drops((len(queue) if queue is not None else 0) + counting.in_flight)
            except Exception as exc:
                internal_error("otlp_export", exc)

    atexit.register(_shutdown)
    return provider


def build_tracer(tracer_provider: Any = None, service_name: str = "agentvigil") -> Any:
    """The tracer for a Monitor, or None when tracing is off.

    Order: an explicit provider; else the global provider if the application configured one; else our own
    OTLP provider if an OTLP endpoint is set in the environment; else None (tracing off, near-zero cost).
    ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` turn our own provider off.
    """
    global _own_provider
    from .._version import __version__

    try:
        if tracer_provider is not None:
            return tracer_provider.get_tracer("agentvigil", __version__)
        if _env_true("OTEL_SDK_DISABLED"):
            return None
        from opentelemetry import trace

        current = trace.get_tracer_provider()
        if not isinstance(current, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return current.get_tracer("agentvigil", __version__)
        if not _otlp_endpoint_set() or os.environ.get("OTEL_TRACES_EXPORTER", "").strip() == "none":
            return None
        with _own_lock:
            if _own_provider is None:  # stays None when the exporter is missing (warned once)
                _own_provider = _build_own_provider(service_name)
        return _own_provider.get_tracer("agentvigil", __version__) if _own_provider is not None else None
    except Exception as exc:
        internal_error("tracing_setup", exc)
        return None
