"""Anthropic SDK instrumentation: ``messages.create`` (JSON and ``stream=True``) and ``messages.stream()``, sync
and async (and the beta namespace), become agentvigil LLM calls with cache-aware token accounting.

    from agentvigil.instrumentation.anthropic import AnthropicInstrumentor
    AnthropicInstrumentor().instrument()       # or agentvigil.instrumentation.instrument()

Options (keyword arguments to ``instrument``): ``capture_content``, ``breaker``, ``budget``, ``budget_estimate``,
``monitor`` — as for the OpenAI instrumentor.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from agentvigil.instrumentation._base import SDKInstrumentor, build_options, wrap
from agentvigil.instrumentation._common import Options
from agentvigil.instrumentation.anthropic.package import _instruments
from agentvigil.instrumentation.anthropic.patch import (
    STREAM_HELPERS,
    TARGETS,
    stream_helper_wrapper,
)

__all__ = ["AnthropicInstrumentor"]

log = logging.getLogger("agentvigil")


class AnthropicInstrumentor(SDKInstrumentor):
    """Instruments ``anthropic.resources.messages`` (and ``beta.messages``), sync and async."""

    _instruments = _instruments
    _targets = TARGETS

    def _options(self, kwargs: dict[str, Any]) -> Options:
        return build_options(kwargs, events_provider="anthropic")

    def _extra_patches(self, opts: Options) -> list[tuple[Any, str]]:
        wrapped: list[tuple[Any, str]] = []
        for module_name, class_name, is_async in STREAM_HELPERS:
            try:
                klass = getattr(importlib.import_module(module_name), class_name)
                klass.stream  # noqa: B018 - probe
            except (ImportError, AttributeError):
                log.debug("agentvigil: %s.%s.stream not in this SDK version; skipped", module_name, class_name)
                continue
            wrap(klass, "stream", stream_helper_wrapper(opts, is_async))
            wrapped.append((klass, "stream"))
        return wrapped
