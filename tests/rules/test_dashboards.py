"""grafana/: the dashboards are the generator's output, validate against Grafana's published JSON schemas
(grafana-foundation-sdk, vendored in tests/rules/schemas/grafana/), follow the conventions (datasource/job/
agent variables, $__rate_interval, stable uids, links, units, alert annotations, exemplars) and every
PromQL expression parses once the variables are substituted."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema
import promql_parser
import pytest
import yaml

from rules_support import DASHBOARDS, HERE, ROOT, dashboard_targets, load_dashboards, substitute

SCHEMAS = HERE / "schemas" / "grafana"
PANEL_SCHEMAS = {"timeseries": "timeseries", "stat": "stat", "table": "table", "state-timeline": "statetimeline"}
UIDS = {"agentvigil-fleet.json": "agentvigil-fleet", "agentvigil-agent.json": "agentvigil-agent"}
DASHES = load_dashboards()


def schema(name: str, definition: str | None = None) -> jsonschema.Draft7Validator:
    document = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    if definition:
        document = {**document, "$ref": f"#/definitions/{definition}"}
    return jsonschema.Draft7Validator(document)


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def errors(validator, instance) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(instance)]


def test_dashboards_are_the_generator_output():
    result = subprocess.run([sys.executable, str(ROOT / "grafana" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_expected_dashboards_with_stable_uids():
    assert {name: d["uid"] for name, d in DASHES.items()} == UIDS


@pytest.mark.parametrize("name", sorted(DASHES))
def test_dashboard_validates_against_grafana_schema(name):
    assert errors(schema("dashboard"), DASHES[name]) == []


@pytest.mark.parametrize("name", sorted(DASHES))
def test_panels_validate_against_their_plugin_schemas(name):
    problems = []
    for panel in panels(DASHES[name]):
        plugin = PANEL_SCHEMAS.get(panel["type"])
        assert plugin, f"no schema vendored for panel type {panel['type']}"
        problems += [f"{panel['title']} options {e}" for e in errors(schema(plugin, "Options"), panel["options"])]
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if custom is not None and "FieldConfig" in json.loads((SCHEMAS / f"{plugin}.jsonschema.json").read_text())["definitions"]:
            problems += [f"{panel['title']} custom {e}" for e in errors(schema(plugin, "FieldConfig"), custom)]
        for target in panel["targets"]:
            problems += [f"{panel['title']} target {e}" for e in errors(schema("prometheus"), target)]
    assert problems == []


def test_schema_validation_is_strict():
    """Guard against a validator that accepts anything: an unknown key and a bad enum are rejected."""
    broken = json.loads(json.dumps(DASHES["agentvigil-fleet.json"]))
    broken["panels"][1]["no_such_key"] = True
    broken["templating"]["list"][0]["hide"] = 7
    assert len(errors(schema("dashboard"), broken)) == 2


@pytest.mark.parametrize("name", sorted(DASHES))
def test_variables(name):
    variables = {v["name"]: v for v in DASHES[name]["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "agent"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for var in ("job", "agent"):
        assert variables[var]["type"] == "query"
        assert variables[var]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert '$job' in variables["agent"]["query"], "agent values follow the selected job"


@pytest.mark.parametrize("name", sorted(DASHES))
def test_every_panel_uses_the_datasource_variable_and_has_a_unit(name):
    for panel in panels(DASHES[name]):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']} has no unit"
        assert panel.get("description"), f"{panel['title']} has no description"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


@pytest.mark.parametrize("name", sorted(DASHES))
def test_rates_use_rate_interval(name):
    """rate/irate/increase over a range use $__rate_interval, except the fixed forecast window."""
    for title, _, target in dashboard_targets(DASHES[name]):
        for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", target["expr"]):
            assert window == "$__rate_interval", f"{title}: {target['expr']}"


@pytest.mark.parametrize("name", sorted(DASHES))
def test_histogram_panels_show_exemplars(name):
    found = 0
    for title, _, target in dashboard_targets(DASHES[name]):
        if "_bucket" in target["expr"]:
            found += 1
            assert target.get("exemplar") is True, title
    if name == "agentvigil-agent.json":
        assert found >= 5, "run duration, cost, steps, tool and LLM latency"


@pytest.mark.parametrize("name", sorted(DASHES))
def test_dashboards_link_to_each_other(name):
    other = next(uid for n, uid in UIDS.items() if n != name)
    urls = [link.get("url", "") for link in DASHES[name]["links"]]
    assert f"/d/{other}" in urls
    assert any(link["type"] == "dashboards" and link["tags"] == ["agentvigil"] for link in DASHES[name]["links"])


def test_fleet_panels_link_to_the_drilldown():
    links = [link["url"] for p in panels(DASHES["agentvigil-fleet.json"])
             for link in p["fieldConfig"]["defaults"].get("links", [])]
    assert links and all("/d/agentvigil-agent/" in u and "var-agent=${__field.labels.agent}" in u for u in links)


@pytest.mark.parametrize("name", sorted(DASHES))
def test_firing_alerts_are_annotations(name):
    prometheus = [a for a in DASHES[name]["annotations"]["list"] if a.get("datasource", {}).get("type") == "prometheus"]
    assert len(prometheus) == 1
    assert prometheus[0]["expr"].startswith('ALERTS{alertstate="firing"')
    assert prometheus[0]["enable"] is True


@pytest.mark.parametrize("name", sorted(DASHES))
@pytest.mark.parametrize("agent", [".+", "research-agent"])
def test_every_expression_parses(name, agent):
    exprs = [t["expr"] for _, _, t in dashboard_targets(DASHES[name])]
    exprs += [a["expr"] for a in DASHES[name]["annotations"]["list"] if "expr" in a]
    for expr in exprs:
        promql_parser.parse(substitute(expr, agent=agent))


def test_parser_rejects_bad_promql():
    """The parse test above can fail: a broken expression raises."""
    with pytest.raises(Exception):
        promql_parser.parse(substitute('sum(rate(agent_runs_total{job=~"$job"}[$__rate_interval])'))


def test_dashboard_queries_only_use_known_recording_rules():
    """Recording rules used by dashboards exist in alert_rules/ under a window-free name."""
    records = {r["record"] for g in yaml.safe_load((ROOT / "alert_rules" / "agentvigil_rules.yaml").read_text())["groups"]
               for r in g["rules"]}
    for name, dashboard in DASHES.items():
        for title, _, target in dashboard_targets(dashboard):
            for used in re.findall(r"\b([a-z_]+:[a-z_]+:[a-z0-9_]+)\b", target["expr"]):
                assert used in records, f"{name} {title}: {used}"
                assert not re.search(r"\d+[smhdw]$", used), f"{used} would change with the configured windows"


def test_provisioning_points_at_the_dashboards():
    provider = yaml.safe_load((ROOT / "grafana" / "provisioning" / "dashboards" / "agentvigil.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    datasources = yaml.safe_load((ROOT / "grafana" / "provisioning" / "datasources" / "agentvigil.yaml").read_text())
    prometheus = next(d for d in datasources["datasources"] if d["type"] == "prometheus")
    tempo_uid = next(d["uid"] for d in datasources["datasources"] if d["type"] == "tempo")
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == tempo_uid
    assert DASHBOARDS.exists()
