"""A child for the descendant tests: it starts helpers that leave its process group, as tool servers do.

Usage: spawner_agent.py MODE [--ignore-term]. The agent writes ``<SPAWNER_DIR>/agent-<pid>.json`` and every
helper ``<SPAWNER_DIR>/<kind>-<pid>.json`` (pid, /proc start time, parent and, with SPAWNER_PORT, whether it
could bind that loopback port), so a test can check them and clean up by pid. Every process here ends by itself
within ``LIFETIME`` seconds, so nothing outlives a failed test for long.

Modes:
* ``setsid``: one helper, a direct child that calls ``os.setsid()``; the agent keeps running.
* ``daemon``: one helper that daemonises (fork, setsid, fork, the middle process exits); the agent keeps running.
* ``daemon-crash``: the same, then the agent exits 1 once the helper is up.
* ``churn``: three daemonised helpers that each exit after a moment; the agent keeps running.
"""

import json
import os
import signal
import socket
import sys
import time

LIFETIME = 60.0
DIR = os.environ["SPAWNER_DIR"]


def start_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def helper(kind: str, ignore_term: bool, lifetime: float, middle: int | None = None) -> None:
    """The helper's body (in a forked process): report, then sleep; never returns."""
    try:
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        record = {"pid": os.getpid(), "start": start_ticks(os.getpid()), "sid": os.getsid(0)}
        held = None
        if os.environ.get("SPAWNER_PORT"):
            held = socket.socket()
            try:
                held.bind(("127.0.0.1", int(os.environ["SPAWNER_PORT"])))
                held.listen(1)
                record["bound"] = True
            except OSError:
                record["bound"] = False
        if middle is not None:
            # wait (bounded) for the middle process to be gone: the parent reported is the one it re-parented to
            deadline = time.monotonic() + 5
            while os.getppid() == middle and time.monotonic() < deadline:
                time.sleep(0.01)
        record["ppid"] = os.getppid()
        path = os.path.join(DIR, f"{kind}-{os.getpid()}.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(record, fh)
        os.replace(path + ".tmp", path)
        deadline = time.monotonic() + lifetime
        while time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os._exit(0)


def spawn_setsid(ignore_term: bool) -> None:
    if os.fork() == 0:
        os.setsid()
        helper("setsid", ignore_term, LIFETIME)


def spawn_daemon(ignore_term: bool, lifetime: float = LIFETIME) -> None:
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            helper("daemon", ignore_term, lifetime, middle=os.getppid())
        os._exit(0)
    os.waitpid(middle, 0)


def helper_records() -> int:
    return len([n for n in os.listdir(DIR) if n.endswith(".json") and not n.startswith("agent-")])


def wait_for_helpers(count: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and helper_records() < count:
        time.sleep(0.02)


def main() -> None:
    mode, ignore_term = sys.argv[1], "--ignore-term" in sys.argv[2:]
    with open(os.path.join(DIR, f"agent-{os.getpid()}.json"), "w") as fh:   # so a test can clean up after us
        json.dump({"pid": os.getpid(), "start": start_ticks(os.getpid())}, fh)
    before = helper_records()
    if mode == "setsid":
        spawn_setsid(ignore_term)
    elif mode in ("daemon", "daemon-crash"):
        spawn_daemon(ignore_term)
    elif mode == "churn":
        for _ in range(3):
            spawn_daemon(ignore_term, lifetime=0.2)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    wait_for_helpers(before + (3 if mode == "churn" else 1))
    if mode == "daemon-crash":
        raise SystemExit(1)
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        time.sleep(0.05)


if __name__ == "__main__":
    main()
