"""Test helpers shipped with agentvigil: a local fake LLM provider speaking the OpenAI and Anthropic wire formats.

Nothing here is imported by ``import agentvigil``; it is for tests, demos and benchmarks.
"""

from agentvigil.testing.fake_provider import FakeProvider, RecordedRequest, Reply

__all__ = ["FakeProvider", "RecordedRequest", "Reply"]
