"""agentvigil.instrument() / uninstrument(), entry points, environment switches, import cost."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import pytest

from agentvigil.instrumentation import _env, instrument, instrumented, uninstrument

SDKS = [m for m in ("openai", "anthropic", "langchain_core", "mcp", "botocore", "google.genai", "agents",
                    "litellm")
        if __import__("importlib").util.find_spec(m)]


@pytest.fixture(autouse=True)
def _clean():
    uninstrument()
    yield
    uninstrument()


def _wrapped_targets():
    import wrapt

    proxy = getattr(wrapt, "BaseObjectProxy", wrapt.ObjectProxy)
    found = {}
    if "openai" in SDKS:
        from openai.resources.chat.completions import Completions

        found["openai"] = isinstance(Completions.__dict__["create"], proxy)
    if "anthropic" in SDKS:
        from anthropic.resources.messages import Messages

        found["anthropic"] = isinstance(Messages.__dict__["create"], proxy)
    if "langchain_core" in SDKS:
        from langchain_core.callbacks import BaseCallbackManager

        found["langchain"] = isinstance(BaseCallbackManager.__dict__["__init__"], proxy)
    if "mcp" in SDKS:
        from mcp.client.session import ClientSession

        found["mcp"] = isinstance(ClientSession.__dict__["call_tool"], proxy)
    if "botocore" in SDKS:
        from botocore.client import BaseClient

        found["bedrock"] = isinstance(BaseClient.__dict__["_make_api_call"], proxy)
    if "google.genai" in SDKS:
        from google.genai.models import Models

        found["google_genai"] = isinstance(Models.__dict__["generate_content"], proxy)
    if "agents" in SDKS:
        import agents  # noqa: F401 - first, as an agent does: our processor module subclasses the SDK's class

        from agentvigil.instrumentation.openai_agents import trace_processors
        from agentvigil.instrumentation.openai_agents.processor import AgentsProcessor

        found["openai_agents"] = any(isinstance(p, AgentsProcessor) for p in trace_processors() or ())
    return found


def test_instrument_everything_installed_then_undo(monitor):
    done = instrument(monitor=monitor)
    expected = {"openai": "openai", "anthropic": "anthropic", "langchain_core": "langchain", "mcp": "mcp",
                "botocore": "bedrock", "google.genai": "google_genai", "agents": "openai_agents",
                "litellm": "litellm"}
    assert set(done) == {expected[m] for m in SDKS}
    assert set(instrumented()) == set(done)
    assert all(_wrapped_targets().values())
    assert instrument(monitor=monitor) == done  # idempotent
    uninstrument()
    assert instrumented() == []
    assert not any(_wrapped_targets().values())


def test_top_level_shortcuts(monitor):
    import agentvigil

    assert agentvigil.instrument(monitor=monitor, only=["openai"]) == (["openai"] if "openai" in SDKS else [])
    agentvigil.uninstrument()
    assert instrumented() == []


def test_disabled_by_environment(monkeypatch, monitor):
    monkeypatch.setenv("AGENTVIGIL_DISABLED_INSTRUMENTATIONS", "anthropic, langchain")
    done = instrument(monitor=monitor)
    assert "anthropic" not in done and "langchain" not in done


def test_unknown_names_are_warned_not_raised(caplog, monitor):
    assert instrument(only=["nope"], monitor=monitor) == []
    assert "unknown integration" in caplog.text


def test_entry_points_are_instrumentors():
    from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

    eps = {e.name: e for e in entry_points(group="opentelemetry_instrumentor") if e.name.startswith("agentvigil")}
    assert {"agentvigil_openai", "agentvigil_anthropic", "agentvigil_langchain"} <= set(eps)
    for ep in eps.values():
        cls = ep.load()
        assert issubclass(cls, BaseInstrumentor)
        assert cls().instrumentation_dependencies()


@pytest.mark.parametrize("own, otel, expected", [
    (None, None, False), (None, "true", True), (None, "SPAN_ONLY", True), ("false", "true", False),
    ("true", None, True), (None, "no_content", False),
])
def test_capture_content_switch(monkeypatch, own, otel, expected):
    for name, value in ((_env.AGENTVIGIL_CAPTURE_CONTENT, own), (_env.CAPTURE_MESSAGE_CONTENT, otel)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert _env.capture_content() is expected
    assert _env.capture_content(True) is True  # explicit kwarg wins


def test_import_does_not_pull_any_sdk():
    code = ("import sys, agentvigil, agentvigil.instrumentation, agentvigil.instrumentation.openai, "
            "agentvigil.instrumentation.anthropic, agentvigil.instrumentation.bedrock; "
            "print(sorted(m for m in ('openai', 'anthropic', 'langchain_core', 'crewai', 'botocore') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.skipif("openai" not in SDKS, reason="openai not installed")
def test_opentelemetry_instrument_picks_us_up(fake, tmp_path):
    """``opentelemetry-instrument python agent.py`` loads our entry points: zero code changes."""
    script = tmp_path / "agent.py"
    script.write_text(textwrap.dedent(f"""
        import openai
        from prometheus_client import REGISTRY
        client = openai.OpenAI(base_url="{fake.openai_base_url}", api_key="k", max_retries=0)
        client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
        print(REGISTRY.get_sample_value("agent_llm_calls_total", {{"agent": "zero-code", "provider": "openai",
                                                                   "model": "gpt-4o-mini", "status": "ok"}}))
    """))
    exe = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    if not os.path.exists(exe):
        pytest.skip("opentelemetry-instrument not installed")
    env = {**os.environ, "AGENTVIGIL_AGENT": "zero-code", "OTEL_TRACES_EXPORTER": "none",
           "OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
           "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,httpx,requests,urllib3"}
    out = subprocess.run([exe, sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1.0", out.stderr[-2000:]


def test_every_registered_integration_can_be_disabled_by_name():
    from agentvigil.instrumentation import _REGISTRY

    assert set(_env.INTEGRATIONS) == set(_REGISTRY)
