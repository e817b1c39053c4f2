"""`import agentvigil` is cheap: the public names are imported on first use, and `instrument()` registers its
post-import hooks without importing wrapt or any SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agentvigil
from agentvigil.instrumentation import _post_import


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_loads_no_heavy_dependency():
    heavy = ("prometheus_client", "asyncio", "agentvigil.detectors", "agentvigil.monitor", "opentelemetry", "wrapt")
    out = _run(f"import sys, agentvigil; print([m for m in {heavy!r} if m in sys.modules])")
    assert out == "[]"


def test_instrument_imports_neither_wrapt_nor_the_pipeline():
    out = _run("import sys, agentvigil; agentvigil.instrument(); "
               "print([m for m in ('wrapt', 'prometheus_client', 'openai', 'anthropic') if m in sys.modules])")
    assert out == "[]"


def test_every_public_name_resolves_and_is_listed():
    for name in agentvigil.__all__:
        assert getattr(agentvigil, name) is not None, name
    assert set(agentvigil.__all__) <= set(dir(agentvigil))
    from agentvigil import CircuitBreaker, Monitor, TokenBudget  # the `from agentvigil import X` form
    from agentvigil.breaker import CircuitBreaker as Direct
    assert CircuitBreaker is Direct and Monitor.__name__ == "Monitor" and TokenBudget.__name__ == "TokenBudget"


def test_star_import_gives_the_public_names():
    out = _run("from agentvigil import *; print(sorted(k for k in dir() if not k.startswith('__')))")
    assert out == repr(sorted(n for n in agentvigil.__all__ if not n.startswith("__")))


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        agentvigil.no_such_name  # noqa: B018


def test_post_import_hook_runs_once_the_module_has_executed(tmp_path, monkeypatch):
    (tmp_path / "av_hooked_mod.py").write_text("VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[tuple[int, object]] = []
    _post_import.register_post_import_hook(lambda m: seen.append((m.VALUE, m.__loader__)), "av_hooked_mod")
    assert seen == []
    import av_hooked_mod  # type: ignore[import-not-found]

    assert seen and seen[0][0] == 42
    assert type(seen[0][1]).__name__ == "SourceFileLoader"   # the module keeps its real loader
    assert av_hooked_mod.__spec__.loader is seen[0][1]
    _post_import.register_post_import_hook(lambda m: seen.append((0, m)), "av_hooked_mod")   # already imported
    assert len(seen) == 2
    sys.modules.pop("av_hooked_mod", None)


def test_a_failing_post_import_hook_does_not_break_the_import(tmp_path, monkeypatch):
    (tmp_path / "av_hooked_bad.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def broken(_module: object) -> None:
        raise RuntimeError("hook bug")

    _post_import.register_post_import_hook(broken, "av_hooked_bad")
    import av_hooked_bad  # type: ignore[import-not-found]

    assert av_hooked_bad.VALUE == 1
    sys.modules.pop("av_hooked_bad", None)
