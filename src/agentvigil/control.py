"""External kill triggers for the in-process kill switch.

The kill path does not go through the event queue: a trigger sets one flag that every step, tool-call and
LLM-call boundary reads, so a run stops before its next action (well under the 800 ms that runtime-control
practice asks for).

* ``AGENTVIGIL_KILL_SIGNAL=TERM`` (comma list of signal names): the signal stops every run in flight with
  ``RunKilled`` at its next boundary and refuses new runs; once no run is in flight (plus
  ``AGENTVIGIL_KILL_EXIT_DELAY`` = 1 s for the agent's own clean-up), recorders are flushed and the signal's
  default action ends the process. An idle process ends at once. A second signal ends it at once. This is what
  ``agentvigil supervise`` sets for its child: SIGTERM becomes "finish the current step, flush, exit".
* ``AGENTVIGIL_KILL_FILE=path``: while the file exists, runs are killed (reason: the file's first line, else
  ``kill_file``) and new runs refused; remove it to resume. Polled every 100 ms. A first line
  ``agent=<name>`` or ``run=<run id>`` scopes it, for processes where several Monitors share the process: only
  that agent's runs (or that one run) are killed, and the agent's runs started while the file exists are
  killed at their first boundary (within one poll); other agents carry on.

Signal handlers only record the signal and wake the ``agentvigil-control`` thread (a byte on a pipe): killing
runs, their rollbacks and flushing the recorders happen there, never inside the handler, which could
otherwise deadlock on a lock the interrupted main thread holds.

Both can also be set up by hand: ``install_kill_signal(...)``, ``watch_kill_file(path)``, or ``stop(reason)``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Iterable
from types import FrameType
from typing import Any, Protocol

from ._safety import fork_safe_lock, internal_error


class Monitor(Protocol):
    """What the kill switch needs of a Monitor (this module sits below it and does not import it)."""

    agent: str
    _lock: threading.Lock
    _active: dict[Any, None]

    @property
    def active_runs(self) -> int: ...

    def kill_all(self, reason: str = ...) -> int: ...

    def flush(self, timeout: float = ...) -> None: ...

log = logging.getLogger("agentvigil")

_monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()
_lock = fork_safe_lock()
_env_done = False
_signal_reason: str | None = None
_signal_number: int | None = None
_file_reason: str | None = None

#: Read at every boundary. None while nothing asks the agent to stop.
stop_reason: str | None = None


def register(monitor: Monitor) -> None:
    """Called by every Monitor; reads the environment once per process."""
    global _env_done
    _monitors.add(monitor)
    if _env_done:
        return
    with _lock:
        if _env_done:
            return
        _env_done = True
    from .settings import env_str

    names = (env_str("AGENTVIGIL_KILL_SIGNAL") or "").strip()
    if names:
        install_kill_signal([n.strip() for n in names.split(",") if n.strip()])
    path = (env_str("AGENTVIGIL_KILL_FILE") or "").strip()
    if path:
        watch_kill_file(path)


def _update() -> None:
    global stop_reason
    stop_reason = _signal_reason or _file_reason


def stop(reason: str) -> int:
    """Kill every run of every Monitor in this process and refuse new ones. Returns runs killed."""
    global _file_reason
    _file_reason = reason
    _update()
    return _kill_all(reason)


def resume() -> None:
    """Accept runs again after ``stop`` (not after a kill signal)."""
    global _file_reason
    _file_reason = None
    _update()


def _kill_all(reason: str) -> int:
    return sum(m.kill_all(reason) for m in list(_monitors))


def _active_runs() -> int:
    return sum(m.active_runs for m in list(_monitors))


def _flush_all() -> None:
    for monitor in list(_monitors):
        try:
            monitor.flush(1.0)
        except Exception:  # exiting anyway
            pass


_exiting = False
EXIT_RETRIES = 100   # × 50 ms: how long the main thread gets to run its handler


def _die(signum: int) -> None:
    """Flush, then end the process with the signal's default action. Never called from a signal handler.
    Handlers can only be changed from the main thread, so from any other thread we re-send the signal and let
    ``_on_signal`` restore the default action."""
    global _exiting
    _flush_all()
    _exiting = True
    main = threading.main_thread()
    if threading.current_thread() is main:
        signal.signal(signum, signal.SIG_DFL)
    elif main.is_alive() and main.ident is not None:
        # Aimed at the main thread, and repeated: a process-directed signal may land on this thread, and one
        # that lands just before the main thread enters a blocking call (sleep, select) leaves it blocked with
        # its Python handler not run. Each re-send interrupts the call; the handler then ends the process.
        for _ in range(EXIT_RETRIES):
            signal.pthread_kill(main.ident, signum)
            time.sleep(0.05)
        os._exit(128 + signum)   # the main thread never ran Python again: end anyway, flushed
    os.kill(os.getpid(), signum)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Only sets flags and wakes the control thread: no lock, no I/O beyond one byte on a pipe."""
    global _signal_reason, _signal_number
    if _signal_reason is not None or _exiting:      # second signal, or our own exit: no more grace
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _signal_number = signum
    _signal_reason = f"signal:{signal.Signals(signum).name}"
    _update()
    try:
        os.write(_wake_w, b"s")
    except OSError:   # pipe full: the control thread is awake anyway
        pass


_wake_r, _wake_w = -1, -1
_control_thread: threading.Thread | None = None


def _start_control_thread() -> None:
    """The normal thread that acts on signals (started once, from ``install_kill_signal``)."""
    global _wake_r, _wake_w, _control_thread
    if _control_thread is not None:
        return
    _wake_r, _wake_w = os.pipe()
    os.set_blocking(_wake_w, False)
    _control_thread = threading.Thread(target=_control_loop, name="agentvigil-control", daemon=True)
    _control_thread.start()


def _control_loop() -> None:
    while True:
        try:
            if not os.read(_wake_r, 64):
                return
        except InterruptedError:
            continue
        except OSError:
            return
        on_signal_thread()


def on_signal_thread() -> None:
    """What a kill signal does, on a normal thread: stop every run in flight; an idle process ends now."""
    signum, reason = _signal_number, _signal_reason
    if signum is None or reason is None:
        return
    try:
        if _kill_all(reason) == 0 and _active_runs() == 0:
            _die(signum)
    except Exception as exc:   # the process still ends by run_ended() or a second signal
        internal_error("control", exc)


_exit_timer: threading.Timer | None = None


def run_ended() -> None:
    """Called when a run ends. After a kill signal, once the last run is out, the process gets
    ``AGENTVIGIL_KILL_EXIT_DELAY`` seconds (1) for the agent's own clean-up, then the signal's default action."""
    global _exit_timer
    if _signal_number is None or _active_runs() != 0 or _exit_timer is not None:
        return
    from .settings import env_duration

    delay = env_duration("AGENTVIGIL_KILL_EXIT_DELAY", 1.0, allow_zero=True)
    _exit_timer = threading.Timer(delay, _die, args=(_signal_number,))
    _exit_timer.daemon = True
    _exit_timer.start()


def install_kill_signal(names: Iterable[str] = ("TERM",)) -> bool:
    """Make these signals graceful kills (see module doc). Only from the main thread; returns success."""
    if threading.current_thread() is not threading.main_thread():
        log.warning("agentvigil: AGENTVIGIL_KILL_SIGNAL needs the main thread; create the first Monitor there")
        return False
    try:
        signums = []
        for name in names:
            name = name.upper()
            signums.append(getattr(signal, name if name.startswith("SIG") else "SIG" + name))
        _start_control_thread()
        for signum in signums:
            signal.signal(signum, _on_signal)
        return True
    except (AttributeError, ValueError, OSError) as exc:
        log.warning("agentvigil: ignoring AGENTVIGIL_KILL_SIGNAL=%r: %s", names, exc)
        return False


def parse_kill_file(first_line: str) -> tuple[str | None, str | None, str]:
    """(scope, target, reason) of a kill file's first line: ``agent=<name>`` → ("agent", name),
    ``run=<id>`` → ("run", id), anything else → (None, None): every run of the process."""
    line = first_line.strip()
    for scope in ("agent", "run"):
        if line.startswith(scope + "="):
            target = line[len(scope) + 1:].strip()
            if target:
                return scope, target, f"kill_file:{scope}={target}"[:64]
    return None, None, (line or "kill_file")[:64]


def kill_scoped(scope: str, target: str, reason: str) -> int:
    """Kill the runs of one agent (``scope="agent"``) or one run (``"run"``), in every Monitor of this
    process. Returns runs killed."""
    killed = 0
    for monitor in list(_monitors):
        if scope == "agent":
            if monitor.agent == target:
                killed += monitor.kill_all(reason)
            continue
        with monitor._lock:
            runs = [run for run in monitor._active if run.run_id == target]
        for run in runs:
            if not run.killed:
                run.kill(reason)
                killed += 1
    return killed


def watch_kill_file(path: str, interval: float = 0.1) -> threading.Thread:
    """Poll for ``path``; while it exists, runs are killed (those it names, or all of them and new ones
    refused)."""

    def poll() -> None:
        global _file_reason
        event = threading.Event()
        scoped: tuple[str, str, str] | None = None
        while not event.wait(interval):
            try:
                exists = os.path.exists(path)
                if exists and _file_reason is None and scoped is None:
                    first = ""
                    try:
                        with open(path, encoding="utf-8", errors="replace") as fh:
                            first = fh.readline(4096)
                    except OSError:
                        pass
                    scope, target, reason = parse_kill_file(first)
                    if scope is None or target is None:
                        _file_reason = reason
                        _update()
                        _kill_all(reason)
                    else:
                        scoped = (scope, target, reason)
                if exists and scoped is not None:
                    kill_scoped(*scoped)     # runs of that agent started since the last poll too
                elif not exists:
                    scoped = None
                    if _file_reason is not None:
                        _file_reason = None
                        _update()
            except Exception as exc:  # never let the watcher die silently
                internal_error("kill_file", exc)

    thread = threading.Thread(target=poll, name="agentvigil-kill-file", daemon=True)
    thread.start()
    return thread
