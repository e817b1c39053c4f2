"""deploy/otel-collector-otlp.yaml: scrapes /metrics with the prometheus receiver and exports only OTLP.
No collector binary is available here: checked structurally, its scrape config by promtool."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess

import pytest
import yaml
from fleet_support import ROOT

CONFIG = ROOT / "deploy" / "otel-collector-otlp.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_pipelines_use_only_defined_components(config):
    for name, pipeline in config["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline {name} uses undefined {kind[:-1]} {component}"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


def test_metrics_are_scraped_and_leave_as_otlp(config):
    metrics = config["service"]["pipelines"]["metrics"]
    assert metrics["receivers"] == ["prometheus"]
    assert metrics["exporters"] and all(e.split("/")[0] in ("otlp", "otlphttp") for e in metrics["exporters"])
    assert metrics["processors"][0] == "memory_limiter", "memory_limiter must come first"
    jobs = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    selector = yaml.safe_load((ROOT / "alert_rules" / "config.yaml").read_text())["selector"]
    assert [f'job="{job["job_name"]}"' for job in jobs] == [selector]
    assert config["exporters"]["otlphttp"]["sending_queue"]["queue_size"] > 0  # bounded


def test_embedded_scrape_config_passes_promtool(config, tmp_path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    path = tmp_path / "scrape.yml"
    path.write_text(yaml.safe_dump(config["receivers"]["prometheus"]["config"]))
    result = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_loopback_addresses():
    text = CONFIG.read_text()
    for host in re.findall(r"(?:https?://)?(\d+\.\d+\.\d+\.\d+)", text):
        assert ipaddress.ip_address(host).is_loopback, host
