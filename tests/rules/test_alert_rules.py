"""alert_rules/: generated files are current, promtool accepts and unit-tests them, every alert follows the
conventions (severity, summary, description, runbook_url, `for:`), is tested firing and quiet, and is
documented with a runbook."""

from __future__ import annotations

import re

import pytest
import yaml

from rules_support import ALERT_RULES, HERE, ROOT, binary, generate_rules, run

RULES = ALERT_RULES / "agentvigil_rules.yaml"
ALERTS = ALERT_RULES / "agentvigil_alerts.yaml"
TEST_FILES = sorted((ALERT_RULES / "tests").glob("*-test.yaml"))
RUNBOOK_BASE = "https://github.com/agentvigil/agentvigil/blob/main/docs/runbooks/"
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z_]+:[a-z0-9_]+$")   # level:metric:operations


def groups(path):
    return yaml.safe_load(path.read_text())["groups"]


def alert_rules() -> list[dict]:
    return [rule for group in groups(ALERTS) for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in alert_rules()]


def test_checked_in_rules_are_the_generator_output(tmp_path):
    generated = generate_rules(tmp_path)
    for path in generated:
        assert path.read_text() == (ALERT_RULES / path.name).read_text(), (
            f"alert_rules/{path.name} is stale: run python alert_rules/generate.py")


def test_config_knobs_reach_the_rules(tmp_path):
    """An override file changes thresholds, `for:` and windows, and nothing it does not mention."""
    override = tmp_path / "override.yaml"
    override.write_text("windows: {rate: 2m}\nalerts:\n  AgentToolErrorRatioHigh: {max_ratio: 0.25, for: 3m}\n")
    rules_path, alerts_path = generate_rules(tmp_path / "out", override)
    alerts = {r["alert"]: r for g in groups(alerts_path) for r in g["rules"]}
    ratio = alerts["AgentToolErrorRatioHigh"]
    assert ratio["expr"] == "job_agent_tool:agent_tool_calls:error_ratio_rate2m > 0.25"
    assert ratio["for"] == "3m"
    assert "[2m]" in rules_path.read_text() and "[5m]" not in rules_path.read_text()
    default = {r["alert"]: r for r in alert_rules()}
    assert alerts["AgentZombie"] == default["AgentZombie"]


def test_promtool_check_rules():
    result = run([binary("promtool"), "check", "rules", str(RULES), str(ALERTS)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_checks_the_short_e2e_variant(tmp_path):
    rules = generate_rules(tmp_path, HERE / "e2e_config.yaml")
    result = run([binary("promtool"), "check", "rules", *map(str, rules)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests(test_file):
    result = run([binary("promtool"), "test", "rules", str(test_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_recording_rules_follow_level_metric_operations():
    records = [rule["record"] for group in groups(RULES) for rule in group["rules"]]
    assert records
    for record in records:
        assert RECORD_NAME.match(record), record
        level = record.split(":")[0]
        assert level.split("_")[0] == "job", f"{record}: aggregation levels start at job"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_conventions(rule):
    name = rule["alert"]
    assert re.match(r"^Agent(vigil)?[A-Z][A-Za-z]+$", name), name
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert "{{" not in annotations["summary"], "summary is label-free; values go in the description"
    assert "$value" in annotations["description"] or "$labels" in annotations["description"]
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{name}.md"
    assert 'job="agentvigil"' in rule["expr"] or ":" in rule["expr"], "selector or recording rule"


def test_alert_names_are_unique():
    names = alert_names()
    assert len(names) == len(set(names))


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    """For each alert, some promtool test expects it to fire and some expects it to stay quiet."""
    fires, quiet = set(), set()
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = set(alert_names())
    assert names - fires == set(), "never tested firing"
    assert names - quiet == set(), "never tested quiet"


def test_unit_tests_pin_group_evaluation_order():
    """Without group_eval_order promtool evaluates groups in map order: results would be flaky."""
    all_groups = {g["name"] for g in groups(RULES) + groups(ALERTS)}
    for path in TEST_FILES:
        content = yaml.safe_load(path.read_text())
        assert set(content.get("group_eval_order", [])) == all_groups, path.name


def test_every_alert_has_a_runbook_and_docs():
    alerts_doc = (ROOT / "docs" / "alerts.md").read_text()
    for name in alert_names():
        runbook = ROOT / "docs" / "runbooks" / f"{name}.md"
        assert runbook.exists(), runbook
        assert runbook.read_text().startswith(f"# {name}\n"), runbook
        assert f"## {name}" in alerts_doc, f"docs/alerts.md lacks a section for {name}"
    documented = set(re.findall(r"^## (Agent\w+)", alerts_doc, flags=re.M))
    assert documented == set(alert_names())


def test_documented_expressions_are_current():
    """docs/alerts.md shows each alert's expression as generated from the default config."""
    alerts_doc = (ROOT / "docs" / "alerts.md").read_text()
    for rule in alert_rules():
        section = alerts_doc.split(f"## {rule['alert']}\n", 1)[1].split("\n## ", 1)[0]
        assert f"```promql\n{rule['expr'].rstrip()}\n```" in section, f"docs/alerts.md: update {rule['alert']}"
