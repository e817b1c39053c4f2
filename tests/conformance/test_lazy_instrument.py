"""instrument() imports no SDK: an SDK imported later is patched by its post-import hook."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("openai")

CODE = """
import sys, agentvigil
names = agentvigil.instrument(only=["openai"])
assert names == ["openai"], names
assert "openai" not in sys.modules, "instrument() imported the SDK"
import openai
from openai.resources.chat.completions import Completions
assert getattr(Completions.__dict__["create"], "_self_wrapper", None) is not None, "not patched on import"
agentvigil.uninstrument()
assert not hasattr(Completions.__dict__["create"], "_self_wrapper"), "not unpatched"
print("ok")
"""


def test_sdk_patched_on_import_not_before():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
