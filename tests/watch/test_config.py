import json

import pytest

from agentvigil.cli import build_parser, main
from agentvigil.watch.command import build_config
from agentvigil.watch.config import ConfigError, WatchConfig, parse_duration

SEED_004 = {
    "watchers": {
        "retry": {"max": 3, "alert": "terminal"},
        "cost": {"max_dollars": 5.0, "alert": "terminal"},
        "scope": {"policy": ".agent-scope.json", "alert": "kill"},
        "duration": {"max_minutes": 15, "alert": "terminal"},
        "loop": {"sequence_length": 3, "max_repeats": 3, "alert": "file"},
    },
    "webhook": {"url": "https://hooks.slack.com/services/x", "events": ["cost", "scope"]},
}


def test_seed_004_format_loads(tmp_path):
    path = tmp_path / ".agent-watch.json"
    path.write_text(json.dumps(SEED_004))
    c = WatchConfig.load(str(path))
    assert c.watchers["retry"].params["max"] == 3
    assert c.watchers["cost"].params["max_dollars"] == 5.0
    assert c.watchers["scope"].actions == ("kill",)
    assert c.watchers["scope"].params["policy"] == str(tmp_path / ".agent-scope.json")   # relative to the file
    assert c.watchers["duration"].params["max_minutes"] == 15.0
    assert c.watchers["loop"].actions == ("file",)
    assert c.webhook_url.startswith("https://") and c.webhook_events == {"cost", "scope"}


@pytest.mark.parametrize("data, key, words", [
    ({"watcher": {}}, "watcher", "unknown key"),
    ({"watchers": {"retri": {}}}, "watchers.retri", "unknown watcher"),
    ({"watchers": {"retry": {"maxx": 3}}}, "watchers.retry.maxx", "valid: max, alert, enabled"),
    ({"watchers": {"cost": {"max_dollars": "five"}}}, "watchers.cost.max_dollars", 'expected a number, got "five"'),
    ({"watchers": {"retry": {"max": 0}}}, "watchers.retry.max", "greater than 0"),
    ({"watchers": {"retry": {"max": True}}}, "watchers.retry.max", "expected an integer"),
    ({"watchers": {"loop": {"alert": "explode"}}}, "watchers.loop.alert", "unknown action 'explode'"),
    ({"watchers": {"loop": {"sequence_length": 1}}}, "watchers.loop.sequence_length", "at least 2"),
    ({"watchers": {"correlated": {"min_watchers": 1}}}, "watchers.correlated.min_watchers", "at least 2"),
    ({"webhook": {"url": "ftp://x"}}, "webhook.url", "http"),
    ({"webhook": {"events": ["cost", "nope"]}}, "webhook.events[1]", "unknown watcher 'nope'"),
    ({"kill": {"grace": 1}}, "kill.grace", "valid: grace_seconds"),
    ({"sessions": []}, "sessions", "expected an object"),
    ({"sessions": {"idle": 60}}, "sessions.idle", "unknown key; valid: idle_seconds"),
    ({"sessions": {"idle_seconds": "10m"}}, "sessions.idle_seconds", 'expected a number, got "10m"'),
    ({"sessions": {"idle_seconds": 0}}, "sessions.idle_seconds", "greater than 0"),
    ({"sessions": {"idle_seconds": 0.5}}, "sessions.idle_seconds", "at least 1 second"),
    ([], "(top level)", "expected a JSON object"),
])
def test_errors_name_the_key(data, key, words):
    with pytest.raises(ConfigError) as info:
        WatchConfig.from_dict(data)
    assert info.value.key == key and words in str(info.value)


def test_invalid_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        WatchConfig.load(str(bad))
    with pytest.raises(ConfigError, match="cannot read"):
        WatchConfig.load(str(tmp_path / "missing.json"))


def test_parse_duration():
    assert parse_duration("10m") == 600 and parse_duration("1.5h") == 5400
    assert parse_duration("500ms") == 0.5 and parse_duration("90") == 90
    with pytest.raises(ConfigError, match="--max-duration"):
        parse_duration("ten minutes", "--max-duration")


def args_for(*argv):
    return build_parser().parse_args(["watch", *argv])


def test_seed_004_flags_override_the_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(SEED_004))
    c = build_config(args_for("--config", str(path), "--max-retries", "2", "--max-cost", "1", "--max-duration",
                              "10m", "--alert", "terminal,file", "--on-violation", "kill"))
    assert c.watchers["retry"].params["max"] == 2 and c.watchers["cost"].params["max_dollars"] == 1.0
    assert c.watchers["duration"].params["max_seconds"] == 600
    assert c.watchers["loop"].actions == ("terminal", "file", "kill")
    assert c.watchers["correlated"].actions == ("terminal", "kill")
    c = build_config(args_for("--escalate", "file"))
    assert c.watchers["correlated"].actions == ("file",)


def test_cli_config_errors_exit_2(tmp_path, capsys):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"watchers": {"cost": {"max_dollar": 5}}}))
    assert main(["watch", str(tmp_path), "--config", str(path)]) == 2
    assert "watchers.cost.max_dollar: unknown key" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--alert", "webhook"]) == 2
    assert "webhook.url" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--max-duration", "soon"]) == 2
    assert "--max-duration" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--scope-policy", str(tmp_path / "none.json")]) == 2
    assert "watchers.scope.policy: policy file not found" in capsys.readouterr().err
    assert main(["watch", str(tmp_path / "nothing-here"), "--no-follow"]) == 2


def test_session_idle_from_the_file_and_set(tmp_path):
    assert WatchConfig.defaults().session_idle == 600.0
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"sessions": {"idle_seconds": 120}}))
    assert build_config(args_for("--config", str(path))).session_idle == 120.0
    assert build_config(args_for("--config", str(path), "--set", "sessions.idle_seconds=3600")).session_idle == 3600


def test_session_idle_set_errors_exit_2_naming_the_key(tmp_path, capsys):
    for value, words in (("soon", 'expected a number, got "soon"'), ("0.1", "must be at least 1 second, got 0.1"),
                         ("NaN", "must be a finite number greater than 0")):
        assert main(["watch", str(tmp_path), "--set", f"sessions.idle_seconds={value}"]) == 2
        assert f"config error: sessions.idle_seconds: {words}" in capsys.readouterr().err
    assert main(["watch", str(tmp_path), "--set", "sessions.idle=5"]) == 2
    assert "sessions.idle: unknown key; valid: idle_seconds" in capsys.readouterr().err
