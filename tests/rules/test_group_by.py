"""group_by: custom labels kept in the per-agent cost, tool and cache rules (alert_rules/config.yaml)."""

from __future__ import annotations

import shutil

import yaml
from rules_support import ALERT_RULES, binary, generate_rules, run

GROUPED_TEST = ALERT_RULES / "tests" / "grouped" / "tenant-test.yaml"


def _by_tenant(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("group_by: [tenant]\n")
    return generate_rules(tmp_path / "out", override)


def test_group_by_reaches_the_per_agent_rules_only(tmp_path):
    rules_path, alerts_path = _by_tenant(tmp_path)
    rules = {r["record"]: r["expr"] for g in yaml.safe_load(rules_path.read_text())["groups"] for r in g["rules"]}
    assert "sum by (job, agent, tenant) (rate(agent_cost_usd_total" in rules["job_agent:agent_cost_usd:rate1h"]
    assert "by (job, agent, tool, tenant)" in rules["job_agent_tool:agent_tool_calls:error_ratio_rate5m"]
    assert "by (job, agent, tool, kind, tenant)" in rules["job_agent_tool_kind:agent_tool_errors:rate5m"]
    # loops divide by runs of any tenant and the fleet sums over everything: unchanged
    assert "tenant" not in rules["job_agent:agent_loop_detections:per_run_rate15m"]
    assert "tenant" not in rules["job:agent_cost_usd:rate1h"]
    alerts = {r["alert"]: r["expr"] for g in yaml.safe_load(alerts_path.read_text())["groups"] for r in g["rules"]}
    assert "and on (job, agent, tenant)" in alerts["AgentCostRateSpike"]


def test_bad_group_by_label_is_refused(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text("group_by: [tool]\n")
    result = run(["python3", str(ALERT_RULES / "generate.py"), "--out", str(tmp_path), "--config", str(override)])
    assert result.returncode != 0 and "group_by" in result.stderr


def test_promtool_alerts_per_tenant(tmp_path):
    promtool = binary("promtool")
    rules_path, alerts_path = _by_tenant(tmp_path)
    shutil.copy(GROUPED_TEST, rules_path.parent / GROUPED_TEST.name)
    result = run([promtool, "test", "rules", str(rules_path.parent / GROUPED_TEST.name)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_grouped_rules(tmp_path):
    result = run([binary("promtool"), "check", "rules", *map(str, _by_tenant(tmp_path))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_gain_a_variable_and_matcher_per_label(tmp_path):
    import json
    import sys

    import promql_parser
    from rules_support import ROOT, dashboard_targets, substitute

    generator = str(ROOT / "grafana" / "generate.py")
    result = run([sys.executable, generator, "--group-by", "tenant", "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    for path in sorted(tmp_path.glob("*.json")):
        dash = json.loads(path.read_text())
        names = [v["name"] for v in dash["templating"]["list"]]
        assert names == ["datasource", "job", "agent", "tenant"], path.name
        filtered = 0
        for title, _, target in dashboard_targets(dash):
            expr = target.get("expr", "")
            if 'agent=~"$agent"' in expr:
                assert 'tenant=~"$tenant|"' in expr, (path.name, title)
                filtered += 1
            promql_parser.parse(substitute(expr).replace("$tenant", "acme"))
        assert filtered > 0
    bad = run([sys.executable, str(ROOT / "grafana" / "generate.py"), "--group-by", "agent", "--out", str(tmp_path)])
    assert bad.returncode != 0 and "--group-by" in bad.stderr
