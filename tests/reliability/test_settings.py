"""Settings never raise into user code: invalid values are logged once, counted, replaced by the default."""

import subprocess
import sys

import pytest

from agentvigil.settings import MAX_SECONDS, Settings, parse_duration


@pytest.mark.parametrize("env", [
    {"AGENTVIGIL_MAX_LABEL_VALUES": "abc"},
    {"AGENTVIGIL_HEARTBEAT_INTERVAL": "inf"},
    {"AGENTVIGIL_HEARTBEAT_INTERVAL": "-5"},
    {"AGENTVIGIL_LOOP_MAX_REPEATS": "1e9999"},
    {"AGENTVIGIL_COST_SPIKE_FACTOR": "nan"},
    {"AGENTVIGIL_CAPTURE_CONTENT": "maybe"},
])
def test_invalid_environment_is_counted_and_replaced(env):
    """In a fresh process (settings are read at first use): the Monitor works, the heartbeat thread lives,
    and the bad value is counted in agentvigil_internal_errors_total{component="settings"}."""
    code = """
import agentvigil, time
from prometheus_client import REGISTRY
mon = agentvigil.Monitor("s")
with mon.run() as run:
    with run.tool_call("t", {"a": 1}):
        pass
s = mon.settings
assert 0 < s.heartbeat_interval <= 86400 * 365, s
assert s.loop_max_repeats >= 2 and s.cost_spike_factor == s.cost_spike_factor
assert mon._closed is False
print(REGISTRY.get_sample_value("agentvigil_internal_errors_total", {"component": "settings"}))
"""
    out = subprocess.run([sys.executable, "-c", code], env={**_base_env(), **env}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) >= 1.0
    assert out.stderr.count("ignoring") == 1          # logged once


def _base_env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("AGENTVIGIL_")} | {"OTEL_SDK_DISABLED": "true"}


def test_keyword_settings_get_the_same_checks():
    s = Settings.from_env(heartbeat_interval=float("inf"), loop_window=0, cost_spike_factor=-1.0)
    d = Settings()
    assert (s.heartbeat_interval, s.loop_window, s.cost_spike_factor) == (d.heartbeat_interval, d.loop_window,
                                                                          d.cost_spike_factor)


def test_one_duration_parser():
    assert parse_duration("500ms") == 0.5 and parse_duration("10m") == 600 and parse_duration(30) == 30.0
    assert parse_duration("0", allow_zero=True) == 0.0
    for bad in ("0", "-1s", "inf", "nan", "1e400", "2y", True, float("inf")):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_duration(MAX_SECONDS * 2)
