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
