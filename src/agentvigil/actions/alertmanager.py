"""The ``alertmanager`` action: alert records as Alertmanager alerts (``POST <URL>/api/v2/alerts``), sent by the
same background ``WebhookSender`` as webhooks. Fired alerts end after ``ttl`` unless sent again; resolved ones
end now."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timezone

from .webhook import WebhookSender

ALERT_NAMES = {
    "liveness_lost": "AgentSupervisorHeartbeatLost",
    "zombie": "AgentSupervisorZombie",
    "cost_spike": "AgentSupervisorCostSpike",
    "crash": "AgentSupervisorCrashed",
    "signal": "AgentSupervisorKilled",
    "silent_exit": "AgentSupervisorSilentExit",
    "gave_up": "AgentSupervisorGaveUp",
}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("-", "_").split("_") if part)


def alertmanager_payload(record: dict, ttl: float, host: str | None = None) -> list[dict]:
    kind = str(record.get("watcher") or record.get("detector") or "incident")
    source = str(record.get("source") or "agentvigil")
    name = ALERT_NAMES.get(kind) if source == "agentvigil-supervise" else None
    labels = {"alertname": name or f"Agent{_camel(kind)}", "agent": str(record.get("agent_id") or "unknown"),
              "severity": str(record.get("severity") or "warning"), "source": source,
              "instance": host or socket.gethostname()}
    message = str(record.get("message") or kind)
    detail = record.get("detail")
    description = "; ".join(f"{k}={v}" for k, v in detail.items()) if isinstance(detail, dict) else ""
    annotations = {"summary": message, "description": description or message}
    if record.get("action"):
        annotations["action"] = str(record["action"])
    at = record.get("ts")
    at = float(at) if isinstance(at, (int, float)) else time.time()
    return [{"labels": labels, "annotations": annotations, "startsAt": _iso(at),
             "endsAt": _iso(time.time() if record.get("resolved") else at + ttl)}]


def alertmanager_sender(base_url: str, ttl: float = 86400.0, *, retries: int = 2, backoff: float = 0.5,
                        timeout: float = 5.0) -> WebhookSender:
    url = base_url.rstrip("/") + "/api/v2/alerts"
    return WebhookSender(url, retries=retries, backoff=backoff, timeout=timeout,
                         payload=lambda record: alertmanager_payload(record, ttl), name="alertmanager")
