"""The shared shape of the SDK instrumentors: wrap every (module, class, method) target that exists in the
installed SDK with ``wrapt``, remember what was wrapped, and unwrap exactly that on ``uninstrument()``."""

from __future__ import annotations

import importlib
import logging
from typing import Any, Collection

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from agentvigil.instrumentation import _env
from agentvigil.instrumentation._common import (
    CallSpec,
    Options,
    async_wrapper,
    sync_wrapper,
)

log = logging.getLogger("agentvigil")

#: keyword arguments every instrumentor accepts (others, e.g. ``tracer_provider`` from opentelemetry-instrument,
#: are ignored: spans go through the agentvigil Monitor's tracer).
COMMON_KWARGS = ("capture_content", "breaker", "budget", "budget_estimate", "monitor")


def build_options(kwargs: dict[str, Any], **extra: Any) -> Options:
    return Options(
        capture_content=_env.capture_content(kwargs.get("capture_content")),
        breaker=kwargs.get("breaker"),
        budget=kwargs.get("budget"),
        budget_estimate=kwargs.get("budget_estimate"),
        monitor=kwargs.get("monitor"),
        extra=extra,
    )


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
            wrap_function_wrapper(module_name, f"{class_name}.{method}", make(spec, opts))
            wrapped.append((klass, method))
        wrapped.extend(self._extra_patches(opts))
        self._wrapped = wrapped

    def _extra_patches(self, opts: Options) -> list[tuple[Any, str]]:
        return []

    def _uninstrument(self, **kwargs: Any) -> None:
        for klass, method in reversed(getattr(self, "_wrapped", [])):
            unwrap(klass, method)
        self._wrapped = []
