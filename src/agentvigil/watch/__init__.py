"""``agentvigil watch``: tail recorded sessions, judge them live, alert or kill.

Modules, one job each:

* ``tail``      follow one NDJSON file (not there yet, partial lines, truncation, rotation); ``Waker``
                (inotify via ctypes, else an adaptive poll)
* ``sources``   resolve PATH into sessions (session dir, events.ndjson, dir of sessions, ``.agent-traces``)
* ``strace``    map agent-strace events onto ``agentvigil.Event``
* ``core``      the decision core: one session's pipeline (``agentvigil.detectors``, the same detectors
                every command runs) → ``Breach`` list. No I/O.
* ``actions``   terminal, file, webhook (background thread), kill (verified PID, SIGTERM → grace → SIGKILL)
* ``agentvigil.policy``  ``.agent-watch.json`` + CLI flags → ``WatchConfig`` (errors name the bad key)
* (``agentvigil.sinks.prometheus``: events → the metric contract, for ``--metrics-port``, as everywhere)
* ``runner``    the I/O loop that ties them together; ``command`` the CLI.
"""

from .config import ConfigError, WatchConfig
from .core import Breach, SessionJudge

__all__ = ["Breach", "ConfigError", "SessionJudge", "WatchConfig"]
