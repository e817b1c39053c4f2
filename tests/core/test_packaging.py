"""A clean install of the wheel stays small: no grpcio, few distributions, few megabytes.

Builds the wheel, installs it with its dependencies from the package registry into a fresh venv, and
measures what landed in site-packages (pip and setuptools, which every venv has, excluded).
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Measured: 18 distributions, 13.5 MB (Python 3.11): the OpenTelemetry HTTP exporter and its dependencies,
# prometheus-client and agentvigil. Prices are a bundled snapshot (agentvigil/data/prices.json), not the
# genai-prices package that used to bring 10 more (pydantic, pydantic-core, httpx2, ...) and ~16 MB.
# A little headroom for a Python version that needs a backport.
MAX_DISTRIBUTIONS = 20
MAX_MEGABYTES = 30.0

PROBE = textwrap.dedent("""
    import importlib.metadata as md, importlib.util, json, os, re, sys

    site = [p for p in sys.path if p.endswith("site-packages")][0]
    sizes = {}
    requires = {}
    for dist in md.distributions(path=[site]):
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name in ("pip", "setuptools", "wheel"):
            continue
        files = [os.path.join(site, str(f)) for f in dist.files or []]
        sizes[name] = sum(os.path.getsize(f) for f in files if os.path.isfile(f))
        requires[name] = [re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group()).lower()
                          for r in dist.requires or [] if "extra ==" not in r]
    print(json.dumps({"sizes": sizes, "requires": requires,
                      "grpc_importable": importlib.util.find_spec("grpc") is not None}))
""")


def closure(requires: dict[str, list[str]], root: str) -> set[str]:
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = todo.pop()
        if name in seen or name not in requires:
            continue
        seen.add(name)
        todo.extend(requires[name])
    return seen


@pytest.mark.e2e
def test_clean_install_is_small_and_has_no_grpc(tmp_path, capsys):
    started = time.monotonic()
    src = tmp_path / "src"  # build from a copy: an in-tree build would leave build/ and egg-info behind
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, text=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("agentvigil-*.whl"))

    # The venv must see only itself: with PYTHONPATH=src pip would take the checkout for an installed agentvigil.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=env)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=900, check=False, env=env)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = subprocess.run([python, "-c", PROBE], check=True, capture_output=True, text=True, timeout=120, env=env)
    found = json.loads(probe.stdout)
    sizes, requires = found["sizes"], found["requires"]
    total_mb = sum(sizes.values()) / 1e6
    otel = closure(requires, "opentelemetry-exporter-otlp-proto-http")

    with capsys.disabled():
        print(f"\nclean install: {len(sizes)} distributions, {total_mb:.1f} MB "
              f"(the OTLP HTTP exporter and its own dependencies: {len(otel)}, "
              f"{sum(sizes[n] for n in otel) / 1e6:.1f} MB), {time.monotonic() - started:.0f} s")
        for name, size in sorted(sizes.items(), key=lambda item: -item[1])[:8]:
            print(f"  {size / 1e6:5.2f} MB  {name}")

    assert "agentvigil" in sizes
    assert not any(name.startswith("grpcio") for name in sizes) and not found["grpc_importable"]
    assert "opentelemetry-exporter-otlp-proto-grpc" not in sizes
    assert len(sizes) <= MAX_DISTRIBUTIONS, sorted(sizes)
    assert total_mb <= MAX_MEGABYTES
    cli = subprocess.run([str(venv / "bin" / "agentvigil"), "--help"], capture_output=True, text=True, timeout=120,
                         check=False, env=env)
    assert cli.returncode == 0 and "replay" in cli.stdout, cli.stderr[-2000:]
    # the bundled price snapshot is in the wheel and prices a call without genai-prices or pydantic
    assert "genai-prices" not in sizes and "pydantic" not in sizes
    priced = subprocess.run([python, "-c", "from agentvigil import PriceBook; "
                             "print(PriceBook().cost('openai', 'gpt-4o-mini-2024-07-18', 1000, 100, 200))"],
                            capture_output=True, text=True, timeout=120, check=False, env=env)
    assert priced.returncode == 0, priced.stderr[-2000:]
    assert float(priced.stdout) == pytest.approx((800 * 0.15 + 200 * 0.075 + 100 * 0.6) / 1e6)
