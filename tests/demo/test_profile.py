"""alert_rules/profiles/demo.yaml is the generator's output (`generate.py --profile demo`), promtool accepts
it, and it is the shipped rule set with shorter windows only: same alerts, same severities."""

from __future__ import annotations

import sys

import yaml
from rules_support import ALERT_RULES, binary, run

PROFILE = ALERT_RULES / "profiles" / "demo.yaml"


def test_checked_in_demo_profile_is_the_generator_output() -> None:
    result = run([sys.executable, str(ALERT_RULES / "generate.py"), "--profile", "demo", "--check"])
    assert result.returncode == 0, result.stderr


def test_check_fails_on_a_stale_profile(tmp_path) -> None:
    (tmp_path / "demo.yaml").write_text(PROFILE.read_text().replace("for: 5s", "for: 6s", 1))
    result = run([sys.executable, str(ALERT_RULES / "generate.py"), "--profile", "demo", "--check",
                  "--out", str(tmp_path)])
    assert result.returncode == 1 and "stale" in result.stderr


def test_promtool_accepts_the_demo_profile() -> None:
    result = run([binary("promtool"), "check", "rules", str(PROFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_profile_is_the_shipped_rules_with_shorter_windows() -> None:
    def alerts(groups: list[dict]) -> dict[str, dict]:
        return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}

    def recorded(groups: list[dict]) -> set[str]:
        return {r["record"] for g in groups for r in g["rules"] if "record" in r}

    profile = yaml.safe_load(PROFILE.read_text())["groups"]
    shipped_alerts = yaml.safe_load((ALERT_RULES / "agentvigil_alerts.yaml").read_text())["groups"]
    shipped_rules = yaml.safe_load((ALERT_RULES / "agentvigil_rules.yaml").read_text())["groups"]
    ours, theirs = alerts(profile), alerts(shipped_alerts)
    assert ours.keys() == theirs.keys()
    def severities(rules: dict[str, dict]) -> dict[str, str]:
        return {name: rule["labels"]["severity"] for name, rule in rules.items()}

    assert severities(ours) == severities(theirs)
    assert len(recorded(profile)) == len(recorded(shipped_rules))
    assert ours["AgentZombie"]["for"] == "5s" and all(g.get("interval") == "1s" for g in profile)
