"""Supported CrewAI versions: the event bus with ``started_event_id`` pairing (1.x)."""

_instruments = ("crewai >= 0.80",)
