"""Supported ``openai-agents`` (import name ``agents``) versions: the tracing processor API
(``TracingProcessor``, ``add_trace_processor`` / ``set_trace_processors``) and the span data types read here
(agent, function, generation, response, handoff, guardrail) exist since the first release; 0.0.4 is the oldest
tested. Usage is read from the span (newer releases) or from the Responses API object on it (older ones).
Tested against 0.24.0."""

_instruments = ("openai-agents >= 0.0.4",)
