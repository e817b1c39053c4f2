import json

import pytest

from agentvigil import events as ev
from agentvigil.detectors.budget import BudgetDetector as BudgetWatcher
from agentvigil.detectors.correlation import CorrelationDetector
from agentvigil.detectors.cost_limit import CostLimitDetector as CostWatcher
from agentvigil.detectors.duration import DurationDetector as DurationWatcher
from agentvigil.detectors.retry import RetryDetector as RetryWatcher
from agentvigil.detectors.scope import ScopeDetector as ScopeWatcher
from agentvigil.detectors.scope import ScopePolicy, event_paths
from agentvigil.detectors.sequence import SequenceDetector as LoopWatcher
from agentvigil.detectors.silence import SilenceDetector as SilenceWatcher
from agentvigil.events import Event
from agentvigil.policy import WatchConfig
from agentvigil.watch.core import SessionJudge


def feed(detector, event):
    return list(detector.feed(event) or [])


def tick(detector, now, live=True):
    detector.live = live
    return list(detector.tick(now) or [])


def tool_end(tool, args="a1", status="ok", ts=100.0, run="r1", result=None, **kw):
    return Event(ev.TOOL_END, ts, agent_id="bot", session_id="s", run_id=run, tool_name=tool, args_hash=args,
                 result_hash=result, status=status, **kw)


def llm(cost=None, ts=100.0, tokens=None, **kw):
    return Event(ev.LLM_CALL, ts, agent_id="bot", session_id="s", run_id="r1", provider="openai", model="m",
                 cost_usd=cost, token_count=tokens, status="ok", **kw)


def test_retry_fires_once_at_max_and_resets_on_success():
    w = RetryWatcher(max=3)
    assert feed(w, tool_end("bash", status="error")) == []
    assert feed(w, tool_end("bash", status="error")) == []
    found = feed(w, tool_end("bash", status="error", detail={"command": "pytest"}))
    assert [f.detector for f in found] == ["retry"] and '"pytest" failed 3 times' in found[0].reason
    assert feed(w, tool_end("bash", status="error")) == []          # once per trouble
    feed(w, tool_end("bash", status="ok"))                           # success re-arms
    assert [feed(w, tool_end("bash", status="error")) for _ in range(3)][-1]
    assert feed(w, tool_end("bash", args="other", status="error")) == []   # another command counts apart
    assert w.retries >= 3


def test_cost_over_threshold_once():
    w = CostWatcher(max_dollars=1.0)
    assert feed(w, llm(0.6)) == []
    found = feed(w, llm(0.6))
    assert found and "$1.20 (threshold: $1.00)" in found[0].reason
    assert feed(w, llm(5)) == []
    assert w.total == pytest.approx(6.2)


def test_scope_policy_forms_and_paths(tmp_path):
    policy = ScopePolicy({"allow": ["src/*", "tests/*"], "deny": ["*.env", "secrets/*"],
                          "files": {"write": {"deny": ["src/generated/*"]}}}, str(tmp_path))
    assert policy.check("src/app.py") is None
    assert policy.check(str(tmp_path / "src" / "a" / "b.py")) is None      # absolute, under the root
    assert policy.check("src/.env") == "denied by deny"
    assert policy.check("/etc/passwd") == "not in allow"
    assert policy.check("../outside.py") == "not in allow"
    assert policy.check("src/generated/x.py", "read") is None
    assert policy.check("src/generated/x.py", "write") == "denied by files.write.deny"
    w = ScopeWatcher(policy)
    e = tool_end("write", detail={"path": "/etc/hosts", "access": "write"})
    found = feed(w, e)
    assert found[0].detail == {"path": "/etc/hosts", "access": "write", "reason": "not in allow", "tool": "write"}
    assert feed(w, e) == []                                              # once per path and access
    assert feed(w, tool_end("read", detail={"paths": ["src/ok.py", "secrets/k"]}))[0].detail["path"] == "secrets/k"
    assert event_paths(tool_end("x")) == []


def test_scope_policy_agent_strace_format(tmp_path):
    path = tmp_path / ".agent-scope.json"
    path.write_text(json.dumps({"files": {"read": {"allow": ["**"]}, "write": {"allow": ["src/*"],
                                                                             "deny": ["*.lock"]}}}))
    policy = ScopePolicy.load(str(path))
    assert policy.check("anything/at/all.txt", "read") is None
    assert policy.check("docs/x.md", "write") == "not in files.write.allow"
    assert policy.check("src/poetry.lock", "write") == "denied by files.write.deny"


def test_duration_from_events_and_live_ticks():
    w = DurationWatcher(max_seconds=60, started_at=1000.0)
    assert feed(w, tool_end("t", ts=1050.0)) == []
    assert tick(w, 1100.0, False) == []                                # a dead session does not age
    found = tick(w, 1100.0, True)
    assert found and "running 1m40s (threshold: 1m00s)" in found[0].reason
    assert tick(w, 2000.0, True) == []
    w2 = DurationWatcher(max_seconds=60)                                   # no meta: first event starts it
    feed(w2, tool_end("t", ts=10.0))
    assert feed(w2, tool_end("t", ts=71.0))


def test_loop_sequence_repeats_but_edit_test_progress_is_quiet():
    w = LoopWatcher(sequence_length=3, max_repeats=3)
    seq = [("read", "f"), ("edit", "e"), ("test", "t")]
    found = []
    for _ in range(3):
        for tool, args in seq:
            found += feed(w, tool_end(tool, args))
    assert len(found) == 1 and "(read→edit→test) × 3" in found[0].reason
    quiet = LoopWatcher(sequence_length=3, max_repeats=3)
    out = []
    for i in range(5):                                                     # each edit differs: progress
        for tool, args in [("read", "f"), ("edit", f"e{i}"), ("test", "t")]:
            out += feed(quiet, tool_end(tool, args))
    assert out == []
    same = LoopWatcher(sequence_length=3, max_repeats=3)                   # one call repeated is not a sequence
    assert sum((feed(same, tool_end("x", "a")) for _ in range(12)), []) == []
    runs = LoopWatcher(sequence_length=2, max_repeats=2)                   # per run
    assert feed(runs, tool_end("a", run="r1")) + feed(runs, tool_end("b", run="r2")) + \
        feed(runs, tool_end("a", run="r1")) + feed(runs, tool_end("b", run="r2")) == []


def test_silence_only_while_live_and_rearms():
    w = SilenceWatcher(max_seconds=5)
    w.activity(100.0)
    assert tick(w, 104.0, True) == []
    assert tick(w, 110.0, False) == []
    found = tick(w, 110.0, True)
    assert found and "no events for 10s" in found[0].reason
    assert tick(w, 120.0, True) == []
    w.activity(121.0)
    assert tick(w, 127.0, True)


def test_budget_exceeded_events_and_token_budget():
    w = BudgetWatcher(max_tokens=1000)
    e = Event(ev.BUDGET_EXCEEDED, 1.0, name="main", token_count=500, reason="reserve",
              detail={"limit": 1000, "committed": 900, "reserved": 0})
    found = feed(w, e)
    assert found[0].detail["utilization"] == 0.9 and found[0].detail["budget"] == "main"
    assert feed(w, e) == []
    assert feed(w, llm(tokens=600)) == []
    assert feed(w, llm(tokens=600))[0].detail["tokens"] == 1200


def judge(config=None, **kw):
    return SessionJudge(config or WatchConfig.defaults(), "s", "bot", **kw)


def test_session_judge_runs_the_same_judge_as_replay():
    j = judge()
    breaches = []
    for _ in range(3):
        breaches += j.feed(tool_end("search", "q", result="same"), 0)
    assert [(b.watcher, b.detail["detector"]) for b in breaches] == [("detectors", "same_result")]
    assert j.feed(Event(ev.DETECTION, 1.0, detector="repeat_call"), 0) == []    # recorded verdicts: re-derived
    opened = j.feed(Event(ev.BREAKER_TRANSITION, 1.0, name="openai", state="open", reason="failures"), 0)
    assert opened[0].detail["detector"] == "breaker"


def test_correlated_breach_escalates_with_its_own_actions():
    config = WatchConfig.defaults()
    config.watchers["retry"].params["max"] = 2
    config.watchers["cost"].params["max_dollars"] = 1.0
    j = judge(config)
    out = j.feed(tool_end("bash", status="error", ts=10.0), 0) + j.feed(tool_end("bash", status="error", ts=11.0), 0)
    assert [b.watcher for b in out] == ["retry"]
    out = j.feed(llm(2.0, ts=30.0), 0)
    assert [b.watcher for b in out] == ["cost", "correlated"]
    corr = out[1]
    assert corr.severity == "critical" and corr.actions == ("terminal",)   # kill only when asked
    assert corr.detail["watchers"] == ["cost", "loop"]          # families, not detector names
    assert j.breaches == 3


def verdict(name, ts):
    return Event(ev.DETECTION, ts, agent_id="bot", session_id="s", detector=name, reason=name)


def test_correlation_window_and_same_symptom_do_not_escalate():
    c = CorrelationDetector({"retry": "loop", "repeat_call": "loop", "cost": "cost", "scope": "scope"},
                            window=10, min_watchers=2)
    assert feed(c, verdict("retry", 0.0)) == []
    assert feed(c, verdict("cost", 20.0)) == []                  # too far apart
    assert feed(c, verdict("repeat_call", 21.0)) != []           # loop family + cost within 10 s
    assert feed(c, verdict("scope", 22.0)) == []                 # once per window
    same = CorrelationDetector({"retry": "loop", "repeat_call": "loop"}, window=10, min_watchers=2)
    assert feed(same, verdict("retry", 0.0)) + feed(same, verdict("repeat_call", 1.0)) == []   # one symptom
    config = WatchConfig.defaults()
    config.watchers["loop"].params.update(sequence_length=2, max_repeats=2)
    j = judge(config)
    out = []
    for _ in range(3):                                          # loop watcher + the Judge's loop detectors
        out += j.feed(tool_end("a", "1", result="r"), 0) + j.feed(tool_end("b", "2", result="r"), 0)
    assert {b.watcher for b in out} == {"loop", "detectors"}
    assert "correlated" not in {b.watcher for b in out}


def test_disabled_watchers_and_detectors():
    config = WatchConfig.from_dict({"watchers": {"detectors": {"enabled": False},
                                                 "correlated": {"enabled": False},
                                                 "retry": {"enabled": False}}})
    j = judge(config)
    names = {d.name for d in j.pipeline.detectors}
    assert not names & {"retry", "loops", "cost_over_baseline", "breaker", "correlated"}
    assert {"cost", "duration", "loop", "silence", "budget"} <= names
    for _ in range(3):
        assert j.feed(tool_end("s", "q", result="same"), 0) == []


def test_one_failing_command_is_one_family_and_never_kills_by_default():
    """seed 004's example (retry 3, cost, duration, terminal): a failing command repeated trips retry and the
    loop guard, one symptom: no correlated breach, and nothing has the kill action."""
    config = WatchConfig.defaults()
    config.watchers["retry"].params["max"] = 3
    j = judge(config)
    out = []
    for i in range(6):
        out += j.feed(tool_end("bash", "same", status="error", result="boom", ts=10.0 + i), 0)
    assert {b.watcher for b in out} >= {"retry", "detectors"}
    assert "correlated" not in {b.watcher for b in out}
    assert all("kill" not in b.actions for b in out)
