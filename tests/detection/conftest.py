import pytest
from prometheus_client import CollectorRegistry

import agentvigil


@pytest.fixture
def make_monitor(tmp_path):
    monitors = []

    def make(agent="test-agent", **kw):
        kw.setdefault("heartbeat", False)
        mon = agentvigil.Monitor(agent, registry=CollectorRegistry(), **kw)
        monitors.append(mon)
        return mon

    yield make
    for mon in monitors:
        mon.close()
