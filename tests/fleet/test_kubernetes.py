"""deploy/kubernetes: the kustomize base and the PodMonitor overlay validate offline against the Kubernetes
schemas (kubernetes-validate) and prometheus-operator's CRD schemas (tests/fleet/schemas), the generated
PrometheusRule and dashboards ConfigMap are current, and the probes and scrape job fit supervise and the rules."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from fleet_support import HERE, ROOT

K8S = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
CRDS = {kind: json.loads((HERE / "schemas" / f"{kind.lower()}-monitoring.coreos.com-v1.json").read_text())
        for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")}


def _strict(schema: dict) -> dict:
    """Reject unknown fields (the API server would silently prune them: a typo would go unnoticed)."""
    schema = copy.deepcopy(schema)

    def walk(node: dict) -> None:
        if not isinstance(node, dict):
            return
        if "properties" in node and "additionalProperties" not in node \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            node["additionalProperties"] = False
        for key in ("properties", "patternProperties"):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])
        for key in ("allOf", "anyOf", "oneOf"):
            for child in node.get(key, []):
                walk(child)
    walk(schema)
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def _load(directory: Path) -> list[dict]:
    """The resources of a kustomization: `kubectl kustomize` when installed, else its resources: files."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    docs: list[dict] = []
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        path = directory / resource
        if path.is_dir():
            docs += _load(path)
        else:
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    deleted = {(p["patch"].split("kind: ")[1].split()[0]) for p in kustomization.get("patches", [])
               if "$patch: delete" in p.get("patch", "")}
    return [doc for doc in docs if doc["kind"] not in deleted]


def _validate(doc: dict) -> None:
    if doc["kind"] in CRDS:
        # no check_schema: the CRDs carry Go regexes ('^(?i)...') that Python's metaschema check rejects
        jsonschema.Draft7Validator(_strict(CRDS[doc["kind"]])).validate(doc)
    else:
        import kubernetes_validate

        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def base() -> dict[str, dict]:
    pytest.importorskip("kubernetes_validate")
    return {doc["kind"]: doc for doc in _load(K8S / "base")}


def test_base_and_overlay_validate_against_the_schemas(base):
    assert set(base) == {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"}
    overlay = _load(K8S / "podmonitor")
    assert {doc["kind"] for doc in overlay} == {"Deployment", "PodMonitor", "PrometheusRule", "ConfigMap"}
    for doc in list(base.values()) + overlay:
        _validate(doc)


def test_validation_catches_a_typo(base):
    """The check above can fail: a misspelt field is rejected, for core kinds and CRDs alike."""
    import kubernetes_validate

    monitor = copy.deepcopy(base["ServiceMonitor"])
    monitor["spec"]["endpoints"][0]["intreval"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor)
    deployment = copy.deepcopy(base["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pth"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment)


def test_generated_manifests_are_current():
    result = subprocess.run([sys.executable, str(ROOT / "alert_rules" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_prometheus_rule_holds_the_shipped_rules(base, tmp_path):
    rules = yaml.safe_load((ROOT / "alert_rules" / "agentvigil_rules.yaml").read_text())["groups"]
    alerts = yaml.safe_load((ROOT / "alert_rules" / "agentvigil_alerts.yaml").read_text())["groups"]
    spec = base["PrometheusRule"]["spec"]
    assert spec["groups"] == rules + alerts
    promtool = shutil.which("promtool")
    if promtool:
        path = tmp_path / "rules.yaml"
        path.write_text(yaml.safe_dump(spec))
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_configmap_is_for_the_sidecar(base):
    config_map = base["ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: json.loads(p.read_text()) for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    assert {name: json.loads(text) for name, text in config_map["data"].items()} == files


def test_probes_hit_supervise_and_the_job_matches_the_rules(base):
    from agentvigil.supervise.policy import OPTIONS

    container = base["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    command = container["command"]
    assert command[:2] == ["agentvigil", "supervise"]
    flags = {option.flag for option in OPTIONS}
    supervise_args = command[2:command.index("--")]
    assert {arg for arg in supervise_args if arg.startswith("--")} <= flags
    assert int(supervise_args[supervise_args.index("--port") + 1]) == ports["supervise"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "supervise"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "supervise"}
    env = {e["name"]: e for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert env["PROMETHEUS_MULTIPROC_DIR"]["value"] in mounts
    # job="agentvigil": the jobLabel's value on the pods and the Service is the rules' selector
    selector = yaml.safe_load((ROOT / "alert_rules" / "config.yaml").read_text())["selector"]
    monitor = base["ServiceMonitor"]["spec"]
    pod_labels = base["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert f'job="{pod_labels[monitor["jobLabel"]]}"' == selector
    assert {e["port"] for e in monitor["endpoints"]} == set(ports)
