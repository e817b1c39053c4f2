"""LiteLLM's vocabulary → agentvigil's: provider names (GenAI semconv), operations, usage, request attributes.

LiteLLM normalises every provider's usage to the OpenAI shape: ``prompt_tokens`` includes cache reads
(Anthropic's exclusive counts are summed by LiteLLM), cache reads are ``prompt_tokens_details.cached_tokens`` (or
``cache_read_input_tokens``) and cache writes ``cache_creation_input_tokens``. Whether ``prompt_tokens`` also
includes cache writes changed between releases (see ``_includes_writes``); agentvigil's input is always the
whole prompt.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from agentvigil.errors import NETWORK, SERVER_ERROR, TIMEOUT, UNKNOWN, classify_exception
from agentvigil.instrumentation import _semconv as sc
from agentvigil.instrumentation._common import (
    REQUEST_MAX_TOKENS,
    REQUEST_STREAM,
    REQUEST_TEMPERATURE,
    REQUEST_TOP_P,
    RESPONSE_FINISH_REASONS,
    RESPONSE_ID,
    Invocation,
)

#: LiteLLM ``custom_llm_provider`` → ``gen_ai.provider.name`` where the spec names it; others pass through.
PROVIDERS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "azure": "azure.ai.openai",
    "azure_text": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "anthropic": "anthropic",
    "anthropic_text": "anthropic",
    "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai",
    "vertex_ai_beta": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "mistral": "mistral_ai",
    "codestral": "mistral_ai",
    "groq": "groq",
    "deepseek": "deepseek",
    "perplexity": "perplexity",
    "xai": "x_ai",
    "watsonx": "ibm.watsonx.ai",
    "watsonx_text": "ibm.watsonx.ai",
}

#: LiteLLM call types recorded as LLM calls → GenAI operation. Others (images, audio, files, ...) are not.
OPERATIONS = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "text_completion",
    "atext_completion": "text_completion",
    "embedding": "embeddings",
    "aembedding": "embeddings",
}


get = sc._get   # callback.py reads SDK objects and dicts alike through m.get


def call_type(value: Any) -> str:
    """``CallTypes.acompletion`` (an enum in hooks) or ``"acompletion"`` (a string in logging kwargs)."""
    return str(getattr(value, "value", value) or "")


def provider_name(custom_llm_provider: Any) -> str:
    raw = str(custom_llm_provider or "litellm").lower()
    return PROVIDERS.get(raw, raw)


def split_model(model: Any, custom_llm_provider: Any = None) -> tuple[str, str]:
    """(provider, model) for a request: ``openai/gpt-4o-mini`` → (openai, gpt-4o-mini); an explicit
    ``custom_llm_provider`` wins. LiteLLM's own resolver is tried first: it knows bare names (``gpt-4o``)."""
    name = str(model or "unknown")
    provider = custom_llm_provider
    try:
        from litellm import get_llm_provider

        resolved, found, _, _ = get_llm_provider(model=name, custom_llm_provider=provider)
        return provider_name(found), str(resolved)
    except Exception:   # an unknown model: the prefix is still the best guess
        pass
    if provider is None and "/" in name:
        provider, _, name = name.partition("/")
    return provider_name(provider), name


def server_attributes(api_base: Any) -> dict[str, Any]:
    if not isinstance(api_base, str) or not api_base:
        return {}
    try:
        parsed = urlparse(api_base)
        host, port = parsed.hostname, parsed.port
    except ValueError:   # a malformed port
        return {}
    out: dict[str, Any] = {}
    if host:
        out[sc.SERVER_ADDRESS] = host
        if port and port != 443:
            out[sc.SERVER_PORT] = port
    return out


def request_attributes(params: dict[str, Any], stream: bool) -> dict[str, Any]:
    """Request attributes from the call's kwargs (hook) or LiteLLM's ``optional_params`` (logging kwargs)."""
    max_tokens = params.get("max_completion_tokens", params.get("max_tokens"))
    attrs: dict[str, Any] = {
        REQUEST_MAX_TOKENS: max_tokens if isinstance(max_tokens, int) else None,
        REQUEST_TEMPERATURE: _number(params.get("temperature")),
        REQUEST_TOP_P: _number(params.get("top_p")),
        sc.REQUEST_SEED: params.get("seed") if isinstance(params.get("seed"), int) else None,
        REQUEST_STREAM: True if stream else None,
    }
    return {k: v for k, v in attrs.items() if v is not None}


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def record_usage(inv: Invocation, response: Any, logging_object: Any, *, embeddings: bool = False) -> None:
    """Usage from the response (LiteLLM's normalised ``Usage``), else from the standard logging payload."""
    usage = get(response, "usage")
    prompt, completion = get(usage, "prompt_tokens"), get(usage, "completion_tokens")
    if isinstance(prompt, int) or isinstance(completion, int):
        details = get(usage, "prompt_tokens_details")
        reads = [v for v in (get(details, "cached_tokens"), get(usage, "cache_read_input_tokens"))
                 if isinstance(v, int)]
        write = next((v for v in (get(usage, "cache_creation_input_tokens"), get(details, "cache_creation_tokens"),
                                  get(details, "cache_write_tokens")) if isinstance(v, int) and v), 0)
        if write and isinstance(prompt, int) and not _includes_writes(prompt, details, max(reads or [0]), write):
            prompt += write
        inv.set_usage(prompt, None if embeddings else completion, max(reads) if reads else None, write,
                      input_excludes_cache=False)
        return
    prompt, completion = get(logging_object, "prompt_tokens"), get(logging_object, "completion_tokens")
    if isinstance(prompt, int) or isinstance(completion, int):
        inv.set_usage(prompt, None if embeddings else completion, None, 0, input_excludes_cache=False)


def _includes_writes(prompt: int, details: Any, read: int, write: int) -> bool:
    """Whether ``prompt_tokens`` counts cache writes. Recent LiteLLM (1.110: Anthropic's input + cache reads +
    cache writes) says so by filling ``prompt_tokens_details.cache_creation_tokens``; older releases (1.68: input
    + cache reads only, cache writes apart in ``cache_creation_input_tokens``) have no such field."""
    if isinstance(get(details, "cache_creation_tokens"), int):
        return True
    text = get(details, "text_tokens")
    return isinstance(text, int) and text + read + write == prompt


def response_attributes(response: Any) -> dict[str, Any]:
    choices = get(response, "choices") or []
    reasons = [str(get(c, "finish_reason") or "error") for c in choices]
    return {k: v for k, v in {RESPONSE_ID: get(response, "id"), RESPONSE_FINISH_REASONS: reasons or None}.items()
            if v is not None}


def error_kind(exc: BaseException) -> str | None:
    """LiteLLM re-raises a transport failure of the provider client (connection refused, reset) as a 500
    ``InternalServerError`` / ``APIError``; the cause chain keeps the real one. ``None``: the core's taxonomy
    classifies the exception itself (LiteLLM's classes carry the usual names and status codes)."""
    if classify_exception(exc) not in (SERVER_ERROR, UNKNOWN):
        return None
    cause = exc.__cause__ or exc.__context__
    for _ in range(8):   # bounded: a cyclic or very long chain is not followed further
        if cause is None:
            return None
        kind = classify_exception(cause)
        if kind in (NETWORK, TIMEOUT):
            return kind
        cause = cause.__cause__ or cause.__context__
    return None
