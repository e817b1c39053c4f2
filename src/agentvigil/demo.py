"""``agentvigil demo``: a simulated fleet with scheduled failures. No network, no key, deterministic seed.

Scenario time = real time × speed. Agents and what happens to them (scenario seconds; a failure persists
once started):

==============  =====================================================================================
support-bot     healthy control: prompt caching ~80 %, steady cost, no errors
triage-bot      healthy, never uses prompt caching (must not trip the cache alert)
research-agent  t=20 tool loop in every run (web_search, same args, same result); t=30 cost spike
                (context bloat: ≥5× baseline, long in-flight runs); web_search errors rate_limit / timeout
billing-agent   t=20 auth errors on crm_lookup; t=25 provider outage on azure-openai: breaker opens
coder-agent     budget "coder-agent" passes 80 % around t=35 and runs out; t=40 cache ratio 0.85 → 0.2
ops-agent       t=40 zombie: hangs inside a tool call; liveness keeps ticking, progress stops
==============  =====================================================================================
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from typing import Any, TextIO

from . import CircuitBreaker, Monitor, TokenBudget
from .exceptions import GuardError
from .exposition import start_metrics_server
from .scopes import Run

SCHEDULE = {
    "research_loop": 20.0,
    "research_cost_spike": 30.0,
    "research_tool_errors": 20.0,
    "billing_auth_errors": 20.0,
    "billing_outage": 25.0,
    "coder_budget_80": 35.0,
    "coder_cache_drop": 40.0,
    "ops_zombie": 40.0,
}
AGENTS = ("support-bot", "triage-bot", "research-agent", "billing-agent", "coder-agent", "ops-agent")
STEP_SECONDS = 0.4          # scenario seconds per step
CODER_BUDGET_LIMIT = 250_000


# Stand-ins for SDK exceptions: classified by name and status, like the real ones.
class RateLimitError(Exception):
    status_code = 429


class InternalServerError(Exception):
    status_code = 503


class AuthenticationError(Exception):
    status_code = 401


class Scenario:
    def __init__(self, speed: float, stop: threading.Event):
        self.speed = speed
        self.stop = stop
        self.t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.t0) * self.speed

    def after(self, name: str) -> bool:
        return self.now() >= SCHEDULE[name]

    def sleep(self, scenario_seconds: float) -> bool:
        """Sleep in scenario time; returns False once the demo is stopping."""
        return not self.stop.wait(scenario_seconds / self.speed)


class SimAgent:
    provider = "openai"
    model = "gpt-4o-mini"
    cache_ratio = 0.8
    input_tokens = 2400
    output_tokens = 180
    steps: tuple[int, int] = (3, 5)
    tools: tuple[str, ...] = ("kb_search", "ticket_update", "send_reply")

    def __init__(self, name: str, scenario: Scenario, rng: random.Random, record_dir: str | None):
        self.name = name
        self.sc = scenario
        self.rng = rng
        self.monitor = Monitor(name, record_dir=record_dir, heartbeat_interval=1.0)
        self.runs = 0
        self.last_error = ""

    # -- one run ---------------------------------------------------------------------------------------
    def loop(self) -> None:
        while not self.sc.stop.is_set():
            self.runs += 1
            try:
                with self.monitor.run(task_id=f"{self.name}-{self.runs}") as run:
                    self.do_run(run)
            except GuardError as exc:
                self.last_error = type(exc).__name__
            except Exception as exc:  # the simulated agent's own failures end the run, not the demo
                self.last_error = type(exc).__name__
            if not self.sc.sleep(0.3):
                return

    def do_run(self, run: Run) -> None:
        for index in range(self.rng.randint(*self.steps)):
            if self.sc.stop.is_set():
                return
            with run.step():
                self.llm(run)
                self.tool(run, self.rng.choice(self.tools), {"run": self.runs, "step": index})
                if not self.sc.sleep(STEP_SECONDS):
                    return

    def llm(self, run: Run, scale: float = 1.0) -> None:
        inp = int(self.input_tokens * scale * self.rng.uniform(0.9, 1.1))
        read = int(inp * self.cache_ratio * self.rng.uniform(0.95, 1.0)) if self.cache_ratio else 0
        run.llm_usage(provider=self.provider, model=self.model, input_tokens=inp,
                      output_tokens=int(self.output_tokens * self.rng.uniform(0.8, 1.2)), cache_read_tokens=read,
                      duration_s=self.rng.uniform(0.4, 1.2))

    def tool(self, run: Run, name: str, args: Any, result: Any = None) -> None:
        try:
            with run.tool_call(name, args) as call:
                self.tool_body(name)
                call.set_result(result if result is not None else {"ok": True, "args": args})
        except GuardError:
            raise
        except Exception as exc:
            self.last_error = type(exc).__name__  # the agent handles tool errors and goes on

    def tool_body(self, name: str) -> None:
        pass


class SupportBot(SimAgent):
    pass


class TriageBot(SimAgent):
    cache_ratio = 0.0
    input_tokens = 900
    tools = ("classify", "route")


class ResearchAgent(SimAgent):
    provider = "anthropic"
    model = "claude-sonnet-4-5"
    cache_ratio = 0.7
    tools = ("web_search", "fetch_page", "summarize")

    def do_run(self, run: Run) -> None:
        spike = self.sc.after("research_cost_spike")
        if self.sc.after("research_loop"):
            with run.step():
                for _ in range(9):  # the same search, the same answer: three loop detections per run
                    self.tool(run, "web_search", {"q": "latest python packaging standards"}, result="same page")
                    if not self.sc.sleep(0.05):
                        return
        steps = 14 if spike else self.rng.randint(*self.steps)
        for index in range(steps):
            with run.step():
                self.llm(run, scale=6.0 if spike else 1.0)
                self.tool(run, self.rng.choice(self.tools), {"run": self.runs, "step": index})
                if not self.sc.sleep(STEP_SECONDS):
                    return

    def tool_body(self, name: str) -> None:
        if name == "web_search" and self.sc.after("research_tool_errors"):
            roll = self.rng.random()
            if roll < 0.25:
                raise RateLimitError("429 Too Many Requests")
            if roll < 0.35:
                raise TimeoutError("search backend timed out")


class BillingAgent(SimAgent):
    provider = "azure-openai"
    model = "gpt-4o"
    tools = ("crm_lookup", "invoice_get", "refund_issue")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.breaker = CircuitBreaker("azure-openai", failure_threshold=5,
                                      recovery_timeout=10.0 / self.sc.speed, monitor=self.monitor)

    def llm(self, run: Run, scale: float = 1.0) -> None:
        def call() -> None:
            if self.sc.after("billing_outage"):
                time.sleep(0.05 / self.sc.speed)
                raise InternalServerError("503 Service Unavailable")
            SimAgent.llm(self, run, scale)

        try:
            self.breaker.call(call)
        except InternalServerError as exc:
            run.llm_usage(provider=self.provider, model=self.model, error=exc, duration_s=0.05)
            raise

    def do_run(self, run: Run) -> None:
        for index in range(self.rng.randint(*self.steps)):
            with run.step():
                # look the customer up first, then ask the model: tool errors show even during the outage
                self.tool(run, self.rng.choice(self.tools), {"run": self.runs, "step": index})
                self.llm(run)
                if not self.sc.sleep(STEP_SECONDS):
                    return

    def tool_body(self, name: str) -> None:
        if name == "crm_lookup" and self.sc.after("billing_auth_errors"):
            raise AuthenticationError("401 invalid API key for CRM")


class CoderAgent(SimAgent):
    provider = "anthropic"
    model = "claude-haiku-4-5"
    cache_ratio = 0.85
    input_tokens = 3000
    tools = ("read_file", "edit_file", "run_tests")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = TokenBudget("coder-agent", limit=CODER_BUDGET_LIMIT, monitor=self.monitor)

    def llm(self, run: Run, scale: float = 1.0) -> None:
        if self.sc.after("coder_cache_drop"):
            self.cache_ratio = 0.2
        # Spend so that 80 % is crossed around t=35 (2.5 calls per scenario second).
        per_call = int(0.8 * CODER_BUDGET_LIMIT / (SCHEDULE["coder_budget_80"] / STEP_SECONDS * 0.95))
        with self.budget.reserve(per_call) as reservation:
            SimAgent.llm(self, run, scale)
            reservation.commit(per_call)

    def do_run(self, run: Run) -> None:
        # edit → test cycles that make progress: new edit each time, test output changes
        for index in range(self.rng.randint(*self.steps)):
            with run.step():
                self.llm(run)
                self.tool(run, "edit_file", {"path": "app.py", "patch": f"{self.runs}-{index}"})
                self.tool(run, "run_tests", {"path": "tests/"}, result=f"{index} failing")
                if not self.sc.sleep(STEP_SECONDS):
                    return


class OpsAgent(SimAgent):
    tools = ("fetch_feed", "check_status")

    def tool_body(self, name: str) -> None:
        if name == "fetch_feed" and self.sc.after("ops_zombie"):
            self.last_error = "hung in fetch_feed"
            self.sc.stop.wait()  # a request with no timeout: hangs until the demo ends


CLASSES = {"support-bot": SupportBot, "triage-bot": TriageBot, "research-agent": ResearchAgent,
           "billing-agent": BillingAgent, "coder-agent": CoderAgent, "ops-agent": OpsAgent}


def status_line(agent: SimAgent, now: float) -> str:
    """One agent's line. Every time on it is in scenario seconds (``t=`` and the progress age), and the
    baseline is the cost_over_baseline detector's (flagged runs never feed it, so a runaway stays visible)."""
    m = agent.monitor.metrics
    series = m.agent(agent.monitor.agent)
    name = series.agent
    runs = sum(m.registry.get_sample_value("agent_runs_total", {"agent": name, "status": s}) or 0
               for s in ("ok", "error", "killed"))
    baseline = series.cost_baseline._value.get()
    last = series.last_run_cost._value.get()
    loops = sum(c._value.get() for c in series.loop.values())
    progress = series.progress._value.get()
    progress_age = max(time.time() - progress, 0.0) * agent.sc.speed if progress else now
    ratios = [s.cache_ratio._value.get() for k, s in list(m._models.items())
              if k[0] == agent.name and s.cache_ratio is not None]
    cache = f"{max(ratios):4.0%}" if ratios and max(ratios) else "  - "
    extra = ""
    if isinstance(agent, BillingAgent):
        extra = f" breaker={agent.breaker.state}"
    if isinstance(agent, CoderAgent):
        extra = f" budget={agent.budget.utilization:4.0%}"
    return (f"[t={now:6.1f}] {agent.name:<15} runs={int(runs):4d} last=${last:.4f} base=${baseline:.4f} "
            f"cache={cache} loops={int(loops):3d} progress={progress_age:5.1f}s ago{extra}"
            + (f" last_error={agent.last_error}" if agent.last_error else ""))


def alerts_line(alerts: list[dict], now: float) -> str:
    names = sorted({a["labels"].get("alertname", "?") + "{" + (a["labels"].get("agent") or a["labels"].get("budget")
                    or a["labels"].get("breaker") or a["labels"].get("job", "")) + "}" for a in alerts})
    return f"[t={now:6.1f}] Prometheus: {len(names)} alert(s) firing" + (": " + ", ".join(names) if names else "")


def start_stack(metrics_port: int, prometheus_port: int, alertmanager_port: int, rules: str | None,
                out: TextIO) -> Any:
    """The demo's Prometheus + Alertmanager, or None after one line saying why the demo runs embedded."""
    from . import demostack

    stack, why = demostack.start(metrics_port, prometheus_port, alertmanager_port, rules)
    if stack is None:
        print(f"agentvigil demo: embedded mode, /metrics only: {why}", file=out, flush=True)
        return None
    for note in stack.notes:
        print(f"agentvigil demo: {note}", file=out, flush=True)
    print(f"agentvigil demo: Prometheus {stack.prometheus_url}/alerts and Alertmanager {stack.alertmanager_url} "
          f"(pids {' '.join(map(str, stack.pids()))}), rules {_shown(stack.rules)} (compressed time: alerts fire "
          "within about 70 s)", file=out, flush=True)
    return stack


def _shown(path: Any) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def run_demo(duration: float = 120.0, port: int | None = 9464, speed: float = 1.0,
             record_dir: str | None = ".agentvigil/sessions", seed: int = 7, status_every: float = 5.0,
             out: TextIO = sys.stdout, prometheus: bool = False, prometheus_port: int = 9090,
             alertmanager_port: int = 9093, rules: str | None = None, view: str = "lines") -> list[SimAgent]:
    """Run the fleet for ``duration`` real seconds (0 = until interrupted). Returns the agents.

    ``prometheus``: also run a real Prometheus and Alertmanager on loopback (when installed) with the demo
    rule profile. ``view="top"`` shows ``agentvigil top`` in place of the status lines (needs a tty)."""
    stop = threading.Event()
    server = None
    stack = None
    if port is not None and port >= 0:
        server, _ = start_metrics_server(port=port)
        print(f"agentvigil demo: /metrics on http://127.0.0.1:{server.server_port}/metrics "
              f"(speed ×{speed}, seed {seed})", file=out, flush=True)
        if prometheus:
            stack = start_stack(server.server_port, prometheus_port, alertmanager_port, rules, out)
    scenario = Scenario(speed, stop)
    agents = [CLASSES[name](name, scenario, random.Random(seed * 100 + i), record_dir) for i, name in enumerate(AGENTS)]
    if record_dir:
        print(f"agentvigil demo: recording sessions under {record_dir}/", file=out, flush=True)
    threads = [threading.Thread(target=a.loop, name=f"demo-{a.name}", daemon=True) for a in agents]
    for t in threads:
        t.start()
    deadline = time.monotonic() + duration if duration > 0 else float("inf")
    previous = _stop_on_sigterm()
    try:
        if view == "top" and server is not None:
            from .top import live, snapshot

            metrics_url = f"http://127.0.0.1:{server.server_port}/metrics"
            prom_url = stack.prometheus_url if stack else None
            try:
                live(lambda: snapshot(metrics_url, prom_url), 1.0, stop=lambda: time.monotonic() >= deadline)
            finally:  # the last screen stays on the terminal after curses restores it
                print("\n".join(snapshot(metrics_url, prom_url)), file=out, flush=True)
        else:
            next_status = time.monotonic() + status_every
            while time.monotonic() < deadline:
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
                if status_every and time.monotonic() >= next_status:
                    next_status += status_every
                    for agent in agents:
                        print(status_line(agent, scenario.now()), file=out, flush=True)
                    if stack is not None:
                        print(alerts_line(stack.firing(), scenario.now()), file=out, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        _restore_sigterm(previous)
        stop.set()
        for t in threads:
            t.join(2.0)
        for agent in agents:
            agent.monitor.flush()
            agent.monitor.close()
        if stack is not None:
            stack.stop()
        if server is not None:
            server.shutdown()
    print(f"agentvigil demo: done after {scenario.now():.0f} scenario seconds", file=out, flush=True)
    return agents


def _stop_on_sigterm() -> Any:
    """SIGTERM ends the demo like Ctrl-C, so its Prometheus and Alertmanager are stopped too."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
