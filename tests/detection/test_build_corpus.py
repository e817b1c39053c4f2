import importlib.util
import json
import os
import subprocess

from agentvigil.codec import decode

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "build_corpus.py")


def load():
    spec = importlib.util.spec_from_file_location("build_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def git_repo(path, files, *later):
    """A git repo whose first commit holds ``files`` and each of ``later`` (dicts) one more commit."""
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for extra in later:
        commit_files(path, files)
        files = extra
    return commit_files(path, files)


def commit_files(path, files):
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data if isinstance(data, str) else json.dumps(data))
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm",
                    "data"], check=True)
    return str(path / ".git")


def test_builds_labelled_runs_without_raw_text(tmp_path):
    build = load()
    secret = "the customer's address is 12 Hidden Lane"
    call = {"id": "c1", "function": {"name": "get_user", "arguments": "{}"}}
    tau = [{"task_id": 1, "trial": 0, "traj": [{"role": "assistant", "tool_calls": [call]},
                                                {"role": "tool", "tool_call_id": "c1", "content": secret},
                                                {"role": "user", "content": "thanks ###STOP###"}]},
           {"task_id": 2, "trial": 0, "traj": [{"role": "assistant", "content": "hi"}] * 30},
           {"task_id": 3, "trial": 0, "traj": [{"role": "assistant", "content": "hi"}] * 3}]   # no outcome
    mini = {"instance_id": "x__y-1", "info": {"exit_status": "LimitsExceeded",
                                              "model_stats": {"instance_cost": 1.0, "api_calls": 2}},
            "messages": [{"role": "system", "content": ""}, {"role": "user", "content": ""},
                         {"role": "assistant", "content": "run\n```bash\nls\n```"},
                         {"role": "user", "content": "<returncode>1</returncode><output>no</output>"},
                         {"role": "assistant", "content": "no command"}]}
    tau_git = git_repo(tmp_path / "tau", {"historical_trajectories/m-airline.json": tau})
    mini_git = git_repo(tmp_path / "mini", {"swebench_results/run1/trajs/x/x__y-1.traj.json": mini})
    out = tmp_path / "corpus"
    assert build.main(["--out", str(out), "--sources", "tau-bench,mini-swe-agent",
                       "--repo", f"tau-bench={tau_git}", "--repo", f"mini-swe-agent={mini_git}"]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {"tau-bench:m-airline:1:0": False, "tau-bench:m-airline:2:0": True,
                      "mini-swe-agent:run1:x__y-1": True}
    raw = (out / "tau-bench" / "events.ndjson").read_text() + (out / "mini-swe-agent" / "events.ndjson").read_text()
    assert "Hidden Lane" not in raw
    events = [decode(line.encode()) for line in raw.splitlines()]
    tools = [e for e in events if e.event_type == "tool_end"]
    assert all(e.result_fingerprint for e in tools if e.status != "rejected")
    assert [e.status for e in tools if e.agent_id == "mini-swe-agent"] == ["error", "rejected"]
    assert json.loads((out / "sources.json").read_text())["tau-bench"]["positive"] == 1


def tau_turns(n, text="same question again"):
    return [{"role": "assistant", "content": text}, {"role": "user", "content": "I told you already"}] * n


def test_tau_bench_fork_reads_history_dedupes_and_labels_by_step_limit(tmp_path):
    build = load()
    limited = {"task_id": 7, "trial": 0, "traj": tau_turns(30)}   # 30 agent turns, never ended
    finished = {"task_id": 8, "trial": 0, "traj": tau_turns(2) + [{"role": "user", "content": "###STOP###"}]}
    transfer = {"task_id": 9, "trial": 1, "traj": [
        {"role": "assistant", "tool_calls": [{"id": "t", "function": {"name": "transfer_to_human_agents",
                                                                     "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t", "content": "Transfer successful"}]}
    git = git_repo(tmp_path / "fork", {"results/run-a.json": [limited, finished]},
                   {"results/run-a.json": [finished, transfer],          # rewritten: the old version stays in history
                    "experiments/x/copy.json": [limited],                # a copy of a run already read
                    "historical_trajectories/gpt-4o-airline.json": [limited],   # upstream's file: not the fork's
                    "configs/settings.json": {"not": "results"}})
    out = tmp_path / "corpus"
    assert build.main(["--out", str(out), "--sources", "tau-bench-fork", "--repo", f"tau-bench-fork={git}"]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert sorted((k.split(":")[-2], v) for k, v in labels.items()) == [("7", True), ("8", False), ("9", False)]
    # each trajectory once, under the first file (in path order) that holds it; one agent per experiment
    assert sorted(k.split("@")[0] for k in labels) == ["tau-bench-fork:experiments/x/copy.json",
                                                       "tau-bench-fork:results/run-a.json",
                                                       "tau-bench-fork:results/run-a.json"]
    raw = "".join((out / d / "events.ndjson").read_text() for d in ("tau-bench-fork--experiments",
                                                                     "tau-bench-fork--results"))
    events = [decode(line.encode()) for line in raw.splitlines()]
    assert {e.agent_id for e in events} == {"tau-bench-fork/experiments", "tau-bench-fork/results"}
    starts = [e for e in events if e.event_type == "run_start"]
    assert len(starts) == 3 and all((e.detail or {}).get("max_steps") == 30 for e in starts)
    assert "I told you" not in raw


def mini_log(steps, submit):
    """A terminal log as the harness records it: ANSI colours, CRLF, spinner lines, the agent's step headers."""
    parts = ["\x1b[1mroot@box:/app# mini -m model -t 'task' -y\r\n",
             "System:\r\nYou are ... echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT ...\r\n"]
    for i in range(1, steps + 1):
        command = "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT" if submit and i == steps else "cat /app/secret.txt"
        parts.append(f"\x1b[1;31mmini-swe-agent\x1b[0m (step {i}, ${0.01 * i:.2f}):\r\n"
                     "\u280b Waiting for the LM to respond...\r\n"
                     f"THOUGHT: look\r\n\r\n```bash\r\n{command}\r\n```\r\n\r\n"
                     "\u280b Waiting for the LM to respond...\r\n"   # the spinner also follows the reply
                     f"User:\r\n<returncode>{1 if i == 2 else 0}</returncode>\r\n<output>\r\n"
                     "password hunter2\r\n</output>\r\n" + "\u2500" * 40 + "\r\n")
    parts.append("Saved trajectory to '/root/last.traj.json'\r\n")
    return "".join(parts)


def test_terminal_bench_reads_the_agent_log_with_per_call_costs(tmp_path):
    build = load()
    base = "results/terminal-bench-core@0.1.1/20250825_swe-agent-mini_model/run1"
    files = {}
    for trial, steps, submit, mode in (("t1", 3, True, "agent_timeout"), ("t2", 2, False, "unset"),
                                       ("t3", 0, False, "unset")):
        trial_dir = f"{base}/{trial}/{trial}.1-of-1.run1"
        files[f"{trial_dir}/results.json"] = {"task_id": trial, "failure_mode": mode}
        files[f"{trial_dir}/sessions/agent.log"] = mini_log(steps, submit)
    files["results/terminal-bench-core@0.1.1/20250711_openhands_model/x/results.json"] = {"task_id": "x"}
    git = git_repo(tmp_path / "tb", files)
    out = tmp_path / "corpus"
    assert build.main(["--out", str(out), "--sources", "terminal-bench", "--repo", f"terminal-bench={git}"]) == 0
    # submitted → healthy even though the harness wrote agent_timeout; no submit or no steps → skipped
    assert json.loads((out / "labels.json").read_text()) == {"terminal-bench:20250825_swe-agent-mini_model:"
                                                             "t1.1-of-1.run1": False}
    raw = (out / "terminal-bench--20250825_swe-agent-mini_model" / "events.ndjson").read_text()
    assert "hunter2" not in raw and "secret" not in raw
    events = [decode(line.encode()) for line in raw.splitlines()]
    assert [round(e.cost_usd, 2) for e in events if e.event_type == "llm_call"] == [0.01, 0.01, 0.01]
    tools = [e for e in events if e.event_type == "tool_end"]
    assert [e.status for e in tools] == ["ok", "error", "ok"]
    assert tools[0].args_hash != tools[2].args_hash and tools[0].result_hash == tools[1].result_hash
    assert {e.agent_id for e in events} == {"terminal-bench/mini-swe-agent"}


def mini_traj(instance, exit_status, costs, config=None):
    """A mini-swe-agent trajectory: one ``ls`` per call, each call's provider usage recorded."""
    messages = [{"role": "system", "content": ""}, {"role": "user", "content": ""}]
    for i, cost in enumerate(costs):
        messages.append({"role": "assistant", "content": f"step {i}\n```bash\nls {i}\n```",
                         "extra": {"response": {"usage": {"cost": cost, "prompt_tokens": 1000 + 500 * i,
                                                          "completion_tokens": 50}}}})
        messages.append({"role": "user", "content": f"<returncode>0</returncode><output>file{i}</output>"})
    info = {"exit_status": exit_status, "model_stats": {"instance_cost": sum(costs), "api_calls": len(costs)}}
    if config:
        info["config"] = {"agent": config}
    return {"instance_id": instance, "info": info, "messages": messages}


def test_mini_swe_agent_per_call_usage_limits_and_a_tighter_cost_limit(tmp_path):
    build = load()
    files = {f"swebench_results/r/trajs/t{i}/t{i}.traj.json":
             mini_traj(f"t{i}", "Submitted", costs, {"step_limit": 250, "cost_limit": 3.0})
             for i, costs in enumerate([[0.1] * 4, [0.1] * 5, [0.1] * 6, [0.2] * 10, [0.3, 0.3]])}
    git = git_repo(tmp_path / "mini", files)
    out = tmp_path / "corpus"
    assert build.main(["--out", str(out), "--sources", "mini-swe-agent,mini-swe-agent@cost-limit",
                       "--repo", f"mini-swe-agent={git}"]) == 0
    events = [decode(line.encode()) for line in (out / "mini-swe-agent" / "events.ndjson").read_text().splitlines()]
    first = [e for e in events if e.run_id.endswith(":t0")]
    assert first[0].detail == {"max_steps": 250, "max_cost_usd": 3.0}          # the harness's own limits
    calls = [e for e in first if e.event_type == "llm_call"]
    assert [(c.cost_usd, c.input_tokens, c.output_tokens) for c in calls[:2]] == [(0.1, 1000, 50), (0.1, 1500, 50)]
    # run costs 0.4, 0.5, 0.6, 2.0, 0.6: median 0.6, so a limit of 1.2 stops only t3, after its 6th call
    labels = json.loads((out / "labels.json").read_text())
    derived = {k: v for k, v in labels.items() if k.startswith("mini-swe-agent@cost-limit:")}
    assert derived == {f"mini-swe-agent@cost-limit:r:t{i}": i == 3 for i in range(5)}
    lines = (out / "mini-swe-agent@cost-limit" / "events.ndjson").read_text().splitlines()
    cut = [decode(line.encode()) for line in lines if ":t3" in line]
    assert cut[0].detail["max_cost_usd"] == 1.2 and cut[0].detail["max_steps"] == 250
    assert [e.event_type for e in cut].count("llm_call") == 6 and cut[-1].status == "error"
    assert {e.agent_id for e in cut} == {"mini-swe-agent@cost-limit"}
    # a derived run sits in the same half as the recorded run it comes from
    assert all(build.heldout(f"mini-swe-agent@cost-limit:r:t{i}") == build.heldout(f"mini-swe-agent:r:t{i}")
               for i in range(5))


def test_swe_agent_trajectories_drop_the_harness_exit_step(tmp_path):
    build = load()
    step = {"action": "open Foo.java\n", "observation": "[File: Foo.java (10 lines total)]"}
    exit_step = {"action": "exit_cost", "observation": "Exited (autosubmitted)"}
    stats = {"instance_cost": 3.0, "api_calls": 3}
    config = json.dumps({"agent": {"model": {"per_instance_call_limit": 75, "per_instance_cost_limit": 3.5}}})
    base = "evaluation/java/verified/20240825_SWE-agent_gpt-4o/trajs"
    files = {f"{base}/a__b-1.traj": {"trajectory": [step, step, exit_step],
                                     "info": {"exit_status": "submitted (exit_cost)", "model_stats": stats}},
             f"{base}/a__b-2.traj": {"trajectory": [step], "replay_config": config,
                                     "info": {"exit_status": "submitted", "model_stats": stats}},
             f"{base}/a__b-3.traj": {"trajectory": [step], "info": {"exit_status": "early_exit"}}}
    git = git_repo(tmp_path / "mswe", files)
    out = tmp_path / "corpus"
    assert build.main(["--out", str(out), "--sources", "multi-swe-bench", "--repo", f"multi-swe-bench={git}"]) == 0
    labels = json.loads((out / "labels.json").read_text())
    assert labels == {f"multi-swe-bench:{base}/a__b-1.traj": True, f"multi-swe-bench:{base}/a__b-2.traj": False}
    (session,) = [p for p in os.listdir(out) if p.startswith("multi-swe-bench")]
    events = [decode(line.encode()) for line in (out / session / "events.ndjson").read_text().splitlines()]
    first = [e for e in events if e.run_id.endswith("a__b-1.traj")]
    assert [e.tool_name for e in first if e.event_type == "tool_end"] == ["open", "open"]   # exit step dropped
    assert {e.agent_id for e in events} == {"multi-swe-bench/20240825_SWE-agent_gpt-4o"}
    second = [e for e in events if e.run_id.endswith("a__b-2.traj")]
    assert second[0].detail == {"max_steps": 75, "max_cost_usd": 3.5}
