import json
import os

from agentvigil.cli import main

DATA = os.path.join(os.path.dirname(__file__), "data")
TINY = os.path.join(DATA, "tiny")
LABELS = os.path.join(DATA, "tiny_labels.json")


def score(capsys, *extra):
    assert main(["replay", TINY, "--labels", LABELS, "--score", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_score_reports_precision_recall_and_lead(capsys):
    out = score(capsys)
    stuck = out["report"]["all"]["stuck"]
    assert (stuck["tp"], stuck["fp"], stuck["fn"], stuck["tn"]) == (2, 0, 1, 1)
    assert stuck["precision"] == 1.0 and stuck["recall"] == 0.667 and stuck["fpr"] == 0.0
    assert 0 < stuck["median_lead"] < 0.6
    assert out["report"]["by_source"]["tiny"]["stuck"]["runs"] == 4


def test_set_changes_a_threshold(capsys):
    assert score(capsys)["report"]["all"]["stuck"]["tp"] == 2
    out = score(capsys, "--set", "stuck.hold=30", "--set", "stuck.recurrence_hold=30",
                "--set", "stuck.same_outputs=100", "--set", "stuck.same_results=100")
    assert out["report"]["all"]["stuck"]["tp"] == 0


def test_sweep_rows(capsys):
    out = score(capsys, "--sweep")
    holds = {r["value"]: r for r in out["sweep"] if r["param"] == "stuck.hold"}
    assert holds[2]["tp"] == 2 and holds[10]["tp"] == 2 and holds[2]["median_lead"] <= holds[10]["median_lead"]


def test_bad_inputs_are_usage_errors(tmp_path, capsys):
    bad = tmp_path / "labels.json"
    bad.write_text('{"loop-1": "yes"}')
    assert main(["replay", TINY, "--labels", str(bad), "--score"]) == 2
    assert "loop-1" in capsys.readouterr().err
    assert main(["replay", TINY, "--labels", LABELS, "--score", "--set", "stuck.nope=1"]) == 2
    assert "watchers.stuck.nope" in capsys.readouterr().err
    assert main(["replay", TINY, "--score"]) == 2


def one_session_per_run(root):
    """A harness that starts one process per task: 10 runs that finished in 8 steps, 10 that a limit stopped
    after 30, then one more going long; each run its own session."""
    labels = {}
    for i in range(21):
        run_id, stopped = f"r{i:02d}", i >= 10
        session = root / f"s{i:02d}"
        session.mkdir()
        (session / "meta.json").write_text(json.dumps({"started_at": 1000.0 + i * 100}))
        ids = {"agent_id": "a", "session_id": f"s{i:02d}", "run_id": run_id}
        ts = 1000.0 + i * 100
        lines = [{"event_type": "run_start", "ts": ts, **ids}]
        for step in range(1, (30 if stopped else 8) + 1):
            lines.append({"event_type": "tool_end", "ts": ts + step, "step_index": step, "tool_name": "bash",
                          "args_hash": f"{i:04x}{step:012x}", "result_hash": f"{step:016x}", "status": "ok", **ids})
        lines.append({"event_type": "run_end", "ts": ts + 40, "status": "error" if stopped else "ok", **ids})
        (session / "events.ndjson").write_text("".join(json.dumps(line) + "\n" for line in lines))
        labels[run_id] = stopped
    (root / "labels.json").write_text(json.dumps(labels))
    return str(root), str(root / "labels.json")


def test_replay_carries_the_baseline_across_sessions_as_the_state_file_does(tmp_path, capsys):
    """Each session gets a fresh pipeline, as in-process, that starts from what the earlier sessions' ended runs
    taught: what the state file beside the sessions gives a one-process-per-task harness in production. The
    same runs in one session give the same verdicts."""
    (tmp_path / "sessions").mkdir()
    sessions, labels = one_session_per_run(tmp_path / "sessions")

    def score(path, *extra):
        assert main(["replay", path, "--labels", labels, "--score", "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)["report"]["all"]["runaway"]

    assert score(sessions)["tp"] == 1 and score(sessions)["fp"] == 0   # the last run, past step 8
    state = tmp_path / "baseline.json"
    assert score(sessions, "--set", f"runaway.state_file={state}")["tp"] == 1
    assert len(json.loads(state.read_text())["agents"]["a"]["outcomes"]) == 21   # written as the sessions end

    together = tmp_path / "one" / "events.ndjson"
    together.parent.mkdir()
    with together.open("w") as out:
        for session in sorted((tmp_path / "sessions").glob("s*")):
            out.write((session / "events.ndjson").read_text())
    assert score(str(together.parent)) == score(sessions)


def test_scores_do_not_depend_on_how_runs_are_grouped_into_sessions(tmp_path, capsys):
    """scripts/split_sessions.py rewrites the development sessions as one session per run: stuck and runaway
    score the same."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "split_sessions", os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "split_sessions.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written, dropped = module.split(TINY, str(tmp_path / "split"))
    assert written > len(os.listdir(TINY)) and dropped == 0

    def score(path):
        assert main(["replay", path, "--labels", LABELS, "--score", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)["report"]["all"]
        return {group: report[group] for group in ("stuck", "runaway", "stuck_or_runaway")}

    together = score(TINY)
    assert together["stuck_or_runaway"]["tp"] > 0
    assert score(str(tmp_path / "split")) == together


def test_score_counts_the_verdicts_replay_gives(tmp_path):
    """--score and plain replay run one session loop: the same pipelines, the same session start (meta.json's
    started_at, which the duration watcher measures from), so a run is flagged in the score exactly when
    replay prints a verdict for it."""
    from agentvigil import scoring
    from agentvigil.replay import replay

    session = tmp_path / "s1"
    session.mkdir()
    events = [{"event_type": "run_start", "ts": 5000.0, "session_id": "s1", "agent_id": "bot", "run_id": "r1"},
              {"event_type": "tool_end", "ts": 5001.0, "session_id": "s1", "agent_id": "bot", "run_id": "r1",
               "tool_name": "search", "status": "ok"},
              {"event_type": "run_end", "ts": 5002.0, "session_id": "s1", "agent_id": "bot", "run_id": "r1",
               "status": "ok"}]
    (session / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in events))
    (session / "meta.json").write_text(json.dumps({"session_id": "s1", "started_at": 1000.0}))  # 4000 s earlier

    verdicts = [r["detector"] for r in replay(str(tmp_path))]
    assert "duration" in verdicts                      # the session has run past 30 minutes since it started
    report = scoring.report(scoring.collect(str(tmp_path), {"r1": False}))
    assert report["all"]["duration"]["fp"] == 1


def test_replay_carries_the_cost_baseline_from_one_session_to_the_next(tmp_path):
    """One session per run, as a one-process-per-task harness records them: cost_over_baseline judges the
    sixth run against the five before it, as its state file lets the sixth process do."""
    from agentvigil.replay import replay

    for i, cost in enumerate([0.01] * 5 + [0.05]):
        session = tmp_path / f"s{i}"
        session.mkdir()
        ts, sid = 1000.0 + 10 * i, f"s{i}"
        events = [{"event_type": "run_start", "ts": ts, "session_id": sid, "agent_id": "bot", "run_id": f"r{i}"},
                  {"event_type": "llm_call", "ts": ts + 1, "session_id": sid, "agent_id": "bot", "run_id": f"r{i}",
                   "cost_usd": cost},
                  {"event_type": "run_end", "ts": ts + 2, "session_id": sid, "agent_id": "bot", "run_id": f"r{i}",
                   "status": "ok"}]
        (session / "events.ndjson").write_text("".join(json.dumps(e) + "\n" for e in events))
        (session / "meta.json").write_text(json.dumps({"session_id": sid, "started_at": ts}))

    [verdict] = [r for r in replay(str(tmp_path)) if r["detector"] == "cost_over_baseline"]
    assert verdict["run_id"] == "r5" and verdict["detail"]["baseline_usd"] == 0.01
