"""deploy/: each example config passes its own checker (promtool, amtool); the OTel Collector config, for
which no checker is installed, is checked structurally and its embedded scrape config by promtool."""

from __future__ import annotations

import ipaddress
import re

import pytest
import yaml

from rules_support import DEPLOY, ROOT, binary, run

EXAMPLES = [DEPLOY / "prometheus.yml", DEPLOY / "alertmanager.yml", DEPLOY / "otel-collector.yaml",
            ROOT / "grafana" / "provisioning" / "datasources" / "agentvigil.yaml"]


def test_promtool_check_config():
    result = run([binary("promtool"), "check", "config", str(DEPLOY / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_prometheus_scrape_job_matches_the_rule_selector():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    selector = yaml.safe_load((ROOT / "alert_rules" / "config.yaml").read_text())["selector"]
    jobs = [job["job_name"] for job in config["scrape_configs"]]
    assert f'job="{jobs[0]}"' == selector


def test_amtool_check_config():
    result = run([binary("amtool"), "check-config", str(DEPLOY / "alertmanager.yml")])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("labels, receivers", [
    (["alertname=AgentCorrelatedBreach", "severity=critical", "agent=research-agent"], "webhook,pagerduty,slack"),
    (["alertname=AgentLoopDetected", "severity=warning", "agent=research-agent"], "webhook,slack"),
    (["alertname=AgentvigilTargetDown", "severity=warning"], "webhook,slack"),
])
def test_alertmanager_routes(labels, receivers):
    result = run([binary("amtool"), "config", "routes", "test", f"--config.file={DEPLOY / 'alertmanager.yml'}", *labels])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_alertmanager_inhibits_warnings_by_the_correlated_breach():
    config = yaml.safe_load((DEPLOY / "alertmanager.yml").read_text())
    rules = [r for r in config["inhibit_rules"] if 'alertname="AgentCorrelatedBreach"' in r["source_matchers"]]
    assert rules == [{"source_matchers": ['alertname="AgentCorrelatedBreach"'],
                      "target_matchers": ['severity="warning"'], "equal": ["job", "agent"]}]
    receivers = {r["name"]: r for r in config["receivers"]}
    assert {"slack_configs", "pagerduty_configs", "webhook_configs"} <= {k for r in receivers.values() for k in r}


def test_otel_collector_config_is_consistent(tmp_path):
    config = yaml.safe_load((DEPLOY / "otel-collector.yaml").read_text())
    assert "otlp" in config["receivers"] and {"grpc", "http"} <= set(config["receivers"]["otlp"]["protocols"])
    assert "prometheus" in config["receivers"]
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline {name} uses undefined {kind[:-1]} {component}"
    assert "otlp" in config["service"]["pipelines"]["traces"]["receivers"]
    assert "prometheus" in config["service"]["pipelines"]["metrics"]["receivers"]
    # The prometheus receiver embeds a Prometheus scrape config: promtool checks it.
    scrape = tmp_path / "scrape.yml"
    scrape.write_text(yaml.safe_dump(config["receivers"]["prometheus"]["config"]))
    result = run([binary("promtool"), "check", "config", str(scrape)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_only_name_loopback_addresses(path):
    """The examples must not point anywhere but this machine until a user edits them."""
    text = path.read_text()
    for host in re.findall(r"(?:https?://)?(\d+\.\d+\.\d+\.\d+)", text):
        assert ipaddress.ip_address(host).is_loopback, f"{path.name}: {host}"
    for url in re.findall(r"https?://([^/:\s'\"]+)", text):
        assert url in {"127.0.0.1", "localhost"}, f"{path.name}: {url}"
