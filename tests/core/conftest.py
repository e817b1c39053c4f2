import shutil

import pytest
from prometheus_client import CollectorRegistry

import agentvigil


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def make_monitor(registry, tmp_path):
    monitors = []

    def make(agent="test-agent", **kw):
        kw.setdefault("heartbeat", False)
        mon = agentvigil.Monitor(agent, registry=registry, **kw)
        monitors.append(mon)
        return mon

    yield make
    for mon in monitors:
        mon.close()


@pytest.fixture
def sample(registry):
    def get(name, **labels):
        value = registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    return get


def promtool():
    return shutil.which("promtool")
