"""Another GenAI instrumentation already opened the model span: we add to it, never a second model span."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")
wrapt = pytest.importorskip("wrapt")

from openai.resources.chat.completions import Completions  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

from agentvigil.instrumentation.openai import OpenAIInstrumentor  # noqa: E402
from agentvigil.testing import Reply  # noqa: E402


def _other_instrumentation(tracer):
    """Stands in for opentelemetry-instrumentation-openai-v2: a CLIENT chat span current around the call."""

    def wrapper(wrapped, instance, args, kwargs):
        with tracer.start_as_current_span(f"chat {kwargs['model']}", kind=SpanKind.CLIENT,
                                          attributes={"gen_ai.operation.name": "chat",
                                                      "gen_ai.usage.input_tokens": 999}):
            return wrapped(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("other_first", [True, False])
def test_one_model_span_with_our_attributes(otel, monitor, fake, other_first):
    original = Completions.__dict__["create"]
    tracer = otel.tracer_provider.get_tracer("other.instrumentation")
    inst = OpenAIInstrumentor()
    try:
        if other_first:
            wrapt.wrap_function_wrapper(Completions, "create", _other_instrumentation(tracer))
            inst.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, monitor=monitor)
        else:
            inst.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, monitor=monitor)
            wrapt.wrap_function_wrapper(Completions, "create", _other_instrumentation(tracer))
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
        fake.enqueue(Reply(input_tokens=40, output_tokens=2))
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        (span,) = otel.model_spans()
        assert span.instrumentation_scope.name == "other.instrumentation"
        assert span.attributes["gen_ai.usage.input_tokens"] == 999      # theirs is kept
        assert "agentvigil.cost_usd" in span.attributes                 # ours is added
        assert otel.points("gen_ai.client.token.usage") == []          # tokens are theirs to count
        inst.uninstrument()
        assert not any(getattr(getattr(w, "_self_wrapper", None), "_agentvigil", False)
                       for w in _chain(Completions.__dict__["create"]))
    finally:
        if inst.is_instrumented_by_opentelemetry:
            inst.uninstrument()
        Completions.create = original


def _chain(obj):
    while isinstance(obj, wrapt.FunctionWrapper):
        yield obj
        obj = obj.__wrapped__
