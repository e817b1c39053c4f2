"""The ``webhook`` action: POST each alert as JSON from one background thread, so a slow or dead receiver
never delays detection or supervision. ``send`` never blocks: a full queue drops (and counts) the alert. Each
alert is tried ``1 + retries`` times with exponential backoff (``backoff``, ×2, capped at 5 s); a 2xx answer is
success, a 4xx other than 429 is final (the receiver rejects the payload: retrying will not help).

Payloads: ``generic_payload`` (the alert record plus ``source`` and ``text``) or ``slack_payload`` (Slack's
incoming-webhook format, also accepted by Mattermost, Rocket.Chat and Discord's /slack endpoint).
"""

from __future__ import annotations

import ipaddress
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Callable
from urllib.parse import urlsplit

_COLORS = {"critical": "danger", "warning": "warning", "resolved": "good"}


def generic_payload(record: dict) -> dict:
    return {"source": "agentvigil", "text": record.get("message"), **record}


def slack_payload(record: dict) -> dict:
    """One Slack message for an alert record: a one-line ``text`` and an attachment with its fields."""
    resolved = bool(record.get("resolved"))
    severity = "resolved" if resolved else record.get("severity") or "warning"
    icon = {"critical": ":rotating_light:", "resolved": ":white_check_mark:"}.get(severity, ":warning:")
    kind = record.get("watcher") or record.get("detector") or "alert"
    message = record.get("message") or kind
    who = f"agent `{record.get('agent_id') or '-'}`"
    if record.get("session_id"):
        who += f" session `{record['session_id']}`"
    fields = [{"title": "agent", "value": str(record.get("agent_id") or "-"), "short": True},
              {"title": "kind", "value": str(kind), "short": True},
              {"title": "severity", "value": severity, "short": True}]
    action = record.get("action") or ",".join(record.get("actions") or ())
    if action:
        fields.append({"title": "action", "value": str(action), "short": True})
    detail = record.get("detail")
    for key, value in (detail.items() if isinstance(detail, dict) else ()):
        fields.append({"title": str(key), "value": str(value), "short": True})
    ts = record.get("ts")
    return {"text": f"{icon} [agentvigil] *{kind}* {message} ({who})",
            "attachments": [{"fallback": str(message), "color": _COLORS.get(severity, "warning"), "fields": fields,
                             "ts": int(ts) if isinstance(ts, (int, float)) else 0}]}


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _opener(url: str) -> Callable:
    # Loopback receivers bypass any *_proxy environment (a proxy cannot reach our 127.0.0.1).
    handlers = [urllib.request.ProxyHandler({})] if _is_loopback(url) else []
    return urllib.request.build_opener(*handlers).open


def post_json(url: str, payload: object, timeout: float = 5.0) -> int:
    """POST JSON once; returns the HTTP status. Raises OSError on transport errors."""
    body = json.dumps(payload, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "agentvigil"})
    try:
        with _opener(url)(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class WebhookSender:
    def __init__(self, url: str, *, slack: bool = False, timeout: float = 5.0, retries: int = 3,
                 backoff: float = 0.2, max_queue: int = 1000, payload: Callable[[dict], object] | None = None,
                 name: str = "webhook"):
        self.url = url
        self.slack = slack
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.payload = payload or (slack_payload if slack else generic_payload)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._open = _opener(url)
        self._thread = threading.Thread(target=self._run, name=f"agentvigil-{name}", daemon=True)
        self._thread.start()

    def send(self, record: dict) -> bool:
        try:
            data = json.dumps(self.payload(record), separators=(",", ":"), default=str).encode("utf-8")
        except (TypeError, ValueError) as exc:
            self.failed += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False
        try:
            self._queue.put_nowait(data)
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def _run(self) -> None:
        while True:
            data = self._queue.get()
            if data is None:
                self._queue.task_done()
                return
            try:
                self._post(data)
            finally:
                self._queue.task_done()

    def _post(self, data: bytes) -> None:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=data, method="POST",
                                             headers={"Content-Type": "application/json", "User-Agent": "agentvigil"})
            try:
                with self._open(request, timeout=self.timeout) as response:
                    response.read(1024)
                    if 200 <= response.status < 300:
                        self.sent += 1
                        return
                    self.last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if 400 <= exc.code < 500 and exc.code != 429:
                    break
            except Exception as exc:   # URLError, timeout, connection reset: retry
                self.last_error = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.failed += 1

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (bounded by ``timeout``), then stop the thread."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(max(0.0, deadline - time.monotonic()))
