"""The I/O loop of ``watch``: tail → decode → ``SessionJudge`` → report and act. All decisions live in
``core``/``watchers``; this module only moves bytes, keeps time and carries out actions.

Latency path for one appended line: inotify wake-up (sub-millisecond) → read → decode → judge → the SIGTERM
is sent or the webhook POST queued on this thread, before the next line is looked at.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from .. import events as ev
from ..actions import FileLog, Killer, ProcessRef, Terminal, WebhookSender
from ..codec import loads as _loads
from ..detectors.scope import ScopePolicy
from ..events import Event, InvalidEvent, event_from_dict
from ..files import open_regular
from ..metrics import AgentMetrics
from ..policy import WatchConfig
from ..sessions import EVENTS_FILE
from ..settings import Settings
from .core import Breach, SessionJudge
from .sources import SessionSource, Target, _session, _start_key, is_session_dir, process_liveness
from .strace import StraceMapper, is_strace_record
from .tail import Tailer, Waker

if TYPE_CHECKING:
    from ..signals.cost import PriceBook

EXIT_OK = 0            # watched to the end (or --timeout / --no-follow), no breach
EXIT_ERROR = 1         # could not read or act (I/O error)
EXIT_USAGE = 2         # bad flags or config, or --no-follow on a path that does not exist
EXIT_BREACH = 3        # at least one breach was reported
EXIT_KILLED = 4        # watch killed (SIGTERM/SIGKILL) at least one agent process
EXIT_INTERRUPTED = 130

LIVENESS_EVERY = 0.1   # seconds between /proc checks per session
RESCAN_EVERY = 0.25    # seconds between scans of a sessions directory
IDLE_RECHECK_EVERY = 1.0   # seconds between looks at whether an idle (released) session's file grew


@dataclass(frozen=True)
class _Paused:
    """Where an idle session's file was left when it was released: picked up again, it is read up to there
    without acting (it was judged once), then followed."""

    identity: tuple[int, int] | None   # (st_dev, st_ino) of the file, None if there was none yet
    offset: int                        # bytes read, a last line without its newline included
    head: bytes                        # its first bytes: a file truncated and refilled starts otherwise

    def grew(self, path: str) -> bool:
        """The file at ``path`` is no longer as it was left (written to, replaced, truncated)."""
        try:
            st = os.stat(path)
        except OSError:
            return False   # not there (again): nothing to read
        return (st.st_dev, st.st_ino) != self.identity or st.st_size != self.offset

    def continued_by(self, path: str) -> bool:
        """The file at ``path`` is the one left, with more written to it (not another file in its place)."""
        if self.identity is None:
            return False
        try:
            fd = open_regular(path)
        except OSError:
            return False
        try:
            st = os.fstat(fd)
            return ((st.st_dev, st.st_ino) == self.identity and st.st_size >= self.offset
                    and os.pread(fd, len(self.head), 0) == self.head)
        except OSError:
            return False
        finally:
            os.close(fd)


@dataclass
class _Watched:
    source: SessionSource
    tailer: Tailer
    judge: SessionJudge
    mapper: StraceMapper | None = None
    proc: ProcessRef | None = None
    live: bool = True        # not known to have exited (it may be unverifiable: then it lives, unkillable)
    running: bool = False    # seen running on this host (the clock of duration / silence runs)
    ended: bool = False
    checked_at: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    announced: bool = False
    changed_at: float = 0.0  # when its file last grew (or its mtime when it was found)
    read_to: int = 0         # the tailer's offset then
    paused: _Paused | None = None   # released while idle (--all): picked up again when its file grows


class Reporter(Terminal):
    """Human lines on stderr, or one JSON object per line on stdout with ``json_out`` (the terminal action)."""


class Watch:
    def __init__(self, target: Target, config: WatchConfig, *, all_sessions: bool = False, follow: bool = True,
                 json_out: bool = False, out: TextIO | None = None, status_every: float = 10.0,
                 timeout: float | None = None, pid: int | None = None,
                 scope_policy: ScopePolicy | None = None, settings: Settings | None = None,
                 metrics: AgentMetrics | None = None, prices: PriceBook | None = None, use_inotify: bool = True,
                 quiet: bool = False, allow_other_users: bool = False):
        self.target = target
        self.config = config
        self.all_sessions = all_sessions
        self.follow = follow
        self.status_every = status_every
        self.timeout = timeout
        self.pid_override = ProcessRef.current(pid) if pid else None
        self.scope_policy = scope_policy
        self.settings = settings or Settings.from_env()
        self.metrics = metrics
        self.allow_other_users = allow_other_users
        self.prices = prices
        self.started = time.time()
        self.reporter = Reporter(out or (sys.stdout if json_out else sys.stderr), json_out, self.started, quiet)
        self.waker = Waker(use_inotify)
        self.sessions: dict[str, _Watched] = {}
        # --all: ended sessions are released (tailer closed, pipeline dropped, directory unwatched); their
        # events paths are kept while their directories exist, so they are not discovered again as new. Idle
        # ones (no process to watch, file unchanged for config.session_idle) are kept with where they were left
        self._many = target.kind == "root" and all_sessions
        self._released: set[str] = set()
        self._idle: dict[str, _Paused] = {}
        self._idle_checked = 0.0
        self._ended_pending = False
        self.file_log = FileLog(config.alerts_log) if config.uses("file") else None
        self.webhook = (WebhookSender(config.webhook_url, slack=config.webhook_slack, timeout=config.webhook_timeout,
                                      retries=config.webhook_retries) if config.webhook_url else None)
        self.killer = Killer(config.kill_grace, self._kill_report)
        self.breaches = 0
        self.errors = 0
        self._last_rescan = 0.0
        self._next_status = self.started + status_every if status_every > 0 else float("inf")

    # -- the loop ------------------------------------------------------------------------------------------
    def run(self) -> int:
        try:
            return self._loop()
        except KeyboardInterrupt:
            self._finish(interrupted=True)
            return EXIT_INTERRUPTED
        finally:
            self.close()

    def _loop(self) -> int:
        deadline = self.started + self.timeout if self.timeout else float("inf")
        self._discover(time.time(), force=True)
        if not self.sessions:
            where = self.target.path
            self.reporter.emit({"type": "waiting", "path": where}, f"waiting for a session under {where} ...",
                               time.time())
        while True:
            now = time.time()
            self._discover(now)
            for watched in list(self.sessions.values()):
                if not watched.ended:
                    self._pump(watched, now)
            if self._many and self._ended_pending:
                self._release_ended()
            now = time.time()
            if now >= self._next_status:
                self._status(now)
                self._next_status = now + self.status_every
            if not self.follow:
                break
            if self._all_done() or now >= deadline:
                break
            self.waker.wait(min(0.1, max(0.0, deadline - now)))
        return self._finish()

    def _all_done(self) -> bool:
        if self.target.kind == "root" and (self.all_sessions or not self.sessions):
            return False   # keep following the directory for (new) sessions
        return bool(self.sessions) and all(w.ended for w in self.sessions.values())

    def _discover(self, now: float, force: bool = False) -> None:
        if not force and (now - self._last_rescan < RESCAN_EVERY or (self.sessions and not self._many)):
            return
        self._last_rescan = now
        if self.target.kind == "root":
            self.waker.watch(self.target.path)
            if self._many:
                for source, paused in self._scan_new(force):
                    self._add(source, now, paused)
                return
            candidates = self.target.initial(False)
        else:
            candidates = self.target.initial(False)
        for source in candidates:
            if source.events_path not in self.sessions and source.events_path not in self._released:
                self._add(source, now)

    def _scan_new(self, force: bool = False) -> list[tuple[SessionSource, _Paused | None]]:
        """--all: the session directories under the root not seen before, oldest first, and the idle ones
        whose file grew (with where they were left). Known ones (live or released) are not looked into
        again: no meta.json is re-read for them; an idle one costs a stat."""
        root = os.path.abspath(self.target.path)
        try:
            entries = list(os.scandir(root))
        except OSError:
            return []
        now = time.monotonic()
        recheck = force or now - self._idle_checked >= IDLE_RECHECK_EVERY   # a stat per idle one: less often
        if recheck:
            self._idle_checked = now
        present: set[str] = set()
        found = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            directory = os.path.join(root, entry.name)
            events_path = os.path.join(directory, EVENTS_FILE)
            present.add(events_path)
            if events_path in self.sessions or events_path in self._released:
                continue
            paused = self._idle.get(events_path)
            if paused is not None:
                if not recheck or not paused.grew(events_path):
                    continue
                del self._idle[events_path]
            else:
                try:
                    if not entry.is_dir() or not is_session_dir(directory):
                        continue
                except OSError:
                    continue
            source = _session(directory)
            source.load_meta()   # again for a resumed one: it may record its process by now
            found.append((source, paused))
        self._released &= present   # a removed directory is forgotten (memory stays bounded)
        if any(path not in present for path in self._idle):
            self._idle = {path: paused for path, paused in self._idle.items() if path in present}
        return sorted(found, key=lambda item: _start_key(item[0]))

    def _release_ended(self) -> None:
        self._ended_pending = False
        for path in [path for path, w in self.sessions.items() if w.ended]:
            w = self.sessions.pop(path)
            w.tailer.close()
            # inotify watches are a per-user kernel limit: a long --all over many sessions gives each one back
            self.waker.unwatch(os.path.dirname(path))
            if w.paused is not None:
                self._idle[path] = w.paused
            else:
                self._released.add(path)

    def _process_for(self, source: SessionSource) -> ProcessRef | None:
        """The session's own recorded process; ``--pid`` only for a session that records none. With --all, a
        session whose meta.json is not there yet gets no process until it is (it may record its own)."""
        recorded = source.process(self.allow_other_users)
        if recorded is not None or self.pid_override is None:
            return recorded
        if source.meta is not None and source.meta.get("pid") is not None:
            return None   # it records a PID that cannot be used: --pid is not for it
        if source.meta is None and source.directory is not None and self._many:
            return None
        return self.pid_override

    def _add(self, source: SessionSource, now: float, paused: _Paused | None = None) -> None:
        source.load_meta()
        judge = SessionJudge(self.config, source.session_id, source.agent, source.started_at, self.scope_policy,
                             self.settings, self.metrics)
        watched = _Watched(source, Tailer(source.events_path), judge)
        if source.is_strace:
            watched.mapper = StraceMapper(source.session_id, source.agent)
        watched.proc = self._process_for(source)
        watched.changed_at = now
        if paused is None:
            try:   # a file nobody wrote to for long is idle since then, not since watch found it
                st = os.stat(source.events_path)
                watched.changed_at, watched.read_to = min(now, st.st_mtime), st.st_size
            except OSError:
                pass
        self.sessions[source.events_path] = watched
        self.waker.watch(os.path.dirname(source.events_path))
        if paused is not None and paused.continued_by(source.events_path):
            self._catch_up(watched, paused.offset, now)

    def _catch_up(self, w: _Watched, offset: int, now: float) -> None:
        """Read a resumed session up to where it was left: its state (totals, baselines, runs, a last line cut
        in two) is rebuilt from its own file, and none of it is reported or acted on again."""
        with w.judge.replaying():
            while w.tailer.offset < offset:
                before = w.tailer.offset
                try:
                    lines = w.tailer.read(upto=offset)
                except OSError:
                    return   # the next read reports it
                self._handle_lines(w, lines, now, replay=True)
                if w.tailer.offset == before:
                    return
        w.read_to = w.tailer.offset

    def _pump(self, w: _Watched, now: float) -> None:
        if not w.announced:
            w.announced = True
            pid = f", pid {w.proc.pid}" if w.proc else ""
            self.reporter.emit({"type": "start", "session_id": w.source.session_id, "path": w.source.events_path,
                                "agent_id": w.judge.agent_id, "pid": w.proc.pid if w.proc else None},
                               f"Monitoring session {w.source.session_id} (agent {w.judge.agent_id or '-'}{pid}) ...",
                               now)
        try:
            lines = w.tailer.read()
        except OSError as exc:
            self.errors += 1
            self.reporter.emit({"type": "error", "session_id": w.source.session_id, "error": str(exc)},
                               f"cannot read {w.source.events_path}: {exc}", now)
            w.ended = True
            w.tailer.close()
            self._ended_pending = True
            return
        if w.tailer.offset != w.read_to:
            w.read_to, w.changed_at = w.tailer.offset, now
        if lines:
            self.waker.activity()
            self._handle_lines(w, lines, now)
            if w.ended:   # an agent-strace session_end
                return
        if w.source.meta is None:
            w.source.load_meta(now)
            if w.source.meta is not None:
                # its own recorded process wins over a provisional --pid given before meta.json was there
                w.proc = self._process_for(w.source) or w.proc
                if w.mapper is None and w.source.is_strace:
                    w.mapper = StraceMapper(w.source.session_id, w.source.agent)
                w.judge.agent_id = w.judge.agent_id or w.source.agent
        if now - w.checked_at >= LIVENESS_EVERY:
            w.checked_at = now
            was_live = w.live
            state = True if w.proc is None else process_liveness(w.proc)
            w.live = state is not False   # unknown (no PID, another host) is not "exited"
            w.running = state is True and w.proc is not None
            if was_live and not w.live and w.proc is not None:
                self._handle_lines(w, w.tailer.read(), now)   # the last lines written before it died
                self._handle_lines(w, w.tailer.rest(), now, final=True)
                self._end(w, now, f"process {w.proc.pid} exited")
                return
        if not w.ended:
            for breach in w.judge.tick(now, w.running):
                self._act(w, breach, now)
        if self._many and self.follow and not w.ended and w.live and not w.running and not w.tailer.rotating \
                and now - w.changed_at >= self.config.session_idle:
            self._release_idle(w, now)

    def _release_idle(self, w: _Watched, now: float) -> None:
        """--all: a session with no process to watch (none recorded, or on another host) whose file has not
        changed for ``session_idle`` is released like an ended one, keeping only where its file was left."""
        w.paused = _Paused(w.tailer.identity, w.tailer.offset, w.tailer.head)
        w.judge.forget_runs()
        self._end(w, now, f"idle: no process to watch and nothing written for {self.config.session_idle:g}s")

    def _handle_lines(self, w: _Watched, lines: list[bytes], now: float, final: bool = False,
                      replay: bool = False) -> None:
        """``final``: unterminated lines handed over at the end; one that does not parse is ``truncated``.
        ``replay``: lines judged once already (``_catch_up``): nothing is acted on, nothing ends."""
        if w.tailer.skipped:   # lines the tailer dropped unread (line_too_long): the session's skips too
            w.skipped.update(w.tailer.skipped)
            w.tailer.skipped.clear()
        judge = w.judge
        for raw in lines:
            if raw.startswith(b"\xef\xbb\xbf"):   # as replay: a BOM is not data
                raw = raw[3:]
            if not raw.strip():
                continue
            judge.touch(now)
            try:
                data = _loads(raw)
            except RecursionError:
                w.skipped["too_deep"] += 1
                continue
            except ValueError:
                w.skipped["truncated" if final else "invalid_json"] += 1
                continue
            try:
                batch: list[Event] | tuple[Event, ...]
                if is_strace_record(data):
                    if w.mapper is None:
                        w.mapper = StraceMapper(w.source.session_id, w.source.agent)
                    batch = w.mapper.map(data)
                else:
                    batch = (event_from_dict(data),)
            except InvalidEvent as exc:
                w.skipped[exc.reason] += 1
                continue
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
                w.skipped["bad_field"] += 1
                continue
            for event in batch:
                self._event(w, event, now, replay)
                if w.mapper is not None and event.event_type == ev.RUN_END and w.proc is None and not replay:
                    self._end(w, now, "session_end")

    def _event(self, w: _Watched, event: Event, now: float, replay: bool = False) -> None:
        if event.event_type == ev.LLM_CALL and event.cost_usd is None and self.prices is not None:
            if event.input_tokens or event.output_tokens:
                try:
                    event.cost_usd = self.prices.cost(event.provider or "", event.model or "",
                                                      event.input_tokens or 0, event.output_tokens or 0,
                                                      event.cache_read_tokens or 0, event.cache_write_tokens or 0)
                except Exception:  # pricing is best effort
                    pass
        if event.agent_id is None:
            event.agent_id = w.judge.agent_id
        if event.session_id is None:
            event.session_id = w.source.session_id
        breaches = w.judge.feed(event, now)
        if not replay:
            for breach in breaches:
                self._act(w, breach, now)

    # -- actions -------------------------------------------------------------------------------------------
    def _act(self, w: _Watched, breach: Breach, now: float) -> None:
        self.breaches += 1
        record = breach.to_record()
        icon = "❌" if breach.severity == "critical" else "⚠️ "
        kill = "kill" in breach.actions and not w.ended and w.live
        suffix = " — killing session" if kill else ""
        self.reporter.emit(record, f"{icon} {breach.message}{suffix}", now)
        if kill:   # first: the kill must not wait behind the slower channels
            self.killer.kill(w.proc, breach.watcher)
        if self.file_log is not None and "file" in breach.actions:
            try:
                self.file_log.write(record)
            except OSError as exc:
                self.errors += 1
                self.reporter.emit({"type": "error", "error": str(exc)}, f"cannot write alerts log: {exc}", now)
        if self.webhook is not None:
            events = self.config.webhook_events
            if "webhook" in breach.actions or events is None or breach.watcher in events:
                self.webhook.send(record)

    def _kill_report(self, text: str, ok: bool) -> None:
        self.reporter.emit({"type": "action", "action": "kill", "ok": ok, "message": text},
                           ("☠️  " if ok else "⛔ ") + text, time.time())
        if self.file_log is not None:
            try:
                self.file_log.write({"type": "action", "ts": time.time(), "action": "kill", "ok": ok,
                                     "message": text})
            except OSError:
                pass

    # -- output --------------------------------------------------------------------------------------------
    def _status(self, now: float) -> None:
        for w in self.sessions.values():
            if w.ended:
                continue
            j = w.judge
            icon = "✅" if j.breaches == 0 else "⚠️ "
            self.reporter.emit({"type": "status", "session_id": w.source.session_id, "events": j.events,
                                "cost_usd": round(j.cost, 6), "retries": j.retries, "breaches": j.breaches,
                                "live": w.live},
                               f"{icon} {w.source.session_id[:24]}: {j.events} events, ${j.cost:.2f}, "
                               f"{j.retries} retries, {j.breaches} breaches", now)

    def _end(self, w: _Watched, now: float, why: str) -> None:
        if w.ended:
            return
        w.ended = True
        w.tailer.close()   # its file is done with: no descriptor is held for an ended session
        self._ended_pending = True
        j = w.judge
        skipped = sum(w.skipped.values())
        self.reporter.emit({"type": "end", "session_id": w.source.session_id, "reason": why, "events": j.events,
                            "cost_usd": round(j.cost, 6), "breaches": j.breaches, "skipped": dict(w.skipped)},
                           f"session {w.source.session_id} ended ({why}): {j.events} events, ${j.cost:.2f}, "
                           f"{j.breaches} breaches" + (f", {skipped} bad lines skipped" if skipped else ""), now)

    def _finish(self, interrupted: bool = False) -> int:
        now = time.time()
        if not self.follow or interrupted:
            for w in self.sessions.values():   # a last line without its newline is judged, not dropped
                if not w.ended:
                    self._handle_lines(w, w.tailer.rest(), now, final=True)
        self.killer.join(self.config.kill_grace + 1.0)
        for w in self.sessions.values():
            if not w.ended and (not self.follow or interrupted or self.timeout):
                self._end(w, now, "interrupted" if interrupted else "stopped watching")
        if self.killer.killed_any:
            return EXIT_KILLED
        if self.breaches:
            return EXIT_BREACH
        if self.errors:
            return EXIT_ERROR
        return EXIT_OK

    def close(self) -> None:
        if self.webhook is not None:
            self.webhook.close(self.config.webhook_timeout)
        if self.file_log is not None:
            self.file_log.close()
        for w in self.sessions.values():
            w.tailer.close()
        self.waker.close()
