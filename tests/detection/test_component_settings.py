"""The components' thresholds (loops: repeat_call / same_result / repeated_sequence; cost_over_baseline) are
settable like every other detector's: in the config file (``watchers.detectors``), with ``replay --set`` (with or
without ``--score``) and ``watch --set``; the environment's setting is the fallback, the config wins over it."""

import collections
import json

import pytest

from agentvigil.cli import build_parser, main
from agentvigil.pipeline.build import build_pipeline
from agentvigil.policy import ConfigError, WatchConfig, apply_setting
from agentvigil.settings import Settings
from agentvigil.watch.command import build_config


def repeating_session(root):
    """One run calling the same tool with the same arguments twelve times and getting the same result back."""
    session = root / "s1"
    session.mkdir()
    ids = {"agent_id": "a", "session_id": "s1", "run_id": "r1"}
    lines = [{"event_type": "run_start", "ts": 1000.0, **ids}]
    for i in range(1, 13):
        lines.append({"event_type": "tool_end", "ts": 1000.0 + i, "step_index": i, "tool_name": "bash",
                      "args_hash": "aaaa", "result_hash": "bbbb", "status": "ok", **ids})
    lines.append({"event_type": "run_end", "ts": 1020.0, "status": "ok", **ids})
    (session / "events.ndjson").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (session / "meta.json").write_text(json.dumps({"started_at": 1000.0}))
    return str(session)


def detectors_of(pipeline, name):
    return next(d for d in pipeline.detectors if d.name == name)


def policies(policy, settings=None):
    pipeline, _ = build_pipeline(settings or Settings(), policy)
    return detectors_of(pipeline, "loops").policy, detectors_of(pipeline, "cost_over_baseline").policy


def test_the_config_file_sets_them_and_wins_over_the_environment():
    config = WatchConfig.from_dict({"watchers": {"detectors": {
        "loop_max_repeats": 5, "loop_window": 30, "loop_sequence_repeats": 4,
        "cost_spike_factor": 2.5, "cost_baseline_runs": 80, "cost_min_runs": 10}}})
    env = Settings(loop_max_repeats=7, loop_window=9, cost_spike_factor=9.0, cost_min_runs=2)
    loops, cost = policies(config, env)
    assert (loops.max_repeats, loops.window, loops.sequence_repeats) == (5, 30, 4)
    assert (cost.spike_factor, cost.baseline_runs, cost.min_runs) == (2.5, 80, 10)


def test_unset_keys_fall_back_to_the_environment_then_the_defaults():
    config = WatchConfig.from_dict({"watchers": {"detectors": {"loop_window": 30}}})
    loops, cost = policies(config, Settings(loop_max_repeats=7, cost_spike_factor=4.0))
    assert (loops.max_repeats, loops.window, loops.sequence_repeats) == (7, 30, 3)
    assert (cost.spike_factor, cost.baseline_runs, cost.min_runs) == (4.0, 50, 5)
    loops, cost = policies(WatchConfig.defaults())
    assert (loops.max_repeats, loops.window, loops.sequence_repeats) == (3, 20, 3)
    assert (cost.spike_factor, cost.baseline_runs, cost.min_runs) == (3.0, 50, 5)


@pytest.mark.parametrize("text, key, says", [
    ("detectors.loop_max_repeats=1", "watchers.detectors.loop_max_repeats", "at least 2"),
    ("detectors.loop_sequence_repeats=1", "watchers.detectors.loop_sequence_repeats", "at least 2"),
    ("detectors.loop_window=0", "watchers.detectors.loop_window", "greater than 0"),
    ("detectors.cost_spike_factor=\"high\"", "watchers.detectors.cost_spike_factor", "expected a number"),
    ("detectors.cost_spike_factor=NaN", "watchers.detectors.cost_spike_factor", "finite"),
    ("runaway.spend_factor=Infinity", "watchers.runaway.spend_factor", "finite"),
    ("detectors.cost_min_runs=2.5", "watchers.detectors.cost_min_runs", "expected an integer"),
    ("detectors.loop_windows=3", "watchers.detectors.loop_windows", "unknown key"),
])
def test_bad_values_name_the_key(text, key, says):
    with pytest.raises(ConfigError) as err:
        apply_setting(WatchConfig.defaults(), text)
    assert err.value.key == key and says in str(err.value)


def verdicts(capsys, *argv):
    assert main(["replay", *argv, "--json"]) == 0
    return collections.Counter(json.loads(line)["detector"] for line in capsys.readouterr().out.splitlines())


def test_replay_set_without_score_changes_the_verdicts(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("AGENTVIGIL_LOOP_MAX_REPEATS", raising=False)
    session = repeating_session(tmp_path)
    assert verdicts(capsys, session)["same_result"] == 4          # every 3rd repeat: 12 / 3
    assert verdicts(capsys, session, "--set", "detectors.loop_max_repeats=6")["same_result"] == 2
    monkeypatch.setenv("AGENTVIGIL_LOOP_MAX_REPEATS", "4")
    assert verdicts(capsys, session)["same_result"] == 3
    assert verdicts(capsys, session, "--set", "detectors.loop_max_repeats=12")["same_result"] == 1
    assert main(["replay", session, "--set", "detectors.loop_max_repeats=1"]) == 2
    assert "watchers.detectors.loop_max_repeats: must be at least 2" in capsys.readouterr().err


def test_watch_set(tmp_path, capsys):
    session = repeating_session(tmp_path)
    config = build_config(build_parser().parse_args(["watch", session, "--set", "detectors.loop_window=40",
                                                     "--set", "stuck.hold=9"]))
    assert config.watchers["detectors"].params["loop_window"] == 40 and config.watchers["stuck"].params["hold"] == 9
    assert main(["watch", session, "--no-follow", "--json", "--set", "detectors.loop_max_repeats=6"]) == 3
    breaches = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    same = [b for b in breaches if b["type"] == "breach" and b["detector"] == "same_result"]
    assert [b["step_index"] for b in same] == [6, 12]
    assert main(["watch", session, "--no-follow", "--set", "stuck.hold=0"]) == 2
    assert "watchers.stuck.hold" in capsys.readouterr().err
