"""Helpers the child started outside its process group (``setsid``, daemonised) stop with it, and nothing that
cannot be proven a descendant of the child is ever signalled.

Every process a test starts (directly, or through the spawner child) is recorded with its /proc start time and
killed by pid at the end if it is still that process. Deadlines are generous; nothing asserts a duration.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agentvigil.supervise import SupervisePolicy, Supervisor
from agentvigil.supervise import descendants as desc
from agentvigil.supervise.supervisor import EXIT_GAVE_UP, EXIT_OK

from .conftest import free_port, wait_until

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc and subreaper")

SPAWNER = Path(__file__).parent / "spawner_agent.py"
# No Monitor in the spawner: only exits and stops are watched.
QUIET = dict(port=0, poll_interval=0.05, startup_timeout=0.0, liveness_timeout=0.0, progress_timeout=0.0,
             cooldown=0.2, max_restarts=1, restart_window=60.0, stop_grace=2.0, watchdog=False)


def stat_of(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start ticks) from /proc, None when the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def running(record: dict) -> bool:
    """The recorded process still exists (same start time: not a reused pid) and is not a zombie."""
    stat = stat_of(record["pid"])
    return stat is not None and stat[2] == record["start"] and stat[0] not in "ZX"


def records(directory: Path, kind: str) -> list[dict]:
    found = []
    for path in sorted(directory.glob(f"{kind}-*.json")):
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:   # being written
            continue
    return found


def zombie_children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return [c for c in children if (stat_of(c) or ("",))[0] == "Z"]


@pytest.fixture
def spawned(tmp_path):
    """The spawner's directory; at the end, every process it recorded that is still running is SIGKILLed."""
    directory = tmp_path / "spawned"
    directory.mkdir()
    yield directory
    for record in records(directory, "*"):
        if running(record):
            try:
                os.kill(record["pid"], signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def in_process(tmp_path, spawned):
    """A Supervisor on a thread (no subreaper: the test process is never made one)."""
    started = []

    def start(mode: str, *args: str, **overrides):
        from .conftest import Running

        values = dict(QUIET, record_dir=str(tmp_path / "rec"), agent="spawner")
        values.update(overrides)
        env = dict(os.environ, SPAWNER_DIR=str(spawned), OTEL_SDK_DISABLED="true")
        run = Running(Supervisor([sys.executable, str(SPAWNER), mode, *args], SupervisePolicy().with_values(values),
                                 registry=CollectorRegistry(), environ=env))
        started.append(run)
        return run

    yield start
    for run in started:
        run.supervisor.request_stop()
        run.supervisor.request_stop()
        run.thread.join(10)
        run.supervisor.close()


@pytest.fixture
def cli(tmp_path, spawned):
    """``agentvigil supervise`` as its own process, the way it runs in production (subreaper included)."""
    started: list[subprocess.Popen] = []

    def start(mode: str, *flags: str, env_extra: dict | None = None) -> subprocess.Popen:
        env = dict(os.environ, SPAWNER_DIR=str(spawned), OTEL_SDK_DISABLED="true", **(env_extra or {}))
        env.pop("NOTIFY_SOCKET", None)
        argv = [sys.executable, "-m", "agentvigil.supervise", "supervise", "--addr", "127.0.0.1", "--port", "0",
                "--record-dir", str(tmp_path / "rec"), "--agent", "spawner", "--poll-interval", "0.05",
                "--startup-timeout", "0", "--liveness-timeout", "0", "--progress-timeout", "0",
                "--cooldown", "0.2", "--watchdog", "false", *flags, "--", sys.executable, str(SPAWNER), mode]
        with open(tmp_path / f"supervise-{len(started)}.log", "w") as log:
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()          # by its own pid; the spawner's processes are cleaned up by `spawned`
        proc.wait(10)


def journal(tmp_path: Path) -> list[dict]:
    path = tmp_path / "rec" / "supervisor-spawner.ndjson"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def one_helper(spawned: Path, kind: str) -> dict:
    return wait_until(lambda: records(spawned, kind), 15, f"the {kind} helper")[0]


# -- the defect: helpers outside the child's process group outlived it ------------------------------------
def test_setsid_helper_is_stopped_with_the_child(in_process, spawned, tmp_path):
    run = in_process("setsid")
    helper = one_helper(spawned, "setsid")
    agent = records(spawned, "agent")[0]
    assert helper["sid"] == helper["pid"] and helper["ppid"] == agent["pid"]   # left the child's group and session
    run.supervisor.request_stop()
    assert run.join(15) == EXIT_OK
    wait_until(lambda: not running(helper), 10, "the setsid helper to be stopped")
    done = [r for r in journal(tmp_path) if r["type"] == "descendants"]
    assert done and done[-1]["stopped"] == 1 and done[-1]["sigkilled"] == 0 and done[-1]["left"] == []


def test_helper_ignoring_sigterm_is_killed_after_the_grace(in_process, spawned, tmp_path):
    run = in_process("setsid", "--ignore-term", stop_grace=0.5)
    helper = one_helper(spawned, "setsid")
    run.supervisor.request_stop()
    assert run.join(15) == EXIT_OK
    assert not running(helper)                        # run() returns only once the descendants are gone
    done = [r for r in journal(tmp_path) if r["type"] == "descendants"][-1]
    assert done["stopped"] == 1 and done["sigkilled"] == 1


def test_daemonised_helper_is_stopped_when_supervise_gets_sigterm(cli, spawned):
    sup = cli("daemon")
    helper = one_helper(spawned, "daemon")
    assert helper["ppid"] == sup.pid       # its parent exited: re-parented to supervise, the subreaper
    os.kill(sup.pid, signal.SIGTERM)
    assert sup.wait(20) == EXIT_OK
    wait_until(lambda: not running(helper), 10, "the daemonised helper to be stopped")


def test_restart_stops_the_old_daemon_before_the_new_copy_starts(cli, spawned, tmp_path):
    # Each copy's daemon holds the same loopback port: the second can bind it only if the first is gone.
    sup = cli("daemon-crash", "--max-restarts", "1", env_extra={"SPAWNER_PORT": str(free_port())})
    assert sup.wait(30) == EXIT_GAVE_UP
    daemons = wait_until(lambda: len(records(spawned, "daemon")) == 2 and records(spawned, "daemon"), 10,
                         "two daemons")
    assert [d["bound"] for d in daemons] == [True, True]
    assert not any(running(d) for d in daemons)
    # reaping the re-parented daemons never took the child's own exit status
    exits = [r for r in journal(tmp_path) if r["type"] == "exit"]
    assert [(r["kind"], r.get("exit_code")) for r in exits] == [("crash", 1), ("crash", 1)]


def test_orphans_that_exit_are_reaped(cli, spawned):
    sup = cli("churn")
    helpers = wait_until(lambda: len(records(spawned, "daemon")) == 3 and records(spawned, "daemon"), 15,
                         "three short-lived daemons")
    assert {h["ppid"] for h in helpers} == {sup.pid}
    wait_until(lambda: not any(running(h) for h in helpers), 10, "the daemons to exit by themselves")
    wait_until(lambda: not zombie_children(sup.pid), 10, "supervise to reap its re-parented orphans")
    os.kill(sup.pid, signal.SIGTERM)
    assert sup.wait(20) == EXIT_OK


def test_replicas_stop_the_orphans_they_could_not_attribute_at_exit(cli, spawned):
    sup = cli("daemon", "--replicas", "2")
    daemons = wait_until(lambda: len(records(spawned, "daemon")) == 2 and records(spawned, "daemon"), 15,
                         "a daemon per replica")
    assert {d["ppid"] for d in daemons} == {sup.pid}
    os.kill(sup.pid, signal.SIGTERM)
    assert sup.wait(20) == EXIT_OK
    wait_until(lambda: not any(running(d) for d in daemons), 10, "both daemons to be stopped")


# -- never a process that is not proven ours ----------------------------------------------------------------
@pytest.fixture
def bystander():
    """A process of the test's own, outside any supervised child, killed by its pid at the end."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(10)


def test_a_process_outside_the_childs_tree_is_never_signalled(in_process, spawned, bystander):
    run = in_process("setsid")
    helper = one_helper(spawned, "setsid")
    run.supervisor.request_stop()
    assert run.join(15) == EXIT_OK
    wait_until(lambda: not running(helper), 10, "the helper to be stopped")
    assert bystander.poll() is None and stat_of(bystander.pid)[0] != "Z"


def test_a_recycled_pid_is_never_signalled(bystander):
    start = desc.read_stat(bystander.pid).start
    assert not desc.signal_process(bystander.pid, start + 1, signal.SIGKILL)   # another start time: another process
    assert not desc.signal_process(1, desc.read_stat(1).start, 0)            # pid 1: never, not even signal 0
    assert bystander.poll() is None
    tree = desc.Descendants(bystander.pid)
    tree.known[bystander.pid] = start + 1          # as if a tracked descendant had exited and its pid been reused
    assert tree.signal_all(signal.SIGTERM) == 0 and tree.alive() == []
    assert bystander.poll() is None


def test_descendants_beyond_the_cap_are_counted_once(monkeypatch):
    monkeypatch.setattr(desc, "MAX_DESCENDANTS", 2)
    root = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & sleep 60 & wait"], start_new_session=True)
    kids = []
    try:
        kids = wait_until(lambda: len(desc.proven_children(root.pid, desc.read_stat(root.pid).start)) == 3
                          and desc.proven_children(root.pid, desc.read_stat(root.pid).start), 10, "three sleeps")
        errors = []
        tree = desc.Descendants(root.pid, on_error=lambda component, exc: errors.append((component, str(exc))))
        tree.scan()
        tree.scan()
        assert len(tree.known) == 2 and tree.overflow
        assert errors == [(desc.COMPONENT, f"more than 2 descendants of pid {root.pid}: the rest are not tracked")]
    finally:
        for kid in kids:
            desc.signal_process(kid.pid, kid.start, signal.SIGKILL)   # by pid, after checking it is that sleep
        root.kill()
        root.wait(10)


def test_internal_failures_are_counted_and_supervision_goes_on(in_process, spawned, monkeypatch):
    def broken(*args):
        raise RuntimeError("no /proc today")

    monkeypatch.setattr(desc, "proven_children", broken)
    run = in_process("setsid")
    one_helper(spawned, "setsid")
    run.supervisor.request_stop()
    assert run.join(15) == EXIT_OK                   # the helper escapes (cleaned up by the fixture), nothing raised
    assert run.metric("agentvigil_internal_errors_total", component=desc.COMPONENT) >= 1
