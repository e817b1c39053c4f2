"""Replay recorded sessions through the same pipeline the Monitor uses in-process.

Bad input never stops a replay and never loses valid events: a line that is not JSON, is truncated, or is
not a valid event is skipped and counted by reason, with its line number available for messages. Recorded
verdicts are not fed back: the detectors re-derive them from the same events.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterator

from . import codec
from . import events as ev
from .codec import decode
from .events import Event, InvalidEvent, event_from_dict
from .metrics import AgentMetrics
from .pipeline import Pipeline
from .pipeline.build import build_pipeline
from .policy import WatchConfig
from .sessions import EVENTS_FILE, find_event_files, meta_number, read_meta, session_start

__all__ = ["EVENTS_FILE", "UNREADABLE", "ReplayStats", "detection_record", "find_event_files", "pipeline_for",
           "read_events", "replay", "session_start", "sessions"]

log = logging.getLogger("agentvigil")
_logged: set[str] = set()   # components whose internal error was logged
UNREADABLE = "unreadable"   # skip reason: a session file that could not be opened or read (rotated away, EACCES)


@dataclass
class ReplayStats:
    sessions: int = 0
    events: int = 0
    detections: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_errors: list = field(default_factory=list)  # (path, line number, reason, message), first 20
    by_detector: Counter = field(default_factory=Counter)   # (session, detector) -> verdicts
    # A detector or sink that raised (a bug, or input it did not expect): counted by component, its verdicts
    # for that event lost; the first exception of each component is kept (repr) and logged, once, in one line.
    internal_errors: Counter = field(default_factory=Counter)
    first_internal: dict = field(default_factory=dict)   # component -> repr of its first exception

    def skip(self, path: str, lineno: int, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        if len(self.first_errors) < 20:
            self.first_errors.append((path, lineno, reason, message[:200]))

    def internal_error(self, component: str, exc: BaseException | None = None) -> None:
        """The ``on_error`` of replay's pipelines: counted here, never a traceback."""
        self.internal_errors[component] += 1
        if component not in self.first_internal:
            try:
                shown = repr(exc)[:200]
            except Exception:   # an exception whose repr raises: its class will do
                shown = type(exc).__name__
            self.first_internal[component] = shown
        if component not in _logged:   # once per process (a --sweep replays many times)
            _logged.add(component)
            log.warning("agentvigil replay: internal error in %s (further ones are only counted): %s",
                        component, self.first_internal[component])


def _unread_prefixes(unread: frozenset[str]) -> tuple[bytes, ...]:
    # The recorder writes event_type first, compactly (codec._as_dict follows the Event's field order).
    return tuple(b'{"event_type":"' + t.encode() + b'",' for t in sorted(unread & ev.EVENT_TYPES))


def read_events(path: str, stats: ReplayStats, unread: frozenset[str] = frozenset()) -> Iterator[Event]:
    """Yield the valid events of one NDJSON file; count the rest. A final line without a newline is judged
    too (a recorder killed mid-write leaves one; it is counted as truncated if it does not decode).

    ``unread``: event types the caller drops. They are not yielded, and a line that plainly is one of them (as
    the recorder writes it: ``{"event_type":"<type>",`` first, that key once, as many ``{`` as ``}``, ending
    with ``}``) is counted as an event without being decoded: its other fields are not validated. Any other
    line is decoded and validated in full (docs/events.md)."""
    loads = codec.loads
    # The decoder's work for the usual line, inlined (one call less per line): the stdlib scanner
    # (codec._loads_fallback), or orjson itself (codec._loads_fast; a line it rejects goes to decode, which
    # retries it with the stdlib decoder as codec.loads does).
    scan = codec._scan_once if loads is codec._loads_fallback else None
    if loads is codec._loads_fast and codec._fast_loads is not None:
        loads = codec._fast_loads
    prefixes = _unread_prefixes(unread)
    try:
        fh = open(path, "rb")
    except OSError as exc:   # rotated away or removed since the listing, no permission: this file only
        stats.skip(path, 0, UNREADABLE, f"cannot open: {exc.strerror or exc}")
        return
    lineno = 0
    with fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                if raw[:1] != b"{":
                    if raw.startswith(b"\xef\xbb\xbf"):   # a BOM (of the file, or of a concatenated one): not data
                        raw = raw[3:]
                    if not raw.strip():
                        continue
                elif prefixes and raw.startswith(prefixes) and (raw.endswith(b"}\n") or raw.endswith(b"}")) \
                        and raw.count(b'"event_type"') == 1 and raw.count(b"{") == raw.count(b"}"):
                    stats.events += 1    # an unread type, complete as far as a byte count can tell: not decoded
                    continue
                try:
                    try:   # codec.decode's work for the usual line; decode itself classifies what fails
                        if scan is not None:
                            text = raw.decode("utf-8", "replace")
                            data, end = scan(text, 0)
                            last = len(text) - 1   # the usual line ends with its newline right after the value
                            if end <= last and (end < last or text[last] != "\n") and text[end:].strip(" \t\n\r"):
                                raise ValueError("extra data")
                        else:
                            data = loads(raw)
                        event = event_from_dict(data)
                    except (ValueError, RecursionError, StopIteration):
                        event = decode(raw)
                except InvalidEvent as exc:
                    stats.skip(path, lineno, exc.reason, str(exc))
                    continue
                stats.events += 1
                if event.event_type not in unread:
                    yield event
        except OSError as exc:   # the disk failed under us: what was read stands
            stats.skip(path, lineno + 1, UNREADABLE, f"cannot read: {exc.strerror or exc}")


def detection_record(event: Event) -> dict:
    """The JSON object printed per verdict."""
    return {"ts": event.ts, "session_id": event.session_id, "agent_id": event.agent_id, "run_id": event.run_id,
            "task_id": event.task_id, "step_index": event.step_index, "detector": event.detector,
            "detail": event.detail or {}}


def pipeline_for(settings: object = None, policy: WatchConfig | None = None, metrics: AgentMetrics | None = None,
                 started_at: float | None = None, shared: dict | None = None,
                 on_error: Callable[[str, BaseException], None] | None = None) -> Pipeline:
    """One session's pipeline. ``shared``: one dict for all the sessions of a replay, so what the detectors
    learn from ended runs (runaway's baseline) carries into the next session, as the state file carries it
    from one process to the next in production. ``on_error``: what a failing detector or sink is reported to
    (``ReplayStats.internal_error`` in ``sessions``; the metrics' counter, else the default, without)."""
    from .settings import Settings

    pipeline, _ = build_pipeline(settings if isinstance(settings, Settings) else Settings.from_env(),
                                 policy if policy is not None else WatchConfig.defaults(), metrics=metrics,
                                 started_at=started_at, shared=shared, on_error=on_error)
    return pipeline


def _counting(stats: ReplayStats, metrics: AgentMetrics | None) -> Callable[[str, BaseException], None]:
    """Count a pipeline failure in ``stats`` (and in ``metrics``' internal-errors counter when replay feeds one)."""
    if metrics is None:
        return stats.internal_error

    def count(component: str, exc: BaseException | None = None) -> None:
        stats.internal_error(component, exc)
        try:
            metrics.internal_errors.labels(component).inc()
        except Exception:  # pragma: no cover - counting must not raise
            pass

    return count


def _started_at(meta: dict | None) -> float | None:
    """meta.json's ``started_at`` when it is a finite number (not NaN, not an int beyond float range)."""
    try:
        return meta_number(meta, "started_at")
    except (OverflowError, ValueError):   # meta_number's float() of 10**400
        return None


def sessions(path: str, stats: ReplayStats, settings: object = None, policy: WatchConfig | None = None,
             metrics: AgentMetrics | None = None, also: frozenset[str] = frozenset()
             ) -> Iterator[tuple[Pipeline, Iterator[Event]]]:
    """Each session under ``path`` in the order they started, as (its pipeline, its events): a fresh pipeline
    per session, as in-process (one Monitor, one session), that starts from what the earlier sessions' ended
    runs taught (runaway's baseline, as its state file carries it). The events are those the pipeline reads,
    plus the types in ``also``; recorded verdicts are re-derived, not re-fed. A session's detectors are closed
    when the caller moves on to the next."""
    shared: dict = {}
    on_error = _counting(stats, metrics)
    for events_path in find_event_files(path):
        stats.sessions += 1
        meta = read_meta(events_path.rsplit("/", 1)[0]) if "/" in events_path else None
        pipeline = pipeline_for(settings, policy, metrics, _started_at(meta), shared, on_error)
        # e.g. tool_start: nothing to judge or write
        unread = ev.EVENT_TYPES - ((pipeline.wanted | also) - {ev.DETECTION})
        try:
            yield pipeline, read_events(events_path, stats, unread)
        finally:
            pipeline.close_detectors()


def replay(path: str, settings: object = None, stats: ReplayStats | None = None,
           metrics: AgentMetrics | None = None, policy: WatchConfig | None = None) -> Iterator[dict]:
    """Yield one record per verdict, session by session (``sessions``). With ``metrics``, the events also go
    through the Prometheus sink."""
    stats = stats if stats is not None else ReplayStats()
    for pipeline, events in sessions(path, stats, settings, policy, metrics):
        emit_batch = pipeline.emit_batch
        for batch in batched(events):
            for _, verdicts in emit_batch(batch):
                for verdict in verdicts:
                    stats.detections += 1
                    stats.by_detector[(verdict.session_id, verdict.detector)] += 1
                    yield detection_record(verdict)


BATCH = 256   # events read ahead of the pipeline (see ``batched``)


def batched(events: Iterator[Event], size: int = BATCH) -> Iterator[list[Event]]:
    """The events in lists of up to ``size``, for ``Pipeline.emit_batch``: reading a few hundred lines, then
    judging them, keeps each side's code and data in the CPU's caches, where alternating line by line evicts
    them (measured: ~10 % of a replay). The same events in the same order; only the reader runs ahead of the
    pipeline, by at most ``size`` events (so bounded memory)."""
    while True:
        batch = list(islice(events, size))
        if not batch:
            return
        yield batch
