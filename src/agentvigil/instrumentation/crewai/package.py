"""Supported CrewAI versions: 1.9.0 and newer, the oldest the tests can run against: they wait for the event bus
with ``crewai_event_bus.flush``, new in 1.9 (1.0 to 1.8 are untested; 0.x has no ``crewai.events`` at all).

Tested at 1.9.0 and the newest by ``scripts/test-crewai.sh``. Before 1.10 the bus has no ``off`` (uninstrument
leaves the handlers registered but inert) and no ``started_event_id`` (tool finishes are paired with starts in
order, per run and tool name).
"""

_instruments = ("crewai >= 1.9.0",)
