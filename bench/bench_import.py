"""Start-up cost of agentvigil, measured side by side with ``python -c pass`` in fresh interpreters.

    PYTHONPATH=src python bench/bench_import.py [--runs 15]

Runs the three programs interleaved (so machine noise hits all alike) and prints the median wall time of each
and the medians minus the bare interpreter's: ``import agentvigil`` and ``import agentvigil;
agentvigil.instrument()`` (which must not import any SDK: checked and reported).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

PROGRAMS = {
    "python -c pass": "pass",
    "import agentvigil": "import agentvigil",
    "import agentvigil; agentvigil.instrument()": (
        "import sys, agentvigil; agentvigil.instrument(); "
        "sdks = [m for m in ('openai', 'anthropic', 'langchain_core', 'crewai') if m in sys.modules]; "
        "assert not sdks, sdks"),
}


def _once(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args(argv).runs
    times: dict[str, list[float]] = {name: [] for name in PROGRAMS}
    for code in PROGRAMS.values():  # warm the file cache once
        _once(code)
    for _ in range(runs):
        for name, code in PROGRAMS.items():
            times[name].append(_once(code))
    base = statistics.median(times["python -c pass"])
    print(f"{'program':<45} {'median ms':>10} {'minus python -c pass':>22}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<45} {med * 1000:>10.1f} {(med - base) * 1000:>22.1f}")


if __name__ == "__main__":
    main()
