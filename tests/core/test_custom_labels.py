"""Custom labels: a declared label set on the per-run series, values per Monitor and per run."""

import pytest
from prometheus_client import CollectorRegistry

import agentvigil
from agentvigil import metrics as metrics_module
from agentvigil.metrics import AgentMetrics
from agentvigil.replay import replay


@pytest.fixture
def declared(monkeypatch):
    """A fresh declaration for this test (the real one is once per process)."""
    monkeypatch.setattr(metrics_module, "_declared", None)
    monkeypatch.setattr(metrics_module, "_frozen", False)
    monkeypatch.delenv("AGENTVIGIL_LABELS", raising=False)
    return metrics_module


def _run(mon, **kw):
    with mon.run(**kw) as run:
        with run.step():
            with run.tool_call("search", {"q": 1}) as call:
                call.set_result("r")
            try:
                with run.tool_call("http", {"u": 1}):
                    raise TimeoutError("slow")
            except TimeoutError:
                pass
            run.llm_usage("openai", "gpt-4o-mini", input_tokens=1000, output_tokens=10)


def test_monitor_and_run_values_on_the_per_run_series(declared, registry, make_monitor, sample):
    agentvigil.declare_labels("tenant", "env")
    mon = make_monitor("bot", labels={"tenant": "acme", "env": "prod"})
    _run(mon)
    _run(mon, labels={"tenant": "globex"})     # per run: overrides the Monitor's tenant, keeps its env
    for tenant in ("acme", "globex"):
        lab = {"agent": "bot", "tenant": tenant, "env": "prod"}
        assert sample("agent_runs_total", status="ok", **lab) == 1
        assert sample("agent_steps_total", **lab) == 1
        assert sample("agent_tool_calls_total", tool="search", status="ok", **lab) == 1
        assert sample("agent_tool_calls_total", tool="http", status="error", **lab) == 1
        assert sample("agent_tool_errors_total", tool="http", kind="timeout", **lab) == 1
        model = dict(lab, provider="openai", model="gpt-4o-mini")
        assert sample("agent_llm_calls_total", status="ok", **model) == 1
        assert sample("agent_tokens_total", type="input", **model) == 1000
        assert sample("agent_cost_usd_total", **model) > 0
    # families without custom labels keep theirs
    assert registry.get_sample_value("agent_run_duration_seconds_count", {"agent": "bot"}) == 2


def test_unset_values_are_empty_and_undeclared_keys_counted_not_raised(declared, make_monitor, sample, monkeypatch):
    agentvigil.declare_labels("tenant")
    mon = make_monitor("bot")
    counted = []
    monkeypatch.setattr("agentvigil.monitor.internal_error", lambda component, exc: counted.append(str(exc)))
    _run(mon, labels={"team": "x"})            # undeclared: dropped and counted
    assert sample("agent_runs_total", agent="bot", status="ok", tenant="") == 1
    assert len(counted) == 1 and "'team' is not declared" in counted[0]


def test_values_are_capped_like_every_label(declared, monkeypatch):
    agentvigil.declare_labels("tenant")
    registry = CollectorRegistry()
    m = AgentMetrics(registry, max_label_values=2)
    values = [m.extra_values({"tenant": f"t{i}"}) for i in range(4)]
    assert values[:2] == [("t0",), ("t1",)] and values[2] == values[3] == ("__overflow__",)
    assert registry.get_sample_value("agentvigil_label_overflow_total", {"label": "tenant"}) == 2
    assert m.extra_values({"tenant": "x" * 500}) == ("__overflow__",)


def test_bad_names_and_late_redeclaration_are_clear_errors(declared, make_monitor):
    with pytest.raises(ValueError, match="'tool'"):
        agentvigil.declare_labels("tool")
    with pytest.raises(ValueError, match="'2x'"):
        agentvigil.declare_labels("2x")
    agentvigil.declare_labels("tenant")
    make_monitor("bot")
    assert agentvigil.declare_labels("tenant") == ("tenant",)   # the same set: fine
    with pytest.raises(ValueError, match="before the first Monitor"):
        agentvigil.declare_labels("tenant", "env")


def test_env_declaration_and_bad_env_is_ignored(declared, monkeypatch):
    monkeypatch.setenv("AGENTVIGIL_LABELS", "tenant, env")
    assert metrics_module.declared_labels() == ("tenant", "env")
    monkeypatch.setattr(metrics_module, "_declared", None)
    monkeypatch.setenv("AGENTVIGIL_LABELS", "tenant,__bad")
    assert metrics_module.declared_labels() == ()


def test_no_labels_declared_keeps_the_contract(declared, make_monitor, registry):
    mon = make_monitor("bot", labels={"tenant": "acme"})   # nothing declared: dropped
    _run(mon)
    assert registry.get_sample_value("agent_runs_total", {"agent": "bot", "status": "ok"}) == 1


def test_replay_gives_the_same_labelled_series(declared, make_monitor, registry, tmp_path):
    agentvigil.declare_labels("tenant")
    mon = make_monitor("bot", labels={"tenant": "acme"}, record_dir=str(tmp_path))
    _run(mon)
    _run(mon, labels={"tenant": "globex"})
    mon.close()
    session = next(p for p in tmp_path.iterdir() if p.is_dir())
    again = CollectorRegistry()
    list(replay(str(session), metrics=AgentMetrics(again)))
    for tenant in ("acme", "globex"):
        labels = {"agent": "bot", "tool": "search", "status": "ok", "tenant": tenant}
        assert again.get_sample_value("agent_tool_calls_total", labels) == 1
        assert registry.get_sample_value("agent_tool_calls_total", labels) == 1
