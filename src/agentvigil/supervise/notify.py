"""Escalation: a Slack-compatible webhook and/or Alertmanager's ``POST /api/v2/alerts``.

Payload builders are pure functions; ``Notifier`` sends from one background thread so a slow receiver never
stalls supervision. A failed delivery is retried a few times, then logged and counted, never raised.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone

log = logging.getLogger("agentvigil.supervise")

ALERT_NAMES = {
    "liveness_lost": "AgentSupervisorHeartbeatLost",
    "zombie": "AgentSupervisorZombie",
    "cost_spike": "AgentSupervisorCostSpike",
    "crash": "AgentSupervisorCrashed",
    "signal": "AgentSupervisorKilled",
    "silent_exit": "AgentSupervisorSilentExit",
    "gave_up": "AgentSupervisorGaveUp",
}
SUMMARIES = {
    "liveness_lost": "Agent {agent} stopped sending heartbeats",
    "zombie": "Agent {agent} is alive but has made no progress (zombie)",
    "cost_spike": "Agent {agent}: cost per heartbeat cycle far above its baseline",
    "crash": "Agent {agent} crashed",
    "signal": "Agent {agent} was killed by a signal",
    "silent_exit": "Agent {agent} exited silently (exit 0, not expected)",
    "gave_up": "Supervisor gave up restarting agent {agent}: needs a human",
}
_COLORS = {"critical": "danger", "warning": "warning", "resolved": "good"}


@dataclass(frozen=True)
class Notice:
    kind: str                  # an incident kind or "gave_up"
    agent: str
    severity: str              # warning | critical
    detail: dict = field(default_factory=dict)
    action: str = ""           # what the supervisor does about it: restart, alert, stop
    at: float = 0.0            # Unix time
    resolved: bool = False

    @property
    def summary(self) -> str:
        text = SUMMARIES.get(self.kind, "Agent {agent}: " + self.kind).format(agent=self.agent)
        return ("RESOLVED: " + text) if self.resolved else text


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def slack_payload(notice: Notice) -> dict:
    """Incoming-webhook message (Slack, Mattermost, Rocket.Chat, and most chat tools that accept it)."""
    fields = [{"title": "agent", "value": notice.agent, "short": True},
              {"title": "kind", "value": notice.kind, "short": True},
              {"title": "severity", "value": "resolved" if notice.resolved else notice.severity, "short": True}]
    if notice.action:
        fields.append({"title": "action", "value": notice.action, "short": True})
    for key, value in notice.detail.items():
        fields.append({"title": key, "value": str(value), "short": True})
    return {
        "text": f"[agentvigil] {notice.summary}",
        "attachments": [{
            "fallback": notice.summary,
            "color": _COLORS["resolved" if notice.resolved else notice.severity],
            "fields": fields,
            "ts": int(notice.at),
        }],
    }


def alertmanager_payload(notice: Notice, ttl: float, host: str | None = None) -> list[dict]:
    """One alert for ``POST /api/v2/alerts``. Fired alerts end after ``ttl`` unless sent again; resolved ones
    end now."""
    labels = {"alertname": ALERT_NAMES.get(notice.kind, "AgentSupervisorIncident"), "agent": notice.agent,
              "severity": notice.severity, "source": "agentvigil-supervise",
              "instance": host or socket.gethostname()}
    annotations = {"summary": notice.summary,
                   "description": "; ".join(f"{k}={v}" for k, v in notice.detail.items()) or notice.summary}
    if notice.action:
        annotations["action"] = notice.action
    return [{"labels": labels, "annotations": annotations, "startsAt": _iso(notice.at),
             "endsAt": _iso(time.time() if notice.resolved else notice.at + ttl)}]


def post_json(url: str, payload: object, timeout: float = 5.0) -> int:
    """POST JSON; returns the HTTP status. Raises OSError on transport errors."""
    body = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "agentvigil-supervise"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


class Notifier:
    """Delivers notices to the configured receivers from a daemon thread."""

    def __init__(self, webhook_url: str = "", alertmanager_url: str = "", alert_ttl: float = 86400.0,
                 attempts: int = 3, timeout: float = 5.0):
        self.webhook_url = webhook_url
        self.alerts_url = alertmanager_url.rstrip("/") + "/api/v2/alerts" if alertmanager_url else ""
        self.alert_ttl = alert_ttl
        self.attempts = attempts
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self._queue: queue.Queue = queue.Queue(maxsize=1000)
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url or self.alerts_url)

    def send(self, notice: Notice) -> None:
        if not self.enabled:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="agentvigil-notify", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(notice)
        except queue.Full:
            self.failed += 1

    def close(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for queued notices to go out: the give-up message must leave before we exit."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            notice = self._queue.get()
            if notice is None:
                return
            if self.webhook_url:
                self._deliver(self.webhook_url, slack_payload(notice))
            if self.alerts_url:
                self._deliver(self.alerts_url, alertmanager_payload(notice, self.alert_ttl))

    def _deliver(self, url: str, payload: object) -> None:
        error = ""
        for attempt in range(self.attempts):
            try:
                status = post_json(url, payload, self.timeout)
                if 200 <= status < 300:
                    self.sent += 1
                    return
                error = f"HTTP {status}"
                if 400 <= status < 500 and status != 429:
                    break          # the receiver rejects the payload: retrying will not help
            except OSError as exc:
                error = str(exc)
            time.sleep(min(0.5 * 2 ** attempt, 5.0))
        self.failed += 1
        log.warning("agentvigil supervise: could not notify %s: %s", url, error)
