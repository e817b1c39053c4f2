"""A scope policy with a value of the wrong type is a config error naming the key (exit 2), never a
string matched character by character (its ``*`` denying every path) nor a traceback."""

import json

import pytest

from agentvigil.cli import main
from agentvigil.detectors.scope import ScopePolicy
from agentvigil.policy import ConfigError
from agentvigil.watch.core import load_scope_policy
from agentvigil.watch.runner import EXIT_USAGE

from .conftest import append, line, write_meta
from .test_runner import config_for

BAD = [
    ({"deny": "secrets/*"}, 'deny: expected a list of strings, got "secrets/*"'),
    ({"allow": "src/*"}, 'allow: expected a list of strings, got "src/*"'),
    ({"deny": [1]}, "deny: expected a list of strings, got [1]"),
    ({"deny": ["ok", None]}, 'deny: expected a list of strings, got ["ok", null]'),
    ({"files": {"read": 5}}, "files.read: expected an object, got 5"),
    ({"files": ["read"]}, 'files: expected an object, got ["read"]'),
    ({"files": {"write": {"allow": "src/*"}}}, 'files.write.allow: expected a list of strings, got "src/*"'),
    ({"files": {"read": {"deny": {"a": 1}}}}, 'files.read.deny: expected a list of strings, got {"a": 1}'),
]


@pytest.mark.parametrize("rules, message", BAD)
def test_wrong_types_name_the_key(rules, message, tmp_path):
    with pytest.raises(ValueError) as info:
        ScopePolicy(rules, str(tmp_path))
    assert str(info.value) == message


def test_long_or_hostile_values_are_shown_escaped_and_cut(tmp_path):
    with pytest.raises(ValueError) as info:
        ScopePolicy({"deny": "\x1b[2J" + "x" * 500}, str(tmp_path))
    text = str(info.value)
    assert "\x1b" not in text and "\\u001b" in text and len(text) < 120


def test_null_and_missing_keys_are_empty(tmp_path):
    policy = ScopePolicy({"allow": None, "deny": None, "files": {"read": None, "write": {"deny": None}}},
                         str(tmp_path))
    assert policy.check("src/main.py") is None and policy.check("/etc/passwd", "write") is None


def test_bad_policy_file_is_a_config_error(tmp_path):
    path = tmp_path / ".agent-scope.json"
    path.write_text(json.dumps({"deny": "secrets/*"}))
    with pytest.raises(ConfigError) as info:
        load_scope_policy(config_for("--scope-policy", str(path)))
    assert info.value.key == "watchers.scope.policy" and 'deny: expected a list of strings' in str(info.value)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError):
        load_scope_policy(config_for("--scope-policy", str(path)))


@pytest.mark.parametrize("rules", [{"deny": "secrets/*"}, {"deny": [1]}, {"files": {"read": 5}}])
def test_watch_exits_2_naming_the_key_without_judging(rules, tmp_path, capsys):
    policy = tmp_path / ".agent-scope.json"
    policy.write_text(json.dumps(rules))
    config = tmp_path / "watch.json"
    config.write_text(json.dumps({"watchers": {"scope": {"policy": ".agent-scope.json", "alert": "kill"}}}))
    session = tmp_path / "s"
    write_meta(session, pid=2 ** 22 - 1, start=1.0)      # not running: nothing could be killed anyway
    append(session / "events.ndjson", line("tool_end", run_id="r", tool_name="read_file", args_hash="b",
                                           status="ok", detail={"path": "src/main.py", "access": "read"}))
    assert main(["watch", str(session), "--config", str(config), "--no-follow"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "config error: watchers.scope.policy:" in err and "expected" in err
    assert "Traceback" not in err and "ScopeWatcher" not in err
