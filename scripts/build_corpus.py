#!/usr/bin/env python3
"""Rebuild the development corpus for the stuck/runaway detectors from public agent trajectories.

Each source is a public git repository read with ``git show`` (a bare clone is enough). Every trajectory
becomes one run of our event schema (run_start, llm_call, tool_end with tool_name/args_hash/result_hash/
result_fingerprint/status, run_end) in one session per source, plus an outcome label from the objective
outcome recorded by the harness: stopped by a cost or iteration limit without finishing → true; finished
normally → false. Raw text never reaches the output: only hashes and fingerprints.

    python scripts/build_corpus.py --out corpus/ \
        --repo tau-bench=/path/to/tau-bench.git --repo tau2-bench=/path/to/tau2-bench.git \
        --repo mini-swe-agent=/path/to/mini-swe-agent.git --repo swe-agent=/path/to/SWE-agent.git

Sources and their labels are listed in docs/detection.md. Files over 8 MB are skipped (bounded memory).

A source missing its --repo is cloned (bare; shallow except tau2-bench, whose submissions live in its
history) from GitHub into ``<out>/_git``. Output: ``<out>/<source>[--<session>]/events.ndjson``,
``<out>/labels.json`` (run_id → bool), ``labels_tune.json`` and
``labels_heldout.json`` (a fixed split by hash of the run id) and ``<out>/sources.json`` (counts).
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
from typing import Any, Callable, Iterator

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from agentvigil.codec import digest  # noqa: E402
from agentvigil.fingerprint import result_fingerprint  # noqa: E402

GITHUB = {
    "tau-bench": "https://github.com/sierra-research/tau-bench",
    "mini-swe-agent": "https://github.com/gruckion/mini-swe-agent",
    "swe-agent": "https://github.com/SWE-agent/SWE-agent",
    "tau2-bench": "https://github.com/sierra-research/tau2-bench",
}
MAX_FILE_BYTES = 8 * 1024 * 1024
Run = tuple[str, list[dict], bool | None]   # run id, events, label (None: no objective outcome, skipped)


def git_files(git_dir: str, pattern: str) -> list[str]:
    out = subprocess.run(["git", f"--git-dir={git_dir}", "ls-tree", "-r", "-l", "HEAD"], check=True,
                         capture_output=True, text=True).stdout
    files = []
    for line in out.splitlines():
        meta, _, path = line.partition("\t")
        size = meta.split()[-1]
        if re.search(pattern, path) and size.isdigit() and int(size) <= MAX_FILE_BYTES:
            files.append(path)
    return sorted(files)


def git_json(git_dir: str, path: str) -> Any:
    raw = subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], check=True,
                         capture_output=True).stdout
    return json.loads(raw)


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


# -- tau-bench (tool-calling customer-service agent) ------------------------------------------------------
def tau_bench(git_dir: str) -> Iterator[Run]:
    max_steps = 30   # tau-bench's default max_num_steps
    for path in git_files(git_dir, r"^historical_trajectories/.*\.json$"):
        for rec in git_json(git_dir, path):
            traj = rec.get("traj") or []
            name = os.path.basename(path)[:-5]
            run_id = f"tau-bench:{name}:{rec.get('task_id')}:{rec.get('trial', 0)}"
            b = Builder("tau-bench", run_id, f"{name}:{rec.get('task_id')}", {"max_steps": max_steps})
            turns = 0
            pending: dict[str, tuple[str, Any]] = {}
            for msg in traj:
                role = msg.get("role")
                if role == "assistant":
                    turns += 1
                    b.llm()
                    for call in msg.get("tool_calls") or []:
                        fn = call.get("function") or {}
                        pending[call.get("id")] = (fn.get("name") or "?", fn.get("arguments"))
                    if not msg.get("tool_calls"):
                        b.tool("respond", msg.get("content"), "")   # a reply to the user is an action too
                elif role == "tool":
                    tool, args = pending.pop(msg.get("tool_call_id"), (msg.get("name") or "?", None))
                    content = msg.get("content") or ""
                    error = content.startswith("Error")
                    b.tool(tool, args, content, "error" if error else "ok", "tool_error" if error else None)
            limited = turns >= max_steps
            yield run_id, b.end("error" if limited else "ok"), limited


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
        per_call = (stats.get("instance_cost") or 0.0) / calls   # only the total is published: spread evenly
        exit_status = info.get("exit_status")
        instance = data.get("instance_id") or os.path.basename(path).split(".")[0]
        run_id = f"mini-swe-agent:{path.split('/')[1]}:{instance}"
        b = Builder("mini-swe-agent", run_id, instance)
        messages = data.get("messages") or []
        action: str | None = None
        for msg in messages[2:]:
            if msg.get("role") == "assistant":
                b.llm(per_call)
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
def swe_agent(git_dir: str) -> Iterator[Run]:
    for path in git_files(git_dir, r"\.traj$"):
        data = git_json(git_dir, path)
        if not isinstance(data, dict):
            continue
        info = data.get("info") or {}
        exit_status = str(info.get("exit_status") or "")
        stats = info.get("model_stats") or {}
        steps = data.get("trajectory") or []
        per_call = (stats.get("instance_cost") or 0.0) / max(1, len(steps))
        run_id = f"swe-agent:{path}"
        b = Builder("swe-agent", run_id, os.path.basename(path)[:-5])
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


SOURCES: dict[str, Callable[[str], Iterator[Run]]] = {
    "tau-bench": tau_bench, "tau2-bench": tau2_bench, "mini-swe-agent": mini_swe_agent,
    "swe-agent": swe_agent}


def ensure_repo(name: str, given: str | None, out: str) -> str:
    if given:
        return given
    target = os.path.join(out, "_git", f"{name}.git")
    if not os.path.isdir(target):
        depth = [] if name == "tau2-bench" else ["--depth", "1"]
        subprocess.run(["git", "clone", "--bare", *depth, GITHUB[name], target], check=True, timeout=1800)
    return target


def heldout(run_id: str) -> bool:
    return hashlib.blake2b(run_id.encode(), digest_size=2).digest()[0] % 2 == 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="corpus", help="output directory (git-ignored) (corpus)")
    parser.add_argument("--repo", action="append", default=[], metavar="SOURCE=GIT_DIR",
                        help=f"a local git dir of a source; sources: {', '.join(SOURCES)}")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated sources to build")
    args = parser.parse_args(argv)
    given = dict(r.split("=", 1) for r in args.repo)
    os.makedirs(args.out, exist_ok=True)
    labels: dict[str, bool] = {}
    counts: dict[str, dict] = {}
    for name in args.sources.split(","):
        started = time.monotonic()
        git_dir = ensure_repo(name, given.get(name), args.out)
        n = pos = skipped = events = 0
        files: dict[str, Any] = {}   # one session (directory) per session_id: a fresh pipeline in replay
        try:
            for run_id, run_events, label in SOURCES[name](git_dir):
                if label is None:
                    skipped += 1
                    continue
                session = run_events[0]["session_id"]
                fh = files.get(session)
                if fh is None:
                    directory = os.path.join(args.out, name if session == name else f"{name}--{session}")
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
        with open(os.path.join(args.out, f"labels_{split}.json"), "w") as fh:
            json.dump({k: v for k, v in labels.items() if heldout(k) == keep}, fh, indent=0, sort_keys=True)
    with open(os.path.join(args.out, "sources.json"), "w") as fh:
        json.dump(counts, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
