"""supervise: invalid settings give one line naming the key or flag and exit 2, never a traceback. The real CLI
runs in a subprocess; the flags keep a run that wrongly starts short (no heartbeat wait, no cooldown, give up
at the first restart)."""

import json
import subprocess
import sys

import pytest

from agentvigil.supervise.policy import ConfigError, RestartPolicy, SupervisePolicy, build_policy

PY = sys.executable


def supervise(tmp_path, *args, timeout=60):
    return subprocess.run([PY, "-m", "agentvigil", "supervise", "--port", "0", "--record-dir", str(tmp_path / "rec"),
                           "--startup-timeout", "0", "--liveness-timeout", "0", "--cooldown", "0",
                           "--max-restarts", "0", "--watchdog", "false", *args, "--", "true"],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_usage_error(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("agentvigil supervise: "), lines
    for word in words:
        assert word in lines[0], lines


# -- defect 4 --------------------------------------------------------------------------------------------
def test_deeply_nested_json_config(tmp_path):
    config = tmp_path / "deep.json"
    config.write_text("[" * 100_000)
    assert_usage_error(supervise(tmp_path, "--config", str(config)), str(config), "nested too deeply")


def test_deeply_nested_toml_config(tmp_path):
    pytest.importorskip("tomllib")
    config = tmp_path / "deep.toml"
    config.write_text("a = " + "[" * 100_000 + "]" * 100_000)
    assert_usage_error(supervise(tmp_path, "--config", str(config)), str(config), "nested too deeply")


def test_agent_name_with_nul(tmp_path):
    config = tmp_path / "nul.json"
    config.write_text(json.dumps({"agent": "a\u0000b"}))
    assert_usage_error(supervise(tmp_path, "--config", str(config)), "'agent'", "NUL")


@pytest.mark.parametrize("flag, value", [
    ("--replicas", "0"),
    ("--cost-spike-factor", "nan"), ("--cost-spike-factor", "inf"), ("--cost-spike-factor", "1e400"),
    ("--restart-window", "0"),
])
def test_bad_flag_values(tmp_path, flag, value):
    assert_usage_error(supervise(tmp_path, flag, value), flag)


@pytest.mark.parametrize("key, value", [("cost_spike_factor", 10**400), ("cost_spike_factor", float("nan")),
                                        ("replicas", 0), ("restart_window", 0)],
                         ids=["huge-factor", "nan-factor", "replicas-0", "window-0"])
def test_bad_config_values_name_the_key(tmp_path, key, value):
    config = tmp_path / "sup.json"
    config.write_text(json.dumps({key: value}))
    assert_usage_error(supervise(tmp_path, "--config", str(config)), f"'{key}'")


def test_valid_values_still_pass():
    policy = build_policy(None, {"replicas": "2", "cost_spike_factor": "0", "restart_window": "10m"})
    assert (policy.replicas, policy.cost_spike_factor, policy.restart_window) == (2, 0.0, 600.0)


# -- defect 5 --------------------------------------------------------------------------------------------
def test_restart_window_zero_is_refused():
    with pytest.raises(ConfigError, match="--restart-window must be > 0"):
        build_policy(None, {"restart_window": "0"})
    with pytest.raises(ConfigError, match="'restart_window' must be > 0"):
        SupervisePolicy().with_values({"restart_window": 0})


def test_restart_policy_with_a_zero_window_still_gives_up():
    policy = RestartPolicy(cooldown=0.0, max_restarts=2, window=0.0)
    assert policy.next_start(10.0, [0.0, 1.0]) == 10.0
    assert policy.next_start(10.0, [0.0, 1.0, 2.0]) is None   # counted forever, never "none in the window"
