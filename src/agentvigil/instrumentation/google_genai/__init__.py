"""Google GenAI SDK (``google-genai``, ``from google import genai``) instrumentation: ``models.generate_content``,
``generate_content_stream`` and ``embed_content``, sync and async (``client.aio``), become agentvigil LLM calls
(metrics, a GenAI span) with cache- and thinking-aware token accounting, for the Gemini API and Vertex AI.

    from agentvigil.instrumentation.google_genai import GoogleGenAIInstrumentor
    GoogleGenAIInstrumentor().instrument()     # or agentvigil.instrumentation.instrument()

Options (keyword arguments to ``instrument``): ``capture_content``, ``breaker``, ``budget``, ``budget_estimate``
(default: ``contents`` chars / 4 plus ``config.max_output_tokens``), ``monitor`` — as for the OpenAI instrumentor.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace
from typing import Any

from agentvigil.instrumentation._base import SDKInstrumentor, build_options, wrap
from agentvigil.instrumentation._common import Options, async_wrapper, internal_error, sync_wrapper
from agentvigil.instrumentation._events import LegacyEvents
from agentvigil.instrumentation.google_genai.package import _instruments
from agentvigil.instrumentation.google_genai.patch import GEMINI, TARGETS, VERTEX, estimate, is_vertex, specs

__all__ = ["GoogleGenAIInstrumentor"]

log = logging.getLogger("agentvigil")


def _per_client(method: str, opts: Options, is_async: bool) -> Any:
    """One wrapper that records the call under ``gcp.vertex_ai`` or ``gcp.gemini``, as the client is set up."""
    make = async_wrapper if is_async else sync_wrapper
    vertex_opts = opts
    if opts.events is not None:   # the older events name their provider too
        vertex_opts = replace(opts, events=LegacyEvents(opts.events.logger, VERTEX))
    gemini, vertex = make(specs(GEMINI)[method], opts), make(specs(VERTEX)[method], vertex_opts)

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            chosen = vertex if is_vertex(instance) else gemini
        except Exception as exc:
            internal_error("instrumentation.google_genai", exc)
            chosen = gemini
        return chosen(wrapped, instance, args, kwargs)

    return wrapper


class GoogleGenAIInstrumentor(SDKInstrumentor):
    """Instruments ``google.genai.models.Models`` and ``AsyncModels``."""

    _instruments = _instruments

    def _options(self, kwargs: dict[str, Any]) -> Options:
        opts = build_options(kwargs, events_provider=GEMINI)
        if opts.budget_estimate is None:
            opts.budget_estimate = estimate   # the shared default reads OpenAI's kwargs, not contents/config
        return opts

    def _extra_patches(self, opts: Options) -> list[tuple[Any, str]]:
        wrapped: list[tuple[Any, str]] = []
        for module_name, class_name, method in TARGETS:
            try:
                klass = getattr(importlib.import_module(module_name), class_name)
                getattr(klass, method)
            except (ImportError, AttributeError):
                log.debug("agentvigil: %s.%s.%s not in this SDK version; skipped", module_name, class_name, method)
                continue
            wrap(klass, method, _per_client(method, opts, class_name.startswith("Async")))
            wrapped.append((klass, method))
        return wrapped
