"""Process supervision for agents (``agentvigil supervise``) and the daily report (``agentvigil report``).

Decision core: ``policy`` (plain policy values and the option table), the child-health detectors
(``agentvigil.detectors.liveness``, ``.cycle_cost``) and ``health`` (exit classification; ``ChildHealth`` for
reading sessions). I/O: ``supervisor`` (the state machine and loop), ``descendants`` (the child's helpers
outside its process group), ``tail``, ``notify`` (on ``agentvigil.actions``), ``server``, ``sdnotify``,
``metrics``; ``report``. Docs: docs/supervise.md, docs/report.md.
"""

from .health import ChildHealth, CycleBaseline, Finding, classify_exit
from .policy import (
           ConfigError,
           HealthPolicy,
           RestartPolicy,
           SupervisePolicy,
           build_policy,
           load_config,
)
from .supervisor import EXIT_GAVE_UP, Supervisor

__all__ = ["ChildHealth", "ConfigError", "CycleBaseline", "EXIT_GAVE_UP", "Finding", "HealthPolicy",
           "RestartPolicy", "SupervisePolicy", "Supervisor", "build_policy", "classify_exit", "load_config"]
