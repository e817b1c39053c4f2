from agentvigil.fingerprint import result_fingerprint
from agentvigil.pipeline.build import load_policy
from agentvigil.policy import ConfigError, WatchConfig, apply_setting
from agentvigil.settings import Settings


def test_tool_end_carries_the_fingerprint_and_run_start_the_limits(make_monitor):
    mon = make_monitor("fp")
    seen = []
    mon.pipeline.sinks.append(type("S", (), {"consumes": frozenset({"tool_end", "run_start"}),
                                              "handle": lambda self, e: seen.append(e)})())
    mon.pipeline._route()
    with mon.run("t", max_cost_usd=2.5, max_steps=40) as run:
        with run.tool_call("bash", {"cmd": "make"}) as call:
            call.set_result("build at 12:00:01 failed")
        with run.tool_call("bash", {"cmd": "ls"}) as call:
            call.end("a b c")
    starts = [e for e in seen if e.event_type == "run_start"]
    ends = [e for e in seen if e.event_type == "tool_end"]
    assert starts[0].detail == {"max_cost_usd": 2.5, "max_steps": 40}
    assert ends[0].result_fingerprint == result_fingerprint("build at 09:13:59 failed")
    assert ends[1].result_fingerprint == result_fingerprint("a b c")
    assert '"result_fingerprint"' in ends[0].to_json()


def test_thresholds_from_config_and_cli(tmp_path):
    path = tmp_path / "watch.json"
    path.write_text('{"watchers": {"stuck": {"hold": 3}, "runaway": {"quantile": 0.9}}}')
    policy = load_policy(Settings.from_env(config_file=str(path)))
    assert policy.watchers["stuck"].params["hold"] == 3
    assert policy.watchers["runaway"].params["quantile"] == 0.9
    apply_setting(policy, "runaway.state_file=/tmp/x.json")
    assert policy.watchers["runaway"].params["state_file"] == "/tmp/x.json"
    try:
        apply_setting(WatchConfig.defaults(), "stuck.on_score=1.5")
    except ConfigError as exc:
        assert exc.key == "watchers.stuck.on_score"
    else:
        raise AssertionError("on_score=1.5 accepted")
