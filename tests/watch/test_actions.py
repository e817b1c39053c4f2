import json
import os
import signal
import subprocess
import sys
import time

from agentvigil.sinks.recorder import process_start_time
from agentvigil.watch.actions import (
    FileLog,
    Killer,
    ProcessRef,
    WebhookSender,
    slack_payload,
)

from .conftest import wait_for

RECORD = {"type": "breach", "ts": 1.0, "watcher": "cost", "severity": "warning", "session_id": "s1",
          "agent_id": "bot", "run_id": "r", "message": "CostWatcher: $5.12 (threshold: $5.00)", "detail": {},
          "actions": ["webhook"]}


def test_webhook_posts_json(receiver):
    r = receiver()
    sender = WebhookSender(r.url)
    assert sender.send(RECORD)
    assert r.event.wait(5)
    body = r.bodies[0]
    assert body["source"] == "agentvigil" and body["watcher"] == "cost" and body["text"] == RECORD["message"]
    sender.close()
    assert sender.sent == 1 and sender.failed == 0


def test_webhook_retries_with_backoff_then_succeeds(receiver):
    r = receiver(fail_first=2)
    sender = WebhookSender(r.url, retries=3, backoff=0.01)
    sender.send(RECORD)
    assert r.event.wait(5)
    sender.close()
    assert r.attempts == 3 and sender.sent == 1
    assert sender.last_error == "HTTPError: HTTP Error 500: Internal Server Error"


def test_webhook_gives_up_after_retries(receiver):
    r = receiver(fail_first=100)
    sender = WebhookSender(r.url, retries=2, backoff=0.01)
    sender.send(RECORD)
    assert wait_for(lambda: sender.failed == 1)
    assert r.attempts == 3
    sender.close()
    dead = WebhookSender("http://127.0.0.1:9/none", retries=0, timeout=0.5)   # nothing listens on port 9
    dead.send(RECORD)
    assert wait_for(lambda: dead.failed == 1)
    dead.close()


def test_webhook_slack_payload(receiver):
    r = receiver()
    sender = WebhookSender(r.url, slack=True)
    sender.send(dict(RECORD, severity="critical"))
    assert r.event.wait(5)
    sender.close()
    body = r.bodies[0]
    assert set(body) == {"text", "attachments"}            # Slack's incoming-webhook shape, one for watch and supervise
    assert body["text"].startswith(":rotating_light: [agentvigil] *cost* CostWatcher") and "`s1`" in body["text"]
    fields = {f["title"]: f["value"] for f in body["attachments"][0]["fields"]}
    assert fields["kind"] == "cost" and fields["agent"] == "bot" and body["attachments"][0]["color"] == "danger"
    assert slack_payload(RECORD)["text"].startswith(":warning:")


def test_webhook_never_blocks_the_caller(receiver):
    r = receiver(delay=0.5)                          # a slow receiver
    sender = WebhookSender(r.url, timeout=2, max_queue=2)
    start = time.perf_counter()
    results = [sender.send(RECORD) for _ in range(10)]
    assert time.perf_counter() - start < 0.05
    assert results.count(False) >= 7 and sender.dropped == results.count(False)
    sender.close(0.1)


def test_file_log_appends_ndjson(tmp_path):
    path = tmp_path / "logs" / "alerts.ndjson"
    log = FileLog(str(path))
    log.write(RECORD)
    log.write(dict(RECORD, watcher="loop"))
    log.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["watcher"] for x in lines] == ["cost", "loop"]


def spawn(code):
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    return child


def test_kill_real_child_with_sigterm():
    child = spawn("import time; print('ready', flush=True); time.sleep(60)")
    reports = []
    killer = Killer(grace=5, report=lambda text, ok: reports.append((text, ok)))
    proc = ProcessRef.from_meta({"pid": child.pid, "process_start_time": process_start_time(child.pid)})
    assert killer.kill(proc, "loop")
    assert child.wait(5) == -signal.SIGTERM
    assert wait_for(lambda: ("gone" in [w for _, w in killer.outcomes]))
    assert killer.killed_any and "sent SIGTERM" in reports[0][0]
    assert killer.kill(proc, "again")                 # idempotent per process


def test_kill_escalates_to_sigkill_after_grace():
    child = spawn("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "print('ready', flush=True); time.sleep(60)")
    killer = Killer(grace=0.3)
    proc = ProcessRef(child.pid, process_start_time(child.pid))
    start = time.monotonic()
    killer.kill(proc, "scope")
    assert child.wait(5) == -signal.SIGKILL
    assert 0.25 < time.monotonic() - start < 3
    assert wait_for(lambda: [w for _, w in killer.outcomes] == ["term", "kill"])


def test_pid_reuse_is_refused():
    child = spawn("import time; print('ready', flush=True); time.sleep(60)")
    try:
        reports = []
        killer = Killer(grace=0.1, report=lambda text, ok: reports.append((text, ok)))
        stale = ProcessRef(child.pid, process_start_time(child.pid) - 3600)   # meta of an earlier process
        assert not killer.kill(stale, "loop")
        assert "reused PID" in reports[0][0] and reports[0][1] is False
        time.sleep(0.1)
        assert child.poll() is None                    # untouched
        other_host = ProcessRef(child.pid, process_start_time(child.pid), host="elsewhere.example")
        assert not killer.kill(other_host, "loop") and "host" in reports[-1][0]
        unverifiable = ProcessRef(child.pid, None)
        assert not killer.kill(unverifiable, "loop") and "cannot verify" in reports[-1][0]
        assert not killer.kill(None, "loop") and "no agent PID" in reports[-1][0]
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_dead_and_zombie_processes_are_not_alive():
    child = spawn("print('ready', flush=True)")
    start = process_start_time(child.pid)
    proc = ProcessRef(child.pid, start)
    assert wait_for(lambda: not proc.alive())          # exited, not yet reaped: a zombie
    assert "exited" in (proc.verify() or "") or "not running" in (proc.verify() or "")
    child.wait()
    assert "not running" in ProcessRef(child.pid, start).verify() or ProcessRef(child.pid, start).verify()
    assert ProcessRef.current(os.getpid()).alive()
