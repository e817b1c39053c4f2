"""The one path every event takes: producers → ``Pipeline.emit`` → detectors → sinks.

Producers (the Monitor and its scopes, the SDK integrations, the guards, the agent-strace reader, the
readers of recorded sessions) only build Events. The pipeline first feeds each event to the detectors that
consume its type; their verdicts are Events too (``event_type="detection"``) and are fed to the detectors
that consume detections (correlation). Then every sink that consumes the type gets the event, then each
verdict: Prometheus, OTel spans, the recorder, subscribers, actions. A failing detector or sink is counted
and skipped; it never stops the others, and nothing raises to the producer.

The in-process Monitor, ``replay``, ``watch`` and ``supervise`` build their pipeline with
``agentvigil.pipeline.build.build_pipeline`` from the same settings, so they reach the same verdicts.
"""

from __future__ import annotations

from typing import Callable, Iterable, Protocol, runtime_checkable

from .. import events as ev
from .._safety import fork_safe_lock, internal_error
from ..events import Event
from ..verdicts import ACTIVITY, Detector, detection

__all__ = ["ACTIVITY", "ALL", "Detector", "Pipeline", "Sink", "detection"]

ALL = frozenset(ev.EVENT_TYPES)


@runtime_checkable
class Sink(Protocol):
    """Receives events after the detectors. ``consumes`` the event types it wants. A sink that dispatches
    by type may also offer ``handler_for(event_type)``, returning the callable for that type: the pipeline
    then calls it directly (one call per event instead of two)."""

    consumes: frozenset[str]

    def handle(self, event: Event) -> None: ...


def _handler(sink: Sink, event_type: str) -> Callable[[Event], None]:
    handler_for = getattr(sink, "handler_for", None)
    found = handler_for(event_type) if handler_for is not None else None
    return found if found is not None else sink.handle


class Pipeline:
    """Detectors then sinks, routed by event type. Thread-safe: detectors are fed under one lock (they keep
    plain state); sinks are called outside it and must be thread-safe themselves."""

    def __init__(self, detectors: Iterable[Detector] = (), sinks: Iterable[Sink] = (),
                 on_error: Callable[[str, BaseException], None] | None = None):
        self.detectors: list[Detector] = list(detectors)
        self.sinks: list[Sink] = list(sinks)
        self._error = on_error or internal_error
        self._lock = fork_safe_lock()
        self._route()

    def _route(self) -> None:
        self._detectors_for: dict[str, tuple[Detector, ...]] = {
            t: tuple(d for d in self.detectors if t in d.consumes) for t in ALL}
        self._sinks_for: dict[str, tuple[Sink, ...]] = {
            t: tuple(s for s in self.sinks if t in s.consumes) for t in ALL}
        self._tickers = tuple(d for d in self.detectors if getattr(d, "ticks", False))
        self._handlers_for: dict[str, tuple[Callable[[Event], None], ...]] = {
            t: tuple(_handler(s, t) for s in self._sinks_for[t]) for t in ALL}
        # One lookup per event on the hot path: (detectors, sink handlers) of each type.
        self._routes: dict[str, tuple[tuple[Detector, ...], tuple[Callable[[Event], None], ...]]] = {
            t: (self._detectors_for[t], self._handlers_for[t]) for t in ALL}
        self.wanted: frozenset[str] = frozenset(t for t, (d, s) in self._routes.items() if d or s)

    def add_sink(self, sink: Sink) -> None:
        self.sinks.append(sink)
        self._route()

    def remove_sink(self, sink: Sink) -> None:
        if sink in self.sinks:
            self.sinks.remove(sink)
            self._route()

    def wants(self, event_type: str) -> bool:
        """Whether anything consumes this type: producers skip building events nobody reads."""
        return event_type in self.wanted

    def detector(self, name: str) -> Detector | None:
        for d in self.detectors:
            if d.name == name:
                return d
        return None

    def emit(self, event: Event) -> list[Event]:
        """Judge then deliver one event. Returns the verdicts it produced (usually none). Never raises."""
        verdicts: list[Event] = []
        route = self._routes.get(event.event_type)
        if route is None:
            self._error("pipeline", ValueError(f"unknown event type {event.event_type!r}"))
            return verdicts
        detectors, handlers = route
        if detectors:
            with self._lock:   # _judge, inlined: this is the per-event hot path
                for detector in detectors:
                    try:
                        found = detector.feed(event)
                    except Exception as exc:
                        self._error("detector", exc)
                        continue
                    if found:
                        self._collect(found, verdicts, detector)
        for handle in handlers:     # _deliver, inlined
            try:
                handle(event)
            except Exception as exc:
                self._error("sink", exc)
        for verdict in verdicts:
            self._deliver(verdict)
        return verdicts

    def tick(self, now: float) -> list[Event]:
        """Let time-based detectors judge the clock (silence, liveness, duration). Returns their verdicts."""
        verdicts: list[Event] = []
        if not self._tickers:
            return verdicts
        with self._lock:
            for detector in self._tickers:
                try:
                    found = detector.tick(now)
                except Exception as exc:
                    self._error("detector", exc)
                    continue
                if found:
                    self._collect(found, verdicts, detector)
        for verdict in verdicts:
            self._deliver(verdict)
        return verdicts

    def _collect(self, found: Iterable[Event], verdicts: list[Event], source: Detector) -> None:
        """Add verdicts, and feed each to the detectors of detections (correlation), never to itself."""
        on_detection = self._detectors_for[ev.DETECTION]
        for verdict in found:
            verdicts.append(verdict)
            for detector in on_detection:
                if detector is source:
                    continue
                try:
                    more = detector.feed(verdict)
                except Exception as exc:
                    self._error("detector", exc)
                    continue
                if more:
                    verdicts.extend(more)

    def _deliver(self, event: Event) -> None:
        for handle in self._handlers_for[event.event_type]:
            try:
                handle(event)
            except Exception as exc:  # one broken sink must not starve the others
                self._error("sink", exc)

    def close_detectors(self) -> None:
        """Let detectors that keep state beyond the process write it (runaway's state file)."""
        with self._lock:   # not while one is fed
            self._close_each(self.detectors, "detector")

    def close(self) -> None:
        self.close_detectors()
        self._close_each(self.sinks, "sink")

    def _close_each(self, parts: Iterable[object], component: str) -> None:
        for part in parts:
            close = getattr(part, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:   # one that fails must not keep the others open
                    self._error(component, exc)
