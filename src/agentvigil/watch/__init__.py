"""``agentvigil watch``: tail recorded sessions, judge them live, alert or kill.

Modules, one job each:

* ``tail``      follow one NDJSON file (not there yet, partial lines, truncation, rotation); ``Waker``
                (inotify via ctypes, else an adaptive poll)
* ``sources``   resolve PATH into sessions (session dir, events.ndjson, dir of sessions, ``.agent-traces``)
* ``strace``    map agent-strace events onto ``agentvigil.Event``
* ``watchers``  the policy objects: retry, cost, scope, duration, loop, silence, budget, detectors
* ``core``      the decision core: ``SessionJudge.feed(event) / .tick(now)`` → ``Breach`` list, plus the
                correlated-breach escalation. No I/O.
* ``actions``   terminal, file, webhook (background thread), kill (verified PID, SIGTERM → grace → SIGKILL)
* ``config``    ``.agent-watch.json`` + CLI flags → ``WatchConfig`` (errors name the bad key)
* (``sinks.event_metrics``: events → the ``AgentMetrics`` contract, for ``--metrics-port``, shared with supervise)
* ``runner``    the I/O loop that ties them together; ``command`` the CLI.
"""

from .config import ConfigError, WatchConfig
from .core import Breach, SessionJudge

__all__ = ["Breach", "ConfigError", "SessionJudge", "WatchConfig"]
