"""Label caps hold for the merged fleet, not only per worker: values past the cap fold into __overflow__."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from agentvigil.multiprocess import FleetCaps


def _family(kind: str, mode: str | None, samples: list[tuple[str, dict, float]]) -> Metric:
    family = Metric("f", "doc", kind)
    if mode:
        family._multiprocess_mode = mode
    for name, labels, value in samples:
        family.add_sample(name, labels, value)
    return family


def _values(family: Metric) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}


def test_counters_past_the_cap_add_up_in_overflow_and_admitted_values_stay():
    caps = FleetCaps({"agent": 2})
    counter = _family("counter", None, [("f_total", {"agent": a, "status": "ok"}, v)
                                        for a, v in (("a", 1), ("b", 2), ("c", 3), ("d", 4))])
    out = _values(next(iter(caps.apply([counter]))))
    assert out == {("f_total", (("agent", "a"), ("status", "ok"))): 1,
                   ("f_total", (("agent", "b"), ("status", "ok"))): 2,
                   ("f_total", (("agent", "__overflow__"), ("status", "ok"))): 7}
    assert caps.folded == 1
    # the next scrape keeps the same admitted values, whatever their order
    again = _family("counter", None, [("f_total", {"agent": a, "status": "ok"}, 1) for a in ("d", "b", "a")])
    assert {dict(k[1])["agent"] for k in _values(next(iter(caps.apply([again]))))} == {"a", "b", "__overflow__"}


def test_gauges_fold_by_their_multiprocess_mode():
    for mode, expected in (("livesum", 5.0), ("livemin", 2.0), ("livemax", 3.0)):
        caps = FleetCaps({"agent": 1})
        gauge = _family("gauge", mode, [("f", {"agent": "a"}, 9.0), ("f", {"agent": "b"}, 2.0),
                                        ("f", {"agent": "c"}, 3.0)])
        assert _values(next(iter(caps.apply([gauge]))))[("f", (("agent", "__overflow__"),))] == expected, mode


def test_under_the_cap_nothing_changes():
    caps = FleetCaps({"agent": 10})
    family = _family("counter", None, [("f_total", {"agent": "a"}, 1.0)])
    assert next(iter(caps.apply([family]))) is family and caps.folded == 0
