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
        self._lanes = self._batch_lanes()

    def _batch_lanes(self) -> list[tuple[frozenset[str], tuple[tuple[int, Detector], ...],
                                   dict[str, tuple[tuple[int, Detector], ...]]]] | None:
        """The lanes ``emit_batch`` feeds one after the other: (their event types, their detectors with their
        place in the pipeline, and by type the detectors of a lane of several). None when a batch must be
        emitted event by event: a sink (it sees detectors' state between events, e.g. the cost baseline), a
        detector of detections that reads other events too, or a detector that does not declare its lane."""
        if any(self._handlers_for.values()):
            return None
        lanes: dict[str, list[tuple[int, Detector]]] = {}
        for j, detector in enumerate(self.detectors):
            types = frozenset(t for t in ALL if detector in self._detectors_for[t])
            if ev.DETECTION in types:
                if types != {ev.DETECTION}:
                    return None
                continue   # fed verdicts, in order, after the lanes (_collect)
            if not types:
                continue
            lane = getattr(detector, "batch_lane", None)
            if lane.__class__ is not str:
                return None
            lanes.setdefault(lane, []).append((j, detector))
        out = []
        for members in lanes.values():
            types = frozenset(t for t in ALL for _, d in members if d in self._detectors_for[t])
            routes = {t: tuple((j, d) for j, d in members if d in self._detectors_for[t]) for t in types}
            out.append((types, tuple(members), routes))
        return out

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

    def emit_batch(self, events: list[Event]) -> list[tuple[int, list[Event]]]:
        """``emit`` of each event in turn, as (index in ``events``, its verdicts) for the events that have
        verdicts: the same verdicts, in the same order, and the same failures counted in the same order.

        For a reader of recorded events (replay): where the pipeline has no sink and every detector declares
        its ``batch_lane`` (the detectors whose state it shares, or its own name: it shares none), each lane is
        fed the whole batch before the next, so one detector's code and data stay in the CPU's caches instead
        of seven detectors taking turns per event (measured: a third of the detectors' cost). A lane of several
        detectors is fed event by event among themselves, in pipeline order. What each detector returned or
        raised is then taken in the pipeline's order, event by event: verdicts to the detectors of
        detections (correlation), failures to ``on_error``. Anything else is emitted event by event."""
        lanes = self._lanes
        by_type: dict[str, list[Event]] = {}
        if lanes is not None:
            for event in events:
                kind = event.event_type
                same = by_type.get(kind)
                if same is None:
                    by_type[kind] = [event]
                else:
                    same.append(event)
        if lanes is None or ev.DETECTION in by_type or not by_type.keys() <= ALL:
            out = []
            emit = self.emit
            for i, event in enumerate(events):
                got = emit(event)
                if got:
                    out.append((i, got))
            return out
        present = by_type.keys()
        outcomes: list[tuple[int, int, BaseException | None, Iterable[Event] | None]] = []
        with self._lock:
            for types, members, routes in lanes:
                kinds = [t for t in present if t in types]
                if not kinds:
                    continue
                if len(kinds) == len(present):
                    chosen = events
                elif len(kinds) == 1:
                    chosen = by_type[kinds[0]]
                else:
                    chosen = [event for event in events if event.event_type in types]
                # (place in ``chosen``, detector's place, failure, verdicts); placed in ``events`` once, if any
                seen: list[tuple[int, int, BaseException | None, Iterable[Event] | None]] = []
                alone = members if len(members) == 1 else None   # a lane of one needs no lookup per event
                for k, event in enumerate(chosen):
                    for j, detector in alone or routes[event.event_type]:
                        try:
                            found = detector.feed(event)
                        except Exception as exc:
                            seen.append((k, j, exc, None))
                            continue
                        if found:
                            seen.append((k, j, None, found))
                if seen:
                    where = _indices(events, chosen, types)
                    outcomes += [(where[k], j, failure, found) for k, j, failure, found in seen]
            if not outcomes:
                return []
            outcomes.sort(key=_place)
            out = []
            judged: list[Event] = []
            current = outcomes[0][0]
            for i, j, failure, result in outcomes:
                if i != current:
                    if judged:
                        out.append((current, judged))
                        judged = []
                    current = i
                if failure is not None:
                    self._error("detector", failure)
                elif result:
                    self._collect(result, judged, self.detectors[j])
            if judged:
                out.append((current, judged))
        return out   # no sink to deliver the verdicts to (else the batch went event by event)

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


def _indices(events: list[Event], chosen: list[Event], types: frozenset[str]) -> list[int]:
    """Where each event of ``chosen`` (those of ``events`` of these types, in order) is in ``events``."""
    if chosen is events:
        return list(range(len(events)))
    return [i for i, event in enumerate(events) if event.event_type in types]


def _place(outcome: tuple) -> tuple[int, int]:
    return outcome[0], outcome[1]   # the event's index, then the detector's place in the pipeline
