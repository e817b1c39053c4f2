"""Zero-code integrations: OpenAI and Anthropic SDK patching, a LangChain/LangGraph callback handler, CrewAI
event listeners, MCP client tool calls, an OpenAI Agents SDK tracing processor. Each is an OpenTelemetry
``BaseInstrumentor`` (reversible, declares the SDK versions it supports, picked up by ``opentelemetry-instrument``
through the ``opentelemetry_instrumentor`` entry points).

    >>> import agentvigil
    >>> agentvigil.instrument()            # every supported SDK that is installed
    >>> agentvigil.uninstrument()

Nothing here imports an SDK: ``instrument()`` patches an SDK that is already imported at once, and one that is
not when the application imports it (a post-import hook), so ``instrument()`` costs no SDK import.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any

from agentvigil._safety import fork_safe_lock
from agentvigil.instrumentation import _env

log = logging.getLogger("agentvigil")

__all__ = [
    "AnthropicInstrumentor", "BedrockInstrumentor", "CrewAIInstrumentor", "GoogleGenAIInstrumentor",
    "LangChainInstrumentor", "LiteLLMInstrumentor", "MCPInstrumentor", "OpenAIAgentsInstrumentor",
    "OpenAIInstrumentor",
    "instrument",
    "instrumented", "uninstrument",
]

# integration name -> (module that must be importable, "module:Instrumentor")
_REGISTRY: dict[str, tuple[str, str]] = {
    "openai": ("openai", "agentvigil.instrumentation.openai:OpenAIInstrumentor"),
    "anthropic": ("anthropic", "agentvigil.instrumentation.anthropic:AnthropicInstrumentor"),
    "langchain": ("langchain_core", "agentvigil.instrumentation.langchain:LangChainInstrumentor"),
    "crewai": ("crewai", "agentvigil.instrumentation.crewai:CrewAIInstrumentor"),
    "mcp": ("mcp", "agentvigil.instrumentation.mcp:MCPInstrumentor"),
    "bedrock": ("botocore", "agentvigil.instrumentation.bedrock:BedrockInstrumentor"),
    "google_genai": ("google.genai", "agentvigil.instrumentation.google_genai:GoogleGenAIInstrumentor"),
    "openai_agents": ("agents", "agentvigil.instrumentation.openai_agents:OpenAIAgentsInstrumentor"),
    "litellm": ("litellm", "agentvigil.instrumentation.litellm:LiteLLMInstrumentor"),
}


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


#: integration name -> instrument() kwargs, for SDKs not imported yet (patched by their post-import hook)
_pending: dict[str, dict[str, Any]] = {}
_hooked: set[str] = set()
_lock = fork_safe_lock()


def _instrument_now(name: str, target: str, kwargs: dict[str, Any]) -> bool:
    try:
        instrumentor = _load(target)()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(**kwargs)
        return bool(instrumentor.is_instrumented_by_opentelemetry)
    except Exception as exc:  # an integration must never break the application's start-up
        log.warning("agentvigil: could not instrument %s: %r", name, exc)
        return False


def _on_import(name: str) -> Any:
    def hook(_module: Any) -> None:
        with _lock:
            kwargs = _pending.pop(name, None)
        if kwargs is not None:   # still wanted (not uninstrumented meanwhile)
            _instrument_now(name, _REGISTRY[name][1], kwargs)

    return hook


def _defer(name: str, module: str, kwargs: dict[str, Any]) -> None:
    from ._post_import import register_post_import_hook

    with _lock:
        _pending[name] = kwargs
        if name in _hooked:
            return
        _hooked.add(name)
    register_post_import_hook(_on_import(name), module)   # runs at once if imported meanwhile


def instrument(*, only: list[str] | tuple[str, ...] | None = None, **kwargs: Any) -> list[str]:
    """Instrument every supported SDK that is installed; returns the names instrumented now or on import.

    ``only`` restricts to some of ``openai``, ``anthropic``, ``langchain``, ``crewai``, ``mcp``, ``bedrock``,
    ``google_genai``, ``openai_agents``, ``litellm``;
    ``AGENTVIGIL_DISABLED_INSTRUMENTATIONS`` removes some. Other keyword arguments (``breaker``, ``budget``,
    ``capture_content``, ``monitor``, ...) go to every instrumentor, which ignores those it does not use.
    Never raises because of an integration: a failing one is logged and skipped.
    """
    names = list(only) if only is not None else list(_REGISTRY)
    disabled = _env.disabled_integrations()
    done: list[str] = []
    for name in names:
        if name not in _REGISTRY:
            log.warning("agentvigil: unknown integration %r; valid: %s", name, ", ".join(_REGISTRY))
            continue
        module, target = _REGISTRY[name]
        if name in disabled or not _installed(module):
            continue
        if module not in sys.modules:
            try:
                _defer(name, module, kwargs)
                done.append(name)
            except Exception as exc:
                log.warning("agentvigil: could not instrument %s: %r", name, exc)
            continue
        if _instrument_now(name, target, kwargs):
            done.append(name)
    return done


def uninstrument() -> None:
    """Undo ``instrument()``: every SDK is left as it was (and none not yet imported will be patched)."""
    with _lock:
        _pending.clear()
    for name, (module, target) in _REGISTRY.items():
        if module not in sys.modules:
            continue
        try:
            instrumentor = _load(target)()
            if instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.uninstrument()
        except Exception as exc:
            log.warning("agentvigil: could not uninstrument %s: %r", name, exc)


def instrumented() -> list[str]:
    """Names of the integrations currently instrumented, or to be when their SDK is imported."""
    out = [name for name in _REGISTRY if name in _pending]
    for name, (module, target) in _REGISTRY.items():
        if module not in sys.modules or name in out:
            continue
        try:
            if _load(target)().is_instrumented_by_opentelemetry:
                out.append(name)
        except Exception:
            continue
    return out


def __getattr__(name: str) -> Any:
    for _, target in _REGISTRY.values():
        if target.endswith(":" + name):
            return _load(target)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
