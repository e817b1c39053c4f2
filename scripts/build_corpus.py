#!/usr/bin/env python3
"""Rebuild the development corpus for the stuck/runaway detectors from public agent trajectories.

Each source is a public git repository read with ``git show`` (a bare clone is enough). Every trajectory
becomes one run of our event schema (run_start, llm_call, tool_end with tool_name/args_hash/result_hash/
result_fingerprint/status, run_end) in one session per source, plus an outcome label from the objective
outcome recorded by the harness: stopped by a cost or iteration limit without finishing → true; finished
normally → false; anything else → skipped. Raw text never reaches the output: only hashes and fingerprints.

    python scripts/build_corpus.py --out corpus/ \
        --repo tau-bench=/path/to/tau-bench.git --repo tau2-bench=/path/to/tau2-bench.git \
        --repo mini-swe-agent=/path/to/mini-swe-agent.git --repo swe-agent=/path/to/SWE-agent.git \
        --repo terminal-bench=/path/to/terminal-bench-leaderboard.git --repo tau-bench-fork=/path/to/fork.git \
        --repo multi-swe-bench=/path/to/multi-swe-bench-experiments.git \
        --repo swe-agent-lm=/path/to/swe-agent-trajectory-analysis.git

The ``<parent>@cost-limit`` sources are derived: the parent's recorded runs under a tighter cost limit
(``cost_limited``), read from the parent's repository.

Sources and their labels are listed in docs/detection.md. Files over --max-file-mb (8) are skipped (bounded
memory).

A source missing its --repo is cloned (bare; shallow except the sources in HISTORY, read from their history)
from GitHub into ``<out>/_git``. Output: ``<out>/<source>[--<session>]/events.ndjson``,
``<out>/labels.json`` (run_id → bool), ``labels_tune.json`` and
``labels_heldout.json`` (a fixed split by hash of the run id; ``labels_*_recorded.json``: the same without
the derived sources) and ``<out>/sources.json`` (counts).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from agentvigil.codec import digest  # noqa: E402
from agentvigil.fingerprint import result_fingerprint  # noqa: E402

GITHUB = {
    "tau-bench": "https://github.com/sierra-research/tau-bench",
    "terminal-bench": "https://github.com/laude-institute/terminal-bench-leaderboard",
    "tau-bench-fork": "https://github.com/Madhav-Kanda/tau-bench",
    "mini-swe-agent": "https://github.com/gruckion/mini-swe-agent",
    "swe-agent": "https://github.com/SWE-agent/SWE-agent",
    "tau2-bench": "https://github.com/sierra-research/tau2-bench",
    "multi-swe-bench": "https://github.com/multi-swe-bench/experiments",
    "swe-agent-lm": "https://github.com/lgetter/swe-agent-trajectory-analysis",
}
HISTORY = {"tau2-bench", "tau-bench-fork", "swe-agent-lm"}   # sources read from their history: cloned in full
MAX_FILE_BYTES = 8 * 1024 * 1024
Run = tuple[str, list[dict], bool | None]   # run id, events, label (None: no objective outcome, skipped)


def git_files(git_dir: str, pattern: str, rev: str = "HEAD") -> list[str]:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-l", rev], check=True,
                         capture_output=True, text=True).stdout
    files = []
    for line in out.splitlines():
        meta, _, path = line.partition("\t")
        size = meta.split()[-1]
        if re.search(pattern, path) and size.isdigit() and int(size) <= MAX_FILE_BYTES:
            files.append(path)
    return sorted(files)


def git_json(git_dir: str, path: str, rev: str = "HEAD") -> Any:
    raw = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"{rev}:{path}"], check=True,
                         capture_output=True).stdout
    return json.loads(raw)


def git_blob(git_dir: str, blob: str) -> bytes:
    return subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "-p", blob], check=True,
                          capture_output=True).stdout


class Builder:
    """Events of one run; timestamps are synthetic (one second per step): the detectors judge order only."""

    def __init__(self, source: str, run_id: str, task_id: str, limits: dict | None = None):
        self.base = {"agent_id": source, "session_id": source, "run_id": run_id, "task_id": task_id}
        self.ts = 1_700_000_000.0
        self.step = 0
        self.events: list[dict] = []
        self.add("run_start", detail=limits or None)

    def add(self, event_type: str, **fields: Any) -> None:
        self.ts += 0.5
        event = {"event_type": event_type, "ts": self.ts, **self.base, "step_index": self.step}
        event.update({k: v for k, v in fields.items() if v is not None})
        self.events.append(event)

    def llm(self, cost: float | None = None, input_tokens: int | None = None, output_tokens: int | None = None,
            model: str | None = None) -> None:
        self.add("llm_call", provider="corpus", model=model or "unknown", cost_usd=cost,
                 input_tokens=input_tokens, output_tokens=output_tokens)

    def tool(self, name: str, args: Any, result: Any, status: str = "ok", error_kind: str | None = None) -> None:
        self.step += 1
        self.add("tool_end", tool_name=name, args_hash=digest(args), result_hash=digest(result),
                 result_fingerprint=result_fingerprint(result), status=status, error_kind=error_kind)

    def end(self, status: str) -> list[dict]:
        self.add("run_end", status=status)
        return self.events


def declared_limits(config: object, path: tuple[str, ...], **names: str) -> dict | None:
    """The positive numbers a harness's saved config holds at ``path``, renamed (``step_limit="max_steps"``) to
    the keys ``run_start.detail`` declares; None when there are none or the config is not shaped so."""
    for key in path:
        config = config.get(key) if isinstance(config, dict) else None
    if not isinstance(config, dict):
        return None
    limits = {ours: config[theirs] for theirs, ours in names.items()
              if isinstance(config.get(theirs), (int, float)) and not isinstance(config[theirs], bool)
              and config[theirs] > 0}
    return limits or None


# -- tau-bench (tool-calling customer-service agent) ------------------------------------------------------
TAU_MAX_STEPS = 30   # tau-bench's default max_num_steps


def tau_run(b: Builder, traj: list) -> bool | None:
    """Replay one tau-bench trajectory into ``b``; its label: the step limit reached without the conversation
    ending → true; ended by the user (###STOP###) or a transfer to a human → false; anything else → None."""
    turns = 0
    ended = False
    pending: dict[str, tuple[str, Any]] = {}
    for msg in traj:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role == "assistant":
            turns += 1
            b.llm()
            for call in msg.get("tool_calls") or []:
                fn = call.get("function") or {}
                pending[call.get("id")] = (fn.get("name") or "?", fn.get("arguments"))
                ended = ended or fn.get("name") == "transfer_to_human_agents"
            if not msg.get("tool_calls"):
                b.tool("respond", msg.get("content"), "")   # a reply to the user is an action too
        elif role == "tool":
            tool, args = pending.pop(msg.get("tool_call_id"), (msg.get("name") or "?", None))
            content = msg.get("content") or ""
            error = content.startswith("Error")
            b.tool(tool, args, content, "error" if error else "ok", "tool_error" if error else None)
        elif role == "user":
            ended = ended or "###STOP###" in str(msg.get("content") or "")
    if ended:
        return False
    return True if turns == TAU_MAX_STEPS else None


def tau_bench(git_dir: str) -> Iterator[Run]:
    for path in git_files(git_dir, r"^historical_trajectories/.*\.json$"):
        for rec in git_json(git_dir, path):
            name = os.path.basename(path)[:-5]
            run_id = f"tau-bench:{name}:{rec.get('task_id')}:{rec.get('trial', 0)}"
            b = Builder("tau-bench", run_id, f"{name}:{rec.get('task_id')}", {"max_steps": TAU_MAX_STEPS})
            label = tau_run(b, rec.get("traj") or [])
            yield run_id, b.end("ok" if label is False else "error"), label


# -- a tau-bench fork's committed experiment results (every version in its history) ------------------------
def git_history_blobs(git_dir: str, pattern: str, exclude: str = r"^$") -> dict[str, str]:
    """blob -> path of every file matching ``pattern`` in any commit (each content once, its newest path)."""
    git = ["git", f"--git-dir={git_dir}"]
    commits = subprocess.run([*git, "log", "--all", "--format=%H"], check=True, capture_output=True,
                             text=True).stdout.split()
    found: dict[str, str] = {}
    for commit in commits:   # newest first
        listing = subprocess.run([*git, "ls-tree", "-r", "-l", commit], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            meta, _, path = line.partition("\t")
            _, _, blob, size = meta.split()
            if re.search(pattern, path) and not re.search(exclude, path) and size.isdigit() \
                    and int(size) <= MAX_FILE_BYTES:
                found.setdefault(blob, path)
    return found


def tau_bench_fork(git_dir: str) -> Iterator[Run]:
    seen: set[str] = set()   # experiments copy results between files: each trajectory once
    for blob, path in sorted(git_history_blobs(git_dir, r"\.json$", r"^historical_trajectories/").items(),
                             key=lambda kv: (kv[1], kv[0])):
        try:
            data = json.loads(git_blob(git_dir, blob))
        except ValueError:
            continue
        if not (isinstance(data, list) and data and isinstance(data[0], dict) and "traj" in data[0]):
            continue   # not a list of tau-bench run results
        experiment = path.split("/")[0] if "/" in path else os.path.splitext(path)[0]
        for rec in data:
            traj = rec.get("traj") if isinstance(rec, dict) else None
            if not isinstance(traj, list):
                continue
            key = digest(traj)
            if key in seen:
                continue
            seen.add(key)
            run_id = f"tau-bench-fork:{path}@{blob[:8]}:{rec.get('task_id')}:{rec.get('trial', 0)}"
            b = Builder("tau-bench-fork", run_id, str(rec.get("task_id")), {"max_steps": TAU_MAX_STEPS})
            # one agent per experiment directory: each has its own prompt/strategy, so its own baseline
            b.base.update(session_id=re.sub(r"[^\w.-]", "_", experiment)[:80],
                          agent_id=f"tau-bench-fork/{experiment}")
            b.events[0].update(b.base)
            label = tau_run(b, traj)
            yield run_id, b.end("ok" if label is False else "error"), label


# -- mini-swe-agent (bash-only coding agent, SWE-bench Verified) --------------------------------------------
_BASH = re.compile(r"```bash\s*\n(.*?)```", re.S)
_RC = re.compile(r"<returncode>(-?\d+)</returncode>")


def mini_swe_agent(git_dir: str) -> Iterator[Run]:
    for path in git_files(git_dir, r"\.traj\.json$"):
        data = git_json(git_dir, path)
        if not isinstance(data, dict):
            continue
        info = data.get("info") or {}
        stats = info.get("model_stats") or {}
        calls = max(1, int(stats.get("api_calls") or 1))
        per_call = (stats.get("instance_cost") or 0.0) / calls   # when a call records no usage: spread evenly
        exit_status = info.get("exit_status")
        instance = data.get("instance_id") or os.path.basename(path).split(".")[0]
        run_id = f"mini-swe-agent:{path.split('/')[1]}:{instance}"
        # the harness's own limits, as the agent ran with them (its config is saved in the trajectory)
        limits = declared_limits(info, ("config", "agent"), step_limit="max_steps", cost_limit="max_cost_usd")
        b = Builder("mini-swe-agent", run_id, instance, limits)
        messages = data.get("messages") or []
        action: str | None = None
        for msg in messages[2:]:
            if msg.get("role") == "assistant":
                # each call's usage as the provider returned it (cost, prompt and completion tokens)
                usage = ((msg.get("extra") or {}).get("response") or {}).get("usage") or {}
                cost = usage.get("cost")
                b.llm(cost if isinstance(cost, (int, float)) else per_call,
                      usage.get("prompt_tokens"), usage.get("completion_tokens"))
                found = _BASH.findall(msg.get("content") or "")
                action = found[0] if len(found) == 1 else None
                if action is None:   # the harness rejects a reply without exactly one command
                    b.tool("bash", None, None, "rejected", "format_error")
            elif msg.get("role") == "user" and action is not None:
                content = msg.get("content") or ""
                rc = _RC.search(content)
                ok = rc is None or rc.group(1) == "0"
                b.tool("bash", action, _RC.sub("", content), "ok" if ok else "error", None if ok else "exit_code")
                action = None
        label = {"Submitted": False, "LimitsExceeded": True}.get(exit_status or "")
        yield run_id, b.end("ok" if label is False else "error"), label


# -- SWE-agent (.traj: thought/action/observation) ---------------------------------------------------------
_HARNESS_EXIT = re.compile(r"^exit_\w+$")   # the step SWE-agent appends when a limit stops it


def swe_agent_runs(git_dir: str, source: str, pattern: str, rev: str = "HEAD",
                   session: Callable[[str], str] | None = None) -> Iterator[Run]:
    """SWE-agent trajectories (0.x and 1.x): ``exit_status`` containing ``exit_cost`` (cost or call limit),
    ``exit_context`` or ``exit_format`` → true (also when the harness then autosubmitted: "submitted
    (exit_cost)"), ``submitted`` → false, anything else skipped. The step the harness appends on a limit
    (action ``exit_cost``, …) is dropped: it is the harness's, not the agent's, and names the label. Only the
    run's total cost is recorded: it is spread evenly over its calls. Limits come from the trajectory's
    ``replay_config`` when it has one."""
    for path in git_files(git_dir, pattern, rev):
        try:
            data = git_json(git_dir, path, rev)
        except (subprocess.CalledProcessError, ValueError):   # listed but absent from the snapshot
            continue
        if not isinstance(data, dict):
            continue
        info = data.get("info") or {}
        exit_status = str(info.get("exit_status") or "")
        stats = info.get("model_stats") or {}
        steps = [s for s in data.get("trajectory") or [] if isinstance(s, dict)]
        if steps and _HARNESS_EXIT.match(str(steps[-1].get("action") or "").strip()):
            steps = steps[:-1]
        per_call = (stats.get("instance_cost") or 0.0) / max(1, int(stats.get("api_calls") or len(steps) or 1))
        run_id = f"{source}:{path}"
        b = Builder(source, run_id, os.path.basename(path)[:-5], swe_agent_limits(data))
        if session is not None:
            b.base.update(session_id=session(path), agent_id=f"{source}/{session(path)}")
            b.events[0].update(b.base)
        for step in steps:
            b.llm(per_call)
            act = str(step.get("action") or "").strip()
            tool = act.split()[0] if act else "?"
            b.tool(tool, act, step.get("observation"))
        if "exit_cost" in exit_status or "exit_context" in exit_status or "exit_format" in exit_status:
            label: bool | None = True
        elif exit_status == "submitted":
            label = False
        else:
            label = None
        yield run_id, b.end("ok" if label is False else "error"), label


def swe_agent_limits(data: dict) -> dict | None:
    config = data.get("replay_config")
    if isinstance(config, str):   # SWE-agent 1.x saves it as a JSON string
        try:
            config = json.loads(config)
        except ValueError:
            return None
    return declared_limits(config, ("agent", "model"), per_instance_call_limit="max_steps",
                           per_instance_cost_limit="max_cost_usd")


def swe_agent(git_dir: str) -> Iterator[Run]:
    return swe_agent_runs(git_dir, "swe-agent", r"\.traj$")


MULTI_SWE_RUNS = r"^evaluation/java/verified/[^/]+/trajs/[^/]+\.traj$"


def multi_swe_bench(git_dir: str) -> Iterator[Run]:
    """SWE-agent on SWE-bench-java, five models (one agent each): the Multi-SWE-bench experiments."""
    return swe_agent_runs(git_dir, "multi-swe-bench", MULTI_SWE_RUNS, session=lambda path: path.split("/")[3])


SWE_AGENT_LM_COMMIT = "c9b7bd1d0cd0aee2965ec303eb4ec3035eed3751"   # the trajectories were removed after it


def swe_agent_lm(git_dir: str) -> Iterator[Run]:
    """SWE-agent with SWE-agent-LM-32B on SWE-bench Verified (75-call and $3.5 limits, in its replay_config)."""
    return swe_agent_runs(git_dir, "swe-agent-lm", r"^20250511_sweagent_lm_32b/trajs/.*\.traj$",
                          rev=SWE_AGENT_LM_COMMIT)


# -- tau2-bench leaderboard submissions (several agent frameworks; termination_reason is recorded) ----------
TAU2_DIRS = ("web/leaderboard/public/submissions", "submission-file")


def tau2_files(git_dir: str) -> dict[str, str]:
    """path -> blob of every submission trajectory file in the history (the newest version of each)."""
    git = ["git", f"--git-dir={git_dir}"]
    commits = subprocess.run([*git, "log", "--all", "--format=%H", "--", *TAU2_DIRS], check=True,
                             capture_output=True, text=True).stdout.split()
    found: dict[str, str] = {}
    for commit in commits:   # newest first
        listing = subprocess.run([*git, "ls-tree", "-r", "-l", commit, "--", *TAU2_DIRS], capture_output=True,
                                 text=True).stdout
        for line in listing.splitlines():
            meta, _, path = line.partition("\t")
            _, _, blob, size = meta.split()
            if "/trajectories/" in path and path.endswith(".json") and size.isdigit() \
                    and int(size) <= MAX_FILE_BYTES:
                found.setdefault(path, blob)
    return found


def tau2_bench(git_dir: str) -> Iterator[Run]:
    for path, blob in sorted(tau2_files(git_dir).items()):
        raw = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "-p", blob], check=True,
                             capture_output=True).stdout
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        submission = path.split("/")[-3]
        for sim in data.get("simulations") or []:
            reason = sim.get("termination_reason")
            label = {"max_steps": True, "too_many_errors": True, "user_stop": False, "agent_stop": False}.get(reason)
            run_id = f"tau2:{submission}:{os.path.basename(path)}:{sim.get('id')}"
            b = Builder("tau2-bench", run_id, f"{sim.get('task_id')}:{sim.get('trial')}")
            # one agent per file (a file is one agent configuration); scoring reports them under "tau2-bench"
            b.base.update(session_id=submission, agent_id=f"tau2-bench/{os.path.basename(path)[:-5]}")
            b.events[0].update(b.base)
            pending: dict[str, tuple[str, Any]] = {}
            for msg in sim.get("messages") or []:
                role = msg.get("role")
                if role == "assistant":
                    usage = msg.get("usage") or {}
                    b.llm(msg.get("cost") or None, usage.get("prompt_tokens"), usage.get("completion_tokens"))
                    calls = msg.get("tool_calls") or []
                    for call in calls:
                        pending[call.get("id")] = (call.get("name") or "?", call.get("arguments"))
                    if not calls:
                        b.tool("respond", msg.get("content"), "")
                elif role == "tool":
                    tool, args = pending.pop(msg.get("id"), ("?", None))
                    error = bool(msg.get("error"))
                    b.tool(tool, args, msg.get("content") or "", "error" if error else "ok",
                           "tool_error" if error else None)
            yield run_id, b.end("error" if label else "ok"), label


# -- Terminal-Bench leaderboard: mini-swe-agent runs, read from the terminal log the harness recorded --------
_TB_SUBMISSIONS = r"^results/[^/]+/[^/]*swe-agent-mini[^/]*/"   # the one submission with per-step logs
_ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07")
_MINI_STEP = re.compile(r"mini-swe-agent \(step (\d+), \$([0-9.]+)\):")
_MINI_USER = re.compile(r"\n\s*User:\s*\n")
_RULE = re.compile(r"\n─{8,}")   # the rule the agent prints between steps
_SPINNER = re.compile(r"^[^\w\n`]*Waiting for the LM to respond\.\.\.[ \t]*$", re.M)
_SUBMIT = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


def terminal_bench(git_dir: str) -> Iterator[Run]:
    listing = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-l", "HEAD", "--", "results"],
                             check=True, capture_output=True, text=True).stdout
    blobs: dict[str, str] = {}
    for line in listing.splitlines():
        meta, _, path = line.partition("\t")
        _, _, blob, size = meta.split()
        if re.search(_TB_SUBMISSIONS, path) and size.isdigit() and int(size) <= MAX_FILE_BYTES:
            blobs[path] = blob
    for path in sorted(p for p in blobs if p.endswith("/results.json")):
        trial = path[:-len("/results.json")]
        log_blob = blobs.get(f"{trial}/sessions/agent.log")
        if log_blob is None:
            continue
        try:
            result = json.loads(git_blob(git_dir, blobs[path]))
        except ValueError:
            continue
        parts = trial.split("/")
        run_id = f"terminal-bench:{parts[2]}:{parts[-1]}"
        b = Builder("terminal-bench", run_id, str(result.get("task_id") or parts[-2]))
        b.base.update(session_id=parts[2], agent_id="terminal-bench/mini-swe-agent")
        b.events[0].update(b.base)
        text = _ANSI.sub("", git_blob(git_dir, log_blob).decode("utf-8", "replace"))
        text = _SPINNER.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
        marks = list(_MINI_STEP.finditer(text))
        spent = 0.0
        last_action: str | None = None
        for i, mark in enumerate(marks):
            block = text[mark.end():marks[i + 1].start() if i + 1 < len(marks) else len(text)]
            total = float(mark.group(2))   # the agent prints its running cost: per call is the difference
            b.llm(max(0.0, round(total - spent, 6)) or None, model="claude-sonnet-4")
            spent = max(spent, total)
            reply, observation = (_MINI_USER.split(block, maxsplit=1) + [""])[:2]
            observation = _RULE.split(observation, maxsplit=1)[0].split("Saved trajectory to", 1)[0].strip()
            found = _BASH.findall(reply)
            last_action = found[0].strip() if len(found) == 1 else None
            if last_action is None:
                b.tool("bash", None, None, "rejected", "format_error")
                continue
            rc = _RC.search(observation)
            ok = rc is None or rc.group(1) == "0"
            b.tool("bash", last_action, _RC.sub("", observation), "ok" if ok else "error", None if ok else "exit_code")
        # Healthy runs only: the agent's last action is its submit command → false. Nothing here is a true
        # positive: the harness's "agent_timeout" is recorded on runs whose log shows the agent submitting (most
        # end within 2 s of the harness's agent_ended_at), and the log's "LimitsExceeded" lines are tracebacks of
        # crashes; runs without a submit (crashes, installation failures) are skipped.
        submitted = last_action is not None and _SUBMIT in last_action
        label: bool | None = False if submitted else None
        yield run_id, b.end("ok" if label is False else "error"), label


# -- a tighter cost limit on recorded runs with per-call costs (derived sources) --------------------------
LIMIT_FACTOR = 2.0   # the derived limit, × the source's median run cost (coding harnesses: 1.3–3× is common)


def cost_limited(parent: str, factor: float = LIMIT_FACTOR) -> Callable[[list[Run]], Iterator[Run]]:
    """The parent source's healthy runs as the harness would have run them under a cost limit of ``factor`` ×
    the median run's cost: a run whose cumulative cost reaches the limit before its last call is cut where the
    harness stops it (after that call's action, before the next call, as mini-swe-agent checks its limit) and
    is a positive; every other run is healthy, unchanged but for the declared limit. Runs are the recorded
    ones; only the limit is hypothetical, so the positives are runs that spend a budget, not runs that loop."""
    def build(recorded: list[Run]) -> Iterator[Run]:
        runs = [(run_id, events) for run_id, events, label in recorded if label is False]
        totals = sorted(sum(e.get("cost_usd") or 0.0 for e in events if e["event_type"] == "llm_call")
                        for _, events in runs)
        if not runs or not totals[len(totals) // 2]:
            return
        limit = round(factor * totals[len(totals) // 2], 6)
        name = f"{parent}@cost-limit"
        for run_id, events in runs:
            spent, crossed, cut = 0.0, False, None
            for i, event in enumerate(events):
                if event["event_type"] == "llm_call":
                    if crossed:
                        cut = i   # the next query: refused by the limit
                        break
                    spent += event.get("cost_usd") or 0.0
                    crossed = spent >= limit
            kept = [dict(e) for e in (events[:cut] if cut is not None else events[:-1])]
            new_id = f"{name}:{run_id.split(':', 1)[1]}"
            session = events[0]["session_id"]
            base = {"run_id": new_id, "session_id": name if session == parent else f"{name}--{session}",
                    "agent_id": name + events[0]["agent_id"][len(parent):]}
            for event in kept:
                event.update(base)
            kept[0]["detail"] = {**(kept[0].get("detail") or {}), "max_cost_usd": limit}
            end = {**events[-1], **base, "ts": kept[-1]["ts"] + 0.5, "status": "error" if cut is not None else "ok"}
            yield new_id, [*kept, end], cut is not None
    return build


SOURCES: dict[str, Callable[[str], Iterator[Run]]] = {
    "tau-bench": tau_bench, "tau2-bench": tau2_bench, "mini-swe-agent": mini_swe_agent,
    "swe-agent": swe_agent, "terminal-bench": terminal_bench, "tau-bench-fork": tau_bench_fork,
    "multi-swe-bench": multi_swe_bench, "swe-agent-lm": swe_agent_lm}
# derived source -> (its parent, what makes it from the parent's runs)
DERIVED = {f"{parent}@cost-limit": (parent, cost_limited(parent)) for parent in ("mini-swe-agent", "terminal-bench")}
NAMES = [*SOURCES, *DERIVED]


def ensure_repo(name: str, given: str | None, out: str) -> str:
    if given:
        return given
    target = os.path.join(out, "_git", f"{name}.git")
    if not os.path.isdir(target):
        depth = [] if name in HISTORY else ["--depth", "1"]
        subprocess.run(["git", "clone", "--bare", *depth, GITHUB[name], target], check=True, timeout=1800)
    return target


def heldout(run_id: str) -> bool:
    source, _, rest = run_id.partition(":")
    if "@" in source:   # a derived run sits in the same half as the recorded run it comes from
        run_id = f"{source.split('@', 1)[0]}:{rest}"
    return hashlib.blake2b(run_id.encode(), digest_size=2).digest()[0] % 2 == 1


def main(argv: list[str] | None = None) -> int:
    global MAX_FILE_BYTES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="corpus", help="output directory (git-ignored) (corpus)")
    parser.add_argument("--repo", action="append", default=[], metavar="SOURCE=GIT_DIR",
                        help=f"a local git dir of a source; sources: {', '.join(SOURCES)}")
    parser.add_argument("--sources", default=",".join(NAMES), help="comma-separated sources to build")
    parser.add_argument("--max-file-mb", type=float, default=MAX_FILE_BYTES / 2**20,
                        help="skip source files larger than this (bounds memory) (8)")
    args = parser.parse_args(argv)
    MAX_FILE_BYTES = int(args.max_file_mb * 2**20)
    given = dict(r.split("=", 1) for r in args.repo)
    os.makedirs(args.out, exist_ok=True)
    labels: dict[str, bool] = {}
    counts: dict[str, dict] = {}
    names = args.sources.split(",")
    parents = {DERIVED[name][0] for name in names if name in DERIVED}
    recorded: dict[str, list[Run]] = {}   # a parent's runs, read once for the sources derived from it
    for name in names:
        started = time.monotonic()
        runs: Iterable[Run]
        if name in DERIVED:
            parent, derive = DERIVED[name]
            if parent not in recorded:
                recorded[parent] = list(SOURCES[parent](ensure_repo(parent, given.get(parent), args.out)))
            runs = derive(recorded[parent])
        else:
            runs = SOURCES[name](ensure_repo(name, given.get(name), args.out))
            if name in parents:
                runs = recorded[name] = list(runs)
        n = pos = skipped = events = 0
        files: dict[str, Any] = {}   # one session (directory) per session_id: a fresh pipeline in replay
        try:
            for run_id, run_events, label in runs:
                if label is None:
                    skipped += 1
                    continue
                session = run_events[0]["session_id"]
                fh = files.get(session)
                if fh is None:
                    directory = os.path.join(args.out, session if session.startswith(name) else f"{name}--{session}")
                    os.makedirs(directory, exist_ok=True)
                    fh = files[session] = open(os.path.join(directory, "events.ndjson"), "w", encoding="utf-8")
                for event in run_events:
                    fh.write(json.dumps(event, separators=(",", ":")) + "\n")
                labels[run_id] = label
                n, pos, events = n + 1, pos + int(label), events + len(run_events)
        finally:
            for fh in files.values():
                fh.close()
        counts[name] = {"sessions": len(files), "runs": n, "positive": pos, "negative": n - pos,
                        "skipped_no_outcome": skipped,
                        "events": events, "seconds": round(time.monotonic() - started, 1)}
        print(f"{name}: {counts[name]}", file=sys.stderr)
    with open(os.path.join(args.out, "labels.json"), "w") as fh:
        json.dump(labels, fh, indent=0, sort_keys=True)
    for split, keep in (("tune", False), ("heldout", True)):
        half = {k: v for k, v in labels.items() if heldout(k) == keep}
        with open(os.path.join(args.out, f"labels_{split}.json"), "w") as fh:
            json.dump(half, fh, indent=0, sort_keys=True)
        # the recorded outcomes alone (no derived source), for figures that count each trajectory once
        with open(os.path.join(args.out, f"labels_{split}_recorded.json"), "w") as fh:
            json.dump({k: v for k, v in half.items() if "@" not in k.split(":", 1)[0]}, fh, indent=0,
                      sort_keys=True)
    with open(os.path.join(args.out, "sources.json"), "w") as fh:
        json.dump(counts, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
