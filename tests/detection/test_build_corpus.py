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


def git_repo(path, files):
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(data))
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm",
                    "data"], check=True)
    return str(path / ".git")


def test_builds_labelled_runs_without_raw_text(tmp_path):
    build = load()
    secret = "the customer's address is 12 Hidden Lane"
    call = {"id": "c1", "function": {"name": "get_user", "arguments": "{}"}}
    tau = [{"task_id": 1, "trial": 0, "traj": [{"role": "assistant", "tool_calls": [call]},
                                                {"role": "tool", "tool_call_id": "c1", "content": secret}]},
           {"task_id": 2, "trial": 0, "traj": [{"role": "assistant", "content": "hi"}] * 30}]
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
