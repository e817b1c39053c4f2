"""Install, per integration listed in scripts/oldest.txt, the oldest release the package index offers that
satisfies its ``_instruments`` spec, then run that integration's tests. Run by scripts/test-oldest.sh inside its
own venv (it changes the installed SDKs).

    python scripts/oldest_pins.py                # every integration in the table
    python scripts/oldest_pins.py openai mcp     # only these
    python scripts/oldest_pins.py --list         # print the pins, install nothing
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "scripts" / "oldest.txt"
PACKAGES = ROOT / "src" / "agentvigil" / "instrumentation"


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    """pip, with its warnings about index locations this machine lacks dropped (one per package otherwise)."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    noise = "is ignored: it is neither a file nor a directory"
    for line in done.stderr.splitlines():
        if noise not in line:
            print(line, file=sys.stderr)
    return done


def table() -> list[tuple[str, list[str], list[str]]]:
    rows = []
    for number, line in enumerate(TABLE.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split("|")]
        if len(cells) != 3 or not cells[0] or not cells[2]:
            raise SystemExit(f"{TABLE.name}:{number}: want 'name | extra packages | test files', got {line!r}")
        rows.append((cells[0], cells[1].split(), cells[2].split()))
    return rows


def declared(name: str) -> list[Requirement] | None:
    """The integration's ``_instruments`` (read, not imported: the SDK may not be installed yet)."""
    path = PACKAGES / name / "package.py"
    if not path.exists():
        return None
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_instruments" for t in node.targets):
            return [Requirement(spec) for spec in ast.literal_eval(node.value)]
    raise SystemExit(f"{path}: no _instruments")


def offered(package: str) -> list[Version]:
    """Every release the configured index offers for this interpreter (``pip index versions``)."""
    out = pip("index", "versions", package).stdout
    match = re.search(r"Available versions:\s*(.+)", out)
    if match is None:
        raise SystemExit(f"pip index versions {package}: no versions offered")
    versions = []
    for raw in match.group(1).split(","):
        try:
            versions.append(Version(raw.strip()))
        except InvalidVersion:
            continue
    return versions


def oldest(requirement: Requirement) -> Version:
    fitting = [v for v in offered(requirement.name) if requirement.specifier.contains(v)]
    if not fitting:
        raise SystemExit(f"{requirement}: the index offers no release that satisfies it")
    return min(fitting)


def main(argv: list[str]) -> int:
    only = [a for a in argv if not a.startswith("-")]
    listing = "--list" in argv
    results: list[tuple[str, str, str, float]] = []
    for name, extras, tests in table():
        if only and name not in only:
            continue
        requirements = declared(name)
        if requirements is None:
            print(f"oldest: SKIP {name}: src/agentvigil/instrumentation/{name}/package.py does not exist yet",
                  flush=True)
            results.append((name, "-", "skipped (no package.py)", 0.0))
            continue
        missing = [t for t in tests if not (ROOT / t).exists()]
        if missing:
            print(f"oldest: FAIL {name}: {TABLE.name} names test files that do not exist: {' '.join(missing)}",
                  flush=True)
            results.append((name, "-", "FAILED (missing test files)", 0.0))
            continue
        pins = [f"{r.name}=={oldest(r)}" for r in requirements]
        print(f"oldest: {name}: {', '.join(str(r) for r in requirements)} -> {' '.join(pins)}", flush=True)
        if listing:
            results.append((name, " ".join(pins), "listed", 0.0))
            continue
        started = time.monotonic()
        if pip("install", "-q", *pins, *extras).returncode != 0:
            results.append((name, " ".join(pins), "FAILED (pip install)", time.monotonic() - started))
            continue
        installed = pip("freeze").stdout
        wanted = {re.split(r"[<>=!~ ]", p, maxsplit=1)[0].lower() for p in pins + extras}
        print("oldest:   installed: " + " ".join(line for line in installed.splitlines()
                                                if line.split("==")[0].lower() in wanted), flush=True)
        code = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=ROOT, check=False).returncode
        results.append((name, " ".join(pins), "passed" if code == 0 else f"FAILED (pytest exit {code})",
                        time.monotonic() - started))
    print("\noldest: integration | pin | result | seconds")
    for name, pinned, result, seconds in results:
        print(f"oldest: {name} | {pinned} | {result} | {seconds:.0f}")
    return 1 if any(r[2].startswith("FAILED") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
