"""Latest-mode content modes of OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT (NO_CONTENT, SPAN_ONLY,
EVENT_ONLY, SPAN_AND_EVENT) and the ``gen_ai.client.inference.operation.details`` event, for OpenAI chat and
Anthropic messages: where the content goes, and that nothing goes anywhere by default."""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

from agentvigil.instrumentation.anthropic import AnthropicInstrumentor  # noqa: E402
from agentvigil.instrumentation.openai import OpenAIInstrumentor  # noqa: E402

CONTENT = {"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
           "gen_ai.tool.definitions"}
# OpenAI chat keeps system messages in gen_ai.input.messages, as the contrib instrumentation does
EXPECTED = {"openai": CONTENT - {"gen_ai.system_instructions"}, "anthropic": CONTENT}
DETAILS = "gen_ai.client.inference.operation.details"
OPENAI_TOOLS = [{"type": "function", "function": {"name": "search", "description": "d", "parameters": {}}}]
ANTHROPIC_TOOLS = [{"name": "search", "description": "d", "input_schema": {"type": "object"}}]


def _openai(fake):
    client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", tools=OPENAI_TOOLS,
                                   messages=[{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": "hi"}])


def _anthropic(fake):
    client = anthropic.Anthropic(base_url=fake.anthropic_base_url, api_key="k", max_retries=0)
    client.messages.create(model="claude-haiku-4-5", max_tokens=10, system="be brief", tools=ANTHROPIC_TOOLS,
                           messages=[{"role": "user", "content": "hi"}])


SDKS = {"openai": (OpenAIInstrumentor, _openai), "anthropic": (AnthropicInstrumentor, _anthropic)}


@pytest.fixture(params=sorted(SDKS))
def run(request, otel, monitor, logs, fake, monkeypatch):
    """Instrument one SDK in the latest mode with the given content mode (None: unset), make one call, return
    (model span, details events)."""
    klass, call = SDKS[request.param]
    inst = klass()

    def go(mode, logger_provider=logs.provider):
        monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
        monkeypatch.delenv("AGENTVIGIL_CAPTURE_CONTENT", raising=False)
        if mode is None:
            monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
        else:
            monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode)
        inst.instrument(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider, monitor=monitor,
                        logger_provider=logger_provider)
        call(fake)
        (span,) = otel.model_spans()
        events = [r.log_record for r in logs.get_finished_logs() if r.log_record.event_name == DETAILS]
        return span, events

    go.content = EXPECTED[request.param]
    yield go
    if inst.is_instrumented_by_opentelemetry:
        inst.uninstrument()


def test_no_env_means_no_content_anywhere(run):
    span, events = run(None)
    assert not CONTENT & set(span.attributes)
    assert events == []


def test_no_content_mode(run):
    span, events = run("NO_CONTENT")
    assert not CONTENT & set(span.attributes)
    assert events == []


def test_span_only_mode(run):
    span, events = run("SPAN_ONLY")
    assert run.content <= set(span.attributes)
    assert events == []


def test_event_only_mode_keeps_content_off_the_span(run):
    span, events = run("EVENT_ONLY")
    assert not CONTENT & set(span.attributes)
    (event,) = events
    attrs = dict(event.attributes)
    assert run.content <= set(attrs)
    assert json.loads(attrs["gen_ai.input.messages"])[-1] == {"role": "user",
                                                              "parts": [{"type": "text", "content": "hi"}]}
    assert json.loads(attrs["gen_ai.tool.definitions"])[0]["name"] == "search"
    if "gen_ai.system_instructions" in run.content:
        assert json.loads(attrs["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]
    else:
        assert json.loads(attrs["gen_ai.input.messages"])[0]["role"] == "system"
    assert json.loads(attrs["gen_ai.output.messages"])[0]["role"] == "assistant"
    # the span's GenAI attributes ride along, and the event is in the span's context
    for key in ("gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
                "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
        assert attrs[key] == span.attributes[key], key
    assert event.span_id == span.context.span_id
    assert event.trace_id == span.context.trace_id


def test_span_and_event_mode_puts_content_on_both(run):
    span, events = run("span_and_event")   # case-insensitive
    (event,) = events
    assert run.content <= set(span.attributes)
    for key in run.content:
        assert dict(event.attributes)[key] == span.attributes[key]


def test_event_mode_without_a_logger_provider_emits_nothing_and_keeps_content_off_the_span(run):
    span, events = run("EVENT_ONLY", logger_provider=None)   # the global provider is the default no-op one
    assert not CONTENT & set(span.attributes)
    assert events == []


def test_older_true_value_still_means_span(run):
    span, events = run("True")
    assert run.content <= set(span.attributes)
    assert events == []


def test_event_only_covers_openai_streams_and_responses(otel, monitor, logs, fake, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "event_only")
    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=otel.tracer_provider, monitor=monitor, logger_provider=logs.provider)
    try:
        client = openai.OpenAI(base_url=fake.openai_base_url, api_key="k", max_retries=0)
        list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                            stream=True))
        client.responses.create(model="gpt-4o-mini", input="hi", instructions="be brief")
    finally:
        inst.uninstrument()
    spans = otel.model_spans()
    events = [r.log_record for r in logs.get_finished_logs() if r.log_record.event_name == DETAILS]
    assert len(spans) == len(events) == 2
    assert not any(CONTENT & set(s.attributes) for s in spans)
    assert [e.span_id for e in events] == [s.context.span_id for s in spans]
    streamed, responses = (dict(e.attributes) for e in events)
    assert json.loads(streamed["gen_ai.output.messages"])[0]["parts"][0]["type"] == "text"
    assert json.loads(responses["gen_ai.system_instructions"]) == [{"type": "text", "content": "be brief"}]


def test_a_failing_logger_never_reaches_the_caller(otel, monitor, fake, monkeypatch):
    class Broken:
        def get_logger(self, *args, **kwargs):
            return self

        def emit(self, record):
            raise RuntimeError("collector gone")

    from prometheus_client import REGISTRY

    def internal_errors_count():
        return REGISTRY.get_sample_value("agentvigil_internal_errors_total",
                                         {"component": "instrumentation.events"}) or 0

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    inst = OpenAIInstrumentor()
    inst.instrument(tracer_provider=otel.tracer_provider, monitor=monitor, logger_provider=Broken())
    before = internal_errors_count()
    try:
        _openai(fake)
    finally:
        inst.uninstrument()
    (span,) = otel.model_spans()
    assert not CONTENT & set(span.attributes)
    assert span.attributes["gen_ai.response.model"]
    assert internal_errors_count() > before
