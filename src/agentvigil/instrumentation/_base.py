"""The shared shape of the SDK instrumentors: wrap every (module, class, method) target that exists in the
installed SDK with ``wrapt``, remember what was wrapped, and unwrap exactly that on ``uninstrument()``."""

from __future__ import annotations

import importlib
import logging
from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from wrapt import FunctionWrapper

from agentvigil.instrumentation import _env
from agentvigil.instrumentation._common import (
    CallSpec,
    Options,
    async_wrapper,
    sync_wrapper,
)

log = logging.getLogger("agentvigil")

#: keyword arguments every instrumentor accepts. ``tracer_provider`` / ``meter_provider`` (also passed by
#: opentelemetry-instrument) receive the model spans and the GenAI client metrics.
COMMON_KWARGS = ("capture_content", "breaker", "budget", "budget_estimate", "monitor", "tracer_provider",
                 "meter_provider", "logger_provider")


def build_options(kwargs: dict[str, Any], *, events_provider: str | None = None, **extra: Any) -> Options:
    from opentelemetry import trace

    from agentvigil._version import __version__
    from agentvigil.instrumentation import _semconv
    from agentvigil.sinks.otel_metrics import GenAIMetrics

    provider = kwargs.get("tracer_provider")
    latest = _semconv.latest_experimental()
    events = None
    if events_provider is not None and not latest:
        try:
            from agentvigil.instrumentation._events import LegacyEvents

            events = LegacyEvents.build(kwargs.get("logger_provider"), events_provider)
        except Exception as exc:
            log.warning("agentvigil: GenAI events disabled: %r", exc)
    on_span, on_event = _env.content_destinations(kwargs.get("capture_content"), latest)
    details = None
    if on_event:
        try:
            from agentvigil.instrumentation._events import DetailsEvent

            details = DetailsEvent.build(kwargs.get("logger_provider"))
        except Exception as exc:
            log.warning("agentvigil: GenAI events disabled: %r", exc)
    metrics = None
    try:
        metrics = GenAIMetrics(kwargs.get("meter_provider"))
    except Exception as exc:  # metrics are an extra: the integration works without them
        log.warning("agentvigil: GenAI client metrics disabled: %r", exc)
    return Options(
        # content is gathered when any destination wants it; Invocation keeps it off the span in EVENT_ONLY
        capture_content=on_span or details is not None,
        content_on_span=on_span,
        details=details,
        breaker=kwargs.get("breaker"),
        budget=kwargs.get("budget"),
        budget_estimate=kwargs.get("budget_estimate"),
        monitor=kwargs.get("monitor"),
        extra=extra,
        tracer=trace.get_tracer("agentvigil", __version__, provider) if provider is not None else None,
        metrics=metrics,
        latest=latest,
        events=events,
    )


def _ours(obj: Any) -> bool:
    return isinstance(obj, FunctionWrapper) and getattr(getattr(obj, "_self_wrapper", None), "_agentvigil", False)


def wrap(klass: Any, method: str, wrapper: Any) -> None:
    """Wrap ``klass.method``. When another instrumentation (openai-v2, ...) wrapped it already, go *inside* its
    wrapper, so its model span is current when ours runs and we add to it instead of opening a second one."""
    wrapper._agentvigil = True
    holder: Any = None
    current = vars(klass).get(method, getattr(klass, method))
    while isinstance(current, FunctionWrapper) and not _ours(current):
        holder, current = current, current.__wrapped__
    if holder is None:
        setattr(klass, method, FunctionWrapper(current, wrapper))
    else:
        holder.__wrapped__ = FunctionWrapper(current, wrapper)


def unwrap_ours(klass: Any, method: str) -> None:
    """Remove our wrapper wherever it sits in the chain; other instrumentations' wrappers stay."""
    holder: Any = None
    current = klass.__dict__.get(method)
    while isinstance(current, FunctionWrapper):
        if _ours(current):
            if holder is None:
                setattr(klass, method, current.__wrapped__)
            else:
                holder.__wrapped__ = current.__wrapped__
            return
        holder, current = current, current.__wrapped__


class SDKInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base for the OpenAI and Anthropic instrumentors. Subclasses set ``_instruments`` and ``_targets`` and may
    override ``_options`` and ``_extra_patches``."""

    _instruments: Collection[str] = ()
    _targets: tuple[tuple[str, str, str, CallSpec], ...] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def _options(self, kwargs: dict[str, Any]) -> Options:
        return build_options(kwargs)

    def _instrument(self, **kwargs: Any) -> None:
        opts = self._options(kwargs)
        self._options_in_use = opts
        wrapped: list[tuple[Any, str]] = []
        for module_name, class_name, method, spec in self._targets:
            try:
                module = importlib.import_module(module_name)
                klass = getattr(module, class_name)
                getattr(klass, method)
            except (ImportError, AttributeError):
                log.debug("agentvigil: %s.%s.%s not in this SDK version; skipped", module_name, class_name, method)
                continue
            make = async_wrapper if class_name.startswith("Async") else sync_wrapper
            wrap(klass, method, make(spec, opts))
            wrapped.append((klass, method))
        wrapped.extend(self._extra_patches(opts))
        self._wrapped = wrapped

    def _extra_patches(self, opts: Options) -> list[tuple[Any, str]]:
        return []

    def _uninstrument(self, **kwargs: Any) -> None:
        for klass, method in reversed(getattr(self, "_wrapped", [])):
            unwrap_ours(klass, method)
        self._wrapped = []
