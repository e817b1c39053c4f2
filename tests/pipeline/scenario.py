"""A scripted agent that exercises every metric of docs/metrics.md through the Monitor, recording its
session. Run as ``python scenario.py OUT_DIR``: writes ``OUT_DIR/inprocess.prom`` (its own agent_* series)
and records under ``$AGENTVIGIL_RECORD_DIR`` (or OUT_DIR/rec). Used by the parity tests, under supervise."""

from __future__ import annotations

import os
import sys

from prometheus_client import CollectorRegistry, generate_latest

import agentvigil
from agentvigil import BudgetExceeded, CircuitBreaker, CircuitOpenError, ModelPrice, PriceBook, TokenBudget


class RateLimited(Exception):
    status_code = 429


def scenario(record_dir: str, registry: CollectorRegistry) -> agentvigil.Monitor:
    prices = PriceBook(use_database=False)
    prices.set_price("fake-model", ModelPrice(input=1.0, output=2.0, cache_read=0.1))
    mon = agentvigil.Monitor("parity-bot", registry=registry, prices=prices, record_dir=record_dir,
                             heartbeat=False, session_id=None)
    breaker = CircuitBreaker("fake-provider", failure_threshold=2, recovery_timeout=3600, monitor=mon,
                             registry=registry)
    budget = TokenBudget("parity-budget", limit=5_000, monitor=mon, registry=registry)
    for i in range(7):                      # a baseline of cheap ok runs, with cache hits and tool calls
        with mon.run(task_id=f"t{i}") as run:
            with run.step("plan"):
                with run.tool_call("search", {"q": i}) as call:
                    call.set_result({"hits": i})
                run.llm_usage("fake", "fake-model", input_tokens=100, output_tokens=10, cache_read_tokens=50,
                              duration_s=0.2)
            with budget.reserve(200) as reservation:
                reservation.commit(110)
    # loop + same_result + an expensive run (cost over baseline) going over the same call as it nears its
    # cost limit (runaway's cost_limit: $0.16 of $0.20 spent by the fourth call)
    with mon.run(task_id="loop", max_cost_usd=0.2) as run:
        for i in range(4):
            with run.step():
                with run.tool_call("read_file", {"path": "a.py"}) as call:
                    call.set_result("same")
            run.llm_usage("fake", "fake-model", input_tokens=10_000 + 20_000 * i, output_tokens=10)
        run.llm_usage("fake", "fake-model", input_tokens=5_000, output_tokens=500)
    try:
        with mon.run(task_id="errors") as run:   # tool errors by kind, unpriced model, a provider outage
            with run.step():
                try:
                    with run.tool_call("http", {"u": 1}):
                        raise TimeoutError("slow")
                except TimeoutError:
                    pass
                run.llm_usage("fake", "unknown-model", input_tokens=10, output_tokens=1)
                run.llm_usage("fake", "fake-model", error=RateLimited("429"))
                for _ in range(2):
                    try:
                        breaker.call(_rate_limited)
                    except RateLimited:
                        pass
                try:
                    breaker.call(lambda: None)
                except CircuitOpenError:
                    pass
                try:
                    budget.reserve(100_000)
                except BudgetExceeded:
                    pass
            raise ValueError("the run fails")
    except ValueError:
        pass
    try:
        with mon.run(task_id="killed") as run:
            run.kill("operator")
            with run.step():
                pass
    except agentvigil.RunKilled:
        pass
    try:
        with mon.run(task_id="limited", max_steps=2) as run:   # stopped by its own step limit
            for _ in range(5):
                with run.step():
                    pass
    except agentvigil.RunLimitExceeded:
        pass
    mon.heartbeat()
    with mon.run(task_id="last") as run:     # a job that ends well (supervise's job mode: done)
        with run.step():
            pass
    mon.close()
    return mon


def _rate_limited() -> None:
    raise RateLimited("429")


def agent_series(text: str) -> dict[str, float]:
    """agent_* samples of an exposition, ``_created`` aside (creation times differ by process)."""
    out = {}
    for line in text.splitlines():
        if not line.startswith("agent_") or line.startswith("agent_supervisor") or line.startswith("agent_restarts"):
            continue
        name, _, value = line.rpartition(" ")
        if "_created{" in name or name.endswith("_created"):
            continue
        out[name] = float(value)
    return out


if __name__ == "__main__":
    out_dir = sys.argv[1]
    reg = CollectorRegistry()
    scenario(os.environ.get("AGENTVIGIL_RECORD_DIR") or os.path.join(out_dir, "rec"), reg)
    with open(os.path.join(out_dir, "inprocess.prom"), "w") as fh:
        fh.write(generate_latest(reg).decode())
