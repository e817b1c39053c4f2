"""Real child processes under a real Supervisor (time compressed; every test bounded)."""

import json
import os
import signal
import time

from agentvigil.supervise.supervisor import EXIT_GAVE_UP, EXIT_OK

from .conftest import http_get, wait_until


def kinds(journal, record_type):
    return [r.get("kind") or r.get("reason") for r in journal if r["type"] == record_type]


def test_healthy_child_probes_and_metrics_then_graceful_stop(supervise):
    run = supervise("healthy")
    wait_until(lambda: http_get(run.url("/readyz"))[0] == 200, 10, "ready")
    status, body = http_get(run.url("/healthz"))
    assert status == 200 and json.loads(body)["state"] == "running"
    wait_until(lambda: run.metric("agent_steps_total", agent="child-agent") >= 5, 5, "steps from the child's events")
    _, text = http_get(run.url("/metrics"))
    assert 'agent_supervisor_state{agent="child-agent",state="running"} 1.0' in text
    assert 'agent_restarts_total{agent="child-agent",reason="zombie"} 0.0' in text
    assert "agent_heartbeat_timestamp_seconds{agent=\"child-agent\"}" in text
    assert run.metric("agent_supervisor_child_up", agent="child-agent") == 1
    start = time.monotonic()
    run.supervisor.request_stop()
    assert run.join(10) == EXIT_OK
    assert time.monotonic() - start < 3.0         # graceful: next step boundary + 1 s, no SIGKILL
    exits = [r for r in run.journal() if r["type"] == "exit"]
    assert exits[-1]["kind"] == "stopped" and exits[-1]["sigkilled"] is False


def test_child_ignoring_sigterm_is_killed_after_the_grace(supervise):
    run = supervise("ignore-term", stop_grace=0.8)
    wait_until(lambda: run.supervisor.state == "running", 10, "running")
    start = time.monotonic()
    run.supervisor.request_stop()
    assert run.join(10) == EXIT_OK
    assert 0.7 < time.monotonic() - start < 4.0
    exit_record = [r for r in run.journal() if r["type"] == "exit"][-1]
    assert exit_record["sigkilled"] is True and exit_record["signal"] == "SIGKILL"


def test_zombie_is_alerted_and_the_probe_says_not_progressing(supervise, webhook):
    run = supervise("hang", on_zombie="alert", webhook_url=webhook.url)
    wait_until(lambda: run.metric("agent_supervisor_incidents_total", agent="child-agent", kind="zombie") == 1, 10,
               "zombie incident")
    status, body = http_get(run.url("/readyz"))
    assert status == 503 and json.loads(body)["reason"] == "not progressing"
    assert http_get(run.url("/healthz"))[0] == 200          # alive: restarting the pod would not help
    assert run.supervisor.state == "running"                # action "alert": no restart
    notice = wait_until(lambda: [b for b in webhook.bodies if "zombie" in b["text"]], 5, "webhook")[0]
    fields = {f["title"]: f["value"] for f in notice["attachments"][0]["fields"]}
    assert fields["kind"] == "zombie" and fields["agent"] == "child-agent" and fields["action"] == "alert"


def test_zombie_restart_sigkills_a_child_stuck_in_a_call(supervise):
    run = supervise("hang", stop_grace=0.5, max_restarts=1)
    wait_until(lambda: run.metric("agent_restarts_total", agent="child-agent", reason="zombie") == 1, 15,
               "restart for zombie")
    stop = [r for r in run.journal() if r["type"] == "stop"][0]
    first_exit = [r for r in run.journal() if r["type"] == "exit"][0]
    assert stop["reason"] == "zombie"
    assert first_exit["kind"] == "stopped" and first_exit["sigkilled"] is True   # stuck in sleep: SIGTERM not enough
    # the restarted child hangs again; after max_restarts the supervisor gives up
    assert run.join(15) == EXIT_GAVE_UP


def test_silent_exit_is_restarted_in_service_mode(supervise):
    run = supervise("silent", max_restarts=1, cooldown=0.1)
    assert run.join(15) == EXIT_GAVE_UP
    journal = run.journal()
    assert kinds(journal, "incident") == ["silent_exit", "silent_exit"]
    assert run.metric("agent_restarts_total", agent="child-agent", reason="silent_exit") == 1
    # the exit verdict went through the pipeline: a detection in the journal, counted on the metric contract
    assert [r["detector"] for r in journal if r["type"] == "detection"] == ["silent_exit", "silent_exit"]
    assert run.metric("agent_detections_total", agent="child-agent", detector="silent_exit") == 2


def test_clean_exit_after_ok_runs_is_done_in_job_mode(supervise):
    run = supervise("silent", mode="job")
    assert run.join(10) == EXIT_OK
    assert kinds(run.journal(), "exit") == ["done"]
    assert run.metric("agent_supervisor_state", agent="child-agent", state="done") == 1


def test_crash_on_start_restart_loop_is_stopped_by_the_policy(supervise, webhook):
    run = supervise("crash", cooldown=0.3, max_restarts=2, webhook_url=webhook.url)
    start = time.monotonic()
    assert run.join(15) == EXIT_GAVE_UP
    elapsed = time.monotonic() - start
    journal = run.journal()
    starts = [r for r in journal if r["type"] == "start"]
    assert len(starts) == 3                                   # the first start and 2 restarts
    assert elapsed >= 0.6                                     # the cooldown spaced the starts
    assert run.metric("agent_restarts_total", agent="child-agent", reason="crash") == 2
    gave_up = wait_until(lambda: [b for b in webhook.bodies if "gave up" in b["text"]], 5, "give-up webhook")[0]
    assert gave_up["attachments"][0]["color"] == "danger"
    assert http_get(run.url("/healthz"))[0] == 503            # policy exhausted: liveness fails


def test_liveness_lost_when_the_child_freezes(supervise):
    run = supervise("healthy", liveness_timeout=0.6, stop_grace=0.3, max_restarts=1)
    wait_until(lambda: run.supervisor.state == "running", 10, "running")
    pid = run.supervisor.child.pid
    os.kill(pid, signal.SIGSTOP)                     # frozen: no heartbeats, no exit
    wait_until(lambda: run.metric("agent_restarts_total", agent="child-agent", reason="liveness_lost") == 1, 10,
               "restart after liveness lost")
    assert run.supervisor.child.pid != pid
    wait_until(lambda: http_get(run.url("/readyz"))[0] == 200, 10, "restarted child ready")


def test_cost_spike_per_heartbeat_cycle(supervise, webhook):
    run = supervise("loop", on_cost_spike="alert", progress_timeout=0, webhook_url=webhook.url)
    wait_until(lambda: run.metric("agent_supervisor_incidents_total", agent="child-agent", kind="cost_spike") >= 1,
               15, "cost spike")
    incident = [r for r in run.journal() if r["type"] == "incident" and r["kind"] == "cost_spike"][0]
    assert incident["detail"]["unit"] == "usd" and incident["detail"]["ratio"] > 10
    verdict = [r for r in run.journal() if r["type"] == "detection" and r["detector"] == "cost_spike"][0]
    assert verdict["detail"] == incident["detail"]           # the incident is the detector's verdict event
    assert run.metric("agent_detections_total", agent="child-agent", detector="cost_spike") >= 1
    assert run.metric("agent_supervisor_cycle_cost_baseline_usd", agent="child-agent") > 0
    wait_until(lambda: [b for b in webhook.bodies if "cost" in b["text"]], 5, "webhook")


def test_escalation_reaches_a_real_alertmanager(supervise, alertmanager):
    run = supervise("crash", cooldown=0.1, max_restarts=1, alertmanager_url=alertmanager)
    assert run.join(15) == EXIT_GAVE_UP

    def alerts():
        _, body = http_get(alertmanager + "/api/v2/alerts")
        return {a["labels"]["alertname"]: a for a in json.loads(body or "[]")}

    found = wait_until(lambda: (a := alerts()) and "AgentSupervisorGaveUp" in a and a, 10, "alerts in Alertmanager")
    gave_up = found["AgentSupervisorGaveUp"]
    assert gave_up["labels"]["agent"] == "child-agent" and gave_up["labels"]["severity"] == "critical"
    assert gave_up["status"]["state"] == "active"
    assert found["AgentSupervisorCrashed"]["labels"]["severity"] == "warning"
