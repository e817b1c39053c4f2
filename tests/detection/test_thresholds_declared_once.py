"""The config's table of thresholds (``policy.WATCHER_PARAMS``) and the detectors' policy dataclasses declare
the same names, types and defaults: a threshold added to one and not the other would be unsettable, or
settable with another default."""

import dataclasses

import pytest

from agentvigil.detectors.runaway import RunawayPolicy
from agentvigil.detectors.stuck import StuckPolicy
from agentvigil.policy import WATCHER_PARAMS

TYPES = {"int": int, "float": float, "str": str, "int | None": int, "float | None": float, "str | None": str}


@pytest.mark.parametrize("watcher, policy", [("stuck", StuckPolicy), ("runaway", RunawayPolicy)])
def test_config_table_matches_the_policy(watcher, policy):
    declared = {f.name: (TYPES[f.type], f.default) for f in dataclasses.fields(policy)}
    assert WATCHER_PARAMS[watcher] == declared
