"""Test helpers shipped with agentvigil: a local fake LLM provider speaking the OpenAI, Anthropic, Gemini API and
Bedrock runtime wire formats (one module per format: wire_anthropic.py, wire_gemini.py, wire_bedrock.py).

Nothing here is imported by ``import agentvigil``; it is for tests, demos and benchmarks.
"""

from agentvigil.testing.fake_provider import FakeProvider, RecordedRequest, Reply

__all__ = ["FakeProvider", "RecordedRequest", "Reply"]
