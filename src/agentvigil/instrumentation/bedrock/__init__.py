"""AWS Bedrock runtime instrumentation through botocore: ``converse``, ``converse_stream``, ``invoke_model`` and
``invoke_model_with_response_stream`` of every ``bedrock-runtime`` client (boto3's included) become agentvigil LLM
calls with cache-aware token accounting; every other AWS service is left alone.

    from agentvigil.instrumentation.bedrock import BedrockInstrumentor
    BedrockInstrumentor().instrument()         # or agentvigil.instrumentation.instrument()

Options (keyword arguments to ``instrument``): ``capture_content``, ``breaker``, ``budget``, ``budget_estimate``,
``monitor`` — as for the OpenAI instrumentor.
"""

from __future__ import annotations

from typing import Any

from agentvigil.instrumentation._base import SDKInstrumentor, wrap
from agentvigil.instrumentation._common import Options
from agentvigil.instrumentation.bedrock.package import _instruments

__all__ = ["BedrockInstrumentor"]


class BedrockInstrumentor(SDKInstrumentor):
    """Wraps ``botocore.client.BaseClient._make_api_call``; only ``bedrock-runtime`` operations are recorded."""

    _instruments = _instruments

    def _extra_patches(self, opts: Options) -> list[tuple[Any, str]]:
        from botocore.client import BaseClient

        from agentvigil.instrumentation.bedrock.patch import make_api_call_wrapper

        wrap(BaseClient, "_make_api_call", make_api_call_wrapper(opts))
        return [(BaseClient, "_make_api_call")]
