"""Escalation for ``supervise``: a ``Notice`` (an incident or the give-up) becomes an alert record and goes out
through the shared action set (``agentvigil.actions``): the Slack-compatible webhook and/or Alertmanager's
``POST /api/v2/alerts``, each from its background sender (retries; never raises, never blocks supervision)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..actions.alertmanager import ALERT_NAMES, alertmanager_sender
from ..actions.alertmanager import alertmanager_payload as _alertmanager_payload
from ..actions.webhook import WebhookSender, post_json
from ..actions.webhook import slack_payload as _slack_payload

__all__ = ["ALERT_NAMES", "SUMMARIES", "Notice", "Notifier", "alertmanager_payload", "post_json", "slack_payload"]

SUMMARIES = {
    "liveness_lost": "Agent {agent} stopped sending heartbeats",
    "zombie": "Agent {agent} is alive but has made no progress (zombie)",
    "cost_spike": "Agent {agent}: cost per heartbeat cycle far above its baseline",
    "crash": "Agent {agent} crashed",
    "signal": "Agent {agent} was killed by a signal",
    "silent_exit": "Agent {agent} exited silently (exit 0, not expected)",
    "gave_up": "Supervisor gave up restarting agent {agent}: needs a human",
}


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

    def to_record(self) -> dict:
        """The alert record every action takes (the same shape as ``watch``'s breaches)."""
        return {"type": "resolved" if self.resolved else "incident", "ts": self.at, "watcher": self.kind,
                "severity": self.severity, "agent_id": self.agent, "message": self.summary,
                "detail": dict(self.detail), "action": self.action, "resolved": self.resolved,
                "source": "agentvigil-supervise"}


def slack_payload(notice: Notice) -> dict:
    return _slack_payload(notice.to_record())


def alertmanager_payload(notice: Notice, ttl: float, host: str | None = None) -> list[dict]:
    return _alertmanager_payload(notice.to_record(), ttl, host)


class Notifier:
    """Delivers notices to the configured receivers."""

    def __init__(self, webhook_url: str = "", alertmanager_url: str = "", alert_ttl: float = 86400.0,
                 attempts: int = 3, timeout: float = 5.0):
        self._senders: list[WebhookSender] = []
        if webhook_url:
            self._senders.append(WebhookSender(webhook_url, slack=True, timeout=timeout, retries=attempts - 1,
                                               backoff=0.5, name="notify"))
        if alertmanager_url:
            self._senders.append(alertmanager_sender(alertmanager_url, alert_ttl, retries=attempts - 1,
                                                     timeout=timeout))

    @property
    def enabled(self) -> bool:
        return bool(self._senders)

    @property
    def sent(self) -> int:
        return sum(s.sent for s in self._senders)

    @property
    def failed(self) -> int:
        return sum(s.failed + s.dropped for s in self._senders)

    def send(self, notice: Notice) -> None:
        record = notice.to_record()
        for sender in self._senders:
            sender.send(record)

    def close(self, timeout: float = 10.0) -> None:
        """Wait (bounded) for queued notices to go out: the give-up message must leave before we exit."""
        for sender in self._senders:
            sender.close(timeout)
