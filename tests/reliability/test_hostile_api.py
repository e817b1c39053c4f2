"""What user code may hand the public API, and what it must never do back: raise (other than the documented
guard exceptions and construction-time ValueErrors), write outside its directory, leak content, or grow
without bound."""

from __future__ import annotations

import itertools
import json
import os
import pathlib

import pytest
from prometheus_client import CollectorRegistry, generate_latest

import agentvigil
from agentvigil import monitor as monitor_module


def _errors(registry: CollectorRegistry, component: str) -> float:
    return registry.get_sample_value("agentvigil_internal_errors_total", {"component": component}) or 0.0


def _monitor(**kwargs) -> tuple[agentvigil.Monitor, CollectorRegistry]:
    registry = CollectorRegistry()
    return agentvigil.Monitor("hostile", registry=registry, heartbeat=False, **kwargs), registry


def test_numbers_too_large_for_a_float_are_refused_or_ignored_never_an_overflow():
    registry = CollectorRegistry()
    tokens = agentvigil.TokenBudget("tokens", 1000, registry=registry)
    with tokens.reserve(10) as held:
        held.commit(10**400)        # documented: commit never raises; the reserved amount is charged
    assert tokens.committed == 10
    usd = agentvigil.CostBudget("usd", usd_limit=5.0, registry=registry)
    with usd.reserve(0.01) as held:
        held.commit(1e303)          # finite, but not in µUSD
    assert usd.spent_usd == pytest.approx(0.01)
    with pytest.raises(ValueError, match="tokens"):
        usd.reserve(1e303)
    with pytest.raises(ValueError, match="limit"):
        agentvigil.CostBudget("usd2", usd_limit=1e303, registry=registry)
    with pytest.raises(ValueError, match="limit"):
        agentvigil.TokenBudget("tokens2", 10**400, registry=registry)

    mon, reg = _monitor()
    with mon.run(max_seconds=10**400, max_steps=10**400) as run:   # no limit, as any other non-finite one
        assert run.limits is None
        run.llm_usage("openai", "gpt-4o-mini", 10, 5, duration_s=10**400)
        run.llm_usage("openai", "gpt-4o-mini", 10, 5, duration_s=1e308)   # finite, but a sum of two is +Inf
    text = generate_latest(reg).decode()
    sums = [line for line in text.splitlines() if line.startswith("agent_llm_call_duration_seconds_sum")]
    assert sums and all("inf" not in line.lower() for line in sums), sums


def test_names_and_numbers_whose_dunder_methods_raise_are_counted_not_raised():
    class Name:
        def __str__(self) -> str:
            raise RuntimeError("__str__ failed")

    class Tokens:
        def __int__(self) -> int:
            raise RuntimeError("__int__ failed")

        def __float__(self) -> float:
            raise RuntimeError("__float__ failed")

    mon, registry = _monitor()
    with mon.run() as run:
        with run.tool_call(Name()) as call:   # type: ignore[arg-type]
            call.set_result("ok")
        assert call.name == "unknown"
        run.llm_usage(Name(), Name(), 1, 1, response_model=Name())   # type: ignore[arg-type]
        run.llm_usage("openai", "gpt-4o-mini", Tokens(), 1)          # type: ignore[arg-type]
        run.kill(Name())                                             # type: ignore[arg-type]
    assert run.status == "ok"   # killed only at a boundary, and the run had none left
    assert _errors(registry, "tool_call") >= 1 and _errors(registry, "llm_call") >= 3
    assert _errors(registry, "usage") >= 1 and _errors(registry, "kill") >= 1
    other = agentvigil.Monitor(Name(), registry=CollectorRegistry(), heartbeat=False)   # type: ignore[arg-type]
    assert other.agent == "unknown"


def test_very_long_names_are_cut_so_every_cache_keyed_by_them_stays_small(tmp_path):
    mon, registry = _monitor(record_dir=str(tmp_path))
    with mon.run() as run:
        with run.tool_call("t" * 100_000):
            pass
        run.llm_usage("openai", "m" * 100_000, 1, 1)
    mon.close()
    events = [json.loads(line) for line in (pathlib.Path(mon.recorder.path) / "events.ndjson").read_text().splitlines()]
    names = [e.get("tool_name") or e.get("model") for e in events if e["event_type"] in ("tool_end", "llm_call")]
    assert names and all(len(n) == agentvigil._safety.NAME_LIMIT for n in names)
    assert all(len(key[1]) <= agentvigil._safety.NAME_LIMIT for key in mon.metrics._tools)


def test_paths_may_be_one_path_any_iterable_or_junk():
    from prometheus_client import REGISTRY  # no Monitor at hand where paths are read: the default registry

    before = _errors(REGISTRY, "tool_call")
    mon, registry = _monitor()
    with mon.run() as run:
        with run.tool_call("read", paths=pathlib.Path("/etc/hosts"), access="read") as one:
            pass
        with run.tool_call("read", paths=(f"/f{i}" for i in itertools.count())) as endless:   # not read past 64
            pass
        with run.tool_call("read", paths=3) as junk:   # type: ignore[arg-type]
            pass
    assert one.detail == {"paths": ["/etc/hosts"], "access": "read"}
    assert endless.detail is not None and len(endless.detail["paths"]) == 64
    assert junk.detail is None and _errors(REGISTRY, "tool_call") == before + 1


def test_a_breaker_refuses_nan_thresholds():
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="nan"):
        agentvigil.CircuitBreaker("nan-failures", failure_threshold=float("nan"), registry=registry)
    with pytest.raises(ValueError, match="nan"):
        agentvigil.CircuitBreaker("nan-recovery", recovery_timeout=float("nan"), registry=registry)
    with pytest.raises(ValueError):
        agentvigil.CircuitBreaker("inf-recovery", recovery_timeout=float("inf"), registry=registry)


def test_a_run_entered_again_is_not_restarted_and_never_stays_active():
    mon, registry = _monitor()
    run = mon.run(task_id="again")
    for _ in range(3):
        with run:
            with run.step():
                pass
    assert mon.active_runs == 0
    assert registry.get_sample_value("agent_active_runs", {"agent": "hostile"}) == 0.0
    assert registry.get_sample_value("agent_runs_total", {"agent": "hostile", "status": "ok"}) == 1.0
    assert _errors(registry, "run") == 2


def test_runs_ended_out_of_order_leave_no_ended_run_current():
    mon, _ = _monitor()
    outer = mon.run(task_id="outer").__enter__()
    inner = mon.run(task_id="inner").__enter__()
    outer.__exit__(None, None, None)   # callback frameworks end the outer run first
    inner.__exit__(None, None, None)
    assert agentvigil.current_run() is None
    with agentvigil.llm_call("openai", "gpt-4o-mini") as call:
        call.set_usage(100, 10)
    assert call.run is None and outer.tokens == 0


def test_a_session_id_never_names_a_directory_outside_the_record_dir(tmp_path):
    record = tmp_path / "rec"
    for session_id in ("../escape", str(tmp_path / "absolute"), "a/b", "..", "."):
        mon, registry = _monitor(record_dir=str(record), session_id=session_id)
        assert mon.recorder is None and _errors(registry, "recorder") == 1   # logged once, counted, not recording
        with mon.run() as run:
            with run.tool_call("t"):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"] or not record.exists()
    assert not (tmp_path / "escape").exists() and not (tmp_path / "absolute").exists()


@pytest.mark.parametrize(("given", "expected"), [("false", False), ("0", False), ("true", True), ("on", True),
                                                 ("maybe", False), ([1], False), (1, False)])
def test_capture_content_given_as_text_is_read_as_the_environment_reads_it(given, expected):
    mon, _ = _monitor(capture_content=given)
    assert mon.settings.capture_content is expected


def test_runs_never_ended_are_bounded(monkeypatch):
    monkeypatch.setattr(monitor_module, "MAX_OPEN_RUNS", 10)
    mon, registry = _monitor()
    runs = [mon.start_run() for _ in range(25)]
    assert mon.active_runs == 10 and _errors(registry, "monitor") == 15
    runs[-1].end()
    assert mon.active_runs == 9


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_a_prices_file_that_cannot_be_read_whole_is_ignored(tmp_path, monkeypatch, kind):
    if kind == "fifo":
        path = str(tmp_path / "prices.fifo")
        os.mkfifo(path)
    elif kind == "device":
        path = "/dev/zero"
    else:
        path = str(tmp_path / "prices.json")
        with open(path, "wb") as fh:
            fh.truncate(17 * 1024 * 1024)   # sparse: past the 16 MiB bound without writing it
    monkeypatch.setenv("AGENTVIGIL_PRICES_FILE", path)
    mon, _ = _monitor()
    with mon.run() as run:
        assert run.llm_usage("openai", "gpt-4o-mini", 1000, 10) is not None   # the bundled prices still apply
