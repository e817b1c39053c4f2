"""A small agent for the supervisor tests. Usage: child_agent.py MODE. Uses agentvigil like a real agent;
the supervisor's environment (record dir, heartbeat interval, SIGTERM = graceful kill) does the rest."""

import signal
import sys
import time

import agentvigil

mode = sys.argv[1]
if mode == "crash":
    raise SystemExit("crash on start: bad config")   # exit code 1 before any Monitor exists

mon = agentvigil.Monitor("child-agent")
if mode == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def work(steps: int, step_seconds: float = 0.02, calls: int = 0, tokens: int = 100) -> None:
    with mon.run() as run:
        for _ in range(steps):
            with run.step():
                for _ in range(calls):
                    run.llm_usage(provider="fake", model="fake-model", input_tokens=tokens, output_tokens=10)
                time.sleep(step_seconds)


if mode == "silent":
    for _ in range(3):
        work(2)
    sys.exit(0)                        # exits 0 as if done: a silent exit for a service
if mode == "hang":
    work(3)
    with mon.run() as run:
        with run.step():
            time.sleep(120)            # a call with no timeout: heartbeats go on, progress stops
if mode == "loop":
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        work(1, step_seconds=0.05, calls=1)              # the normal cost per heartbeat cycle
    while True:
        work(1, step_seconds=0.01, calls=20, tokens=5000)  # runaway: ~100x the cost per cycle
# "healthy" and "ignore-term": steady work until stopped
while True:
    work(5)
