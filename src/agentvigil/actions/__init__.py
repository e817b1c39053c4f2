"""The actions ``watch`` and ``supervise`` take on a verdict, one implementation each:

* ``terminal``: a human line (or one JSON object) per alert (``terminal.Terminal``);
* ``file``: an NDJSON alerts log, owner-only (``file.FileLog``);
* ``webhook``: a JSON POST from a background thread with retries, generic or Slack payload
  (``webhook.WebhookSender``, ``webhook.slack_payload``);
* ``alertmanager``: Alertmanager's ``POST /api/v2/alerts`` on the same sender (``alertmanager``);
* ``kill``: a verified process (``kill.ProcessRef``), SIGTERM → grace → SIGKILL (``kill.Killer``). Only ever
  carried out when the user asked for it (``--on-violation kill``, ``"alert": "kill"``, ``--escalate kill``).

An alert is a plain dict (``type``, ``ts``, ``watcher``, ``severity``, ``agent_id``, ``session_id``, ``run_id``,
``message``, ``detail``, ``actions``), the same record the alerts log stores.
"""

from .alertmanager import alertmanager_payload, alertmanager_sender
from .file import FileLog
from .kill import Killer, ProcessRef
from .terminal import Terminal
from .webhook import WebhookSender, generic_payload, post_json, slack_payload

__all__ = ["FileLog", "Killer", "ProcessRef", "Terminal", "WebhookSender", "alertmanager_payload",
           "alertmanager_sender", "generic_payload", "post_json", "slack_payload"]
