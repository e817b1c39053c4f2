#!/usr/bin/env python3
"""Rewrite recorded sessions as one session per run, the layout a harness that starts one process per task
records, to check that the verdicts do not depend on how runs are grouped into sessions:

    python scripts/split_sessions.py corpus/ corpus-split/
    agentvigil replay corpus-split/ --labels corpus/labels_heldout.json --score

Sessions are read in the order they started (as replay reads them); each run, in the order it started, becomes
``<out>/s<n>/events.ndjson`` with a ``meta.json`` whose ``started_at`` is the run's first timestamp, moved on
just enough to keep that order where it would not. Events without a run
id go with the session's first run; lines that are not JSON objects are dropped and counted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from agentvigil.sessions import find_event_files  # noqa: E402


def split(src: str, out: str) -> tuple[int, int]:
    """Returns (sessions written, lines dropped)."""
    written = dropped = 0
    started = -math.inf
    for path in find_event_files(src):
        runs: dict[object, list[bytes]] = {}
        first_ts: dict[object, float] = {}
        with open(path, "rb") as fh:
            for line in fh:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = None
                if not isinstance(event, dict):
                    dropped += bool(line.strip())
                    continue
                key = event.get("run_id") or event.get("task_id")
                if key is None and runs:
                    key = next(iter(runs))
                runs.setdefault(key, []).append(line if line.endswith(b"\n") else line + b"\n")
                ts = event.get("ts")
                if key not in first_ts and isinstance(ts, (int, float)) and math.isfinite(ts):
                    first_ts[key] = float(ts)
        for key, lines in runs.items():
            session = os.path.join(out, f"s{written:06d}")
            os.makedirs(session)
            # the run's own start (duration is measured from it), moved on just enough to keep the order
            started = max(first_ts.get(key, started), math.nextafter(started, math.inf))
            with open(os.path.join(session, "meta.json"), "w", encoding="utf-8") as fh:
                json.dump({"started_at": started}, fh)
            with open(os.path.join(session, "events.ndjson"), "wb") as fh:
                fh.writelines(lines)
            written += 1
    return written, dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="a session, or a directory of sessions")
    parser.add_argument("out", help="a directory to create")
    opts = parser.parse_args()
    if os.path.exists(opts.out):
        parser.error(f"{opts.out} exists")
    written, dropped = split(opts.src, opts.out)
    print(f"{written} sessions written to {opts.out}; {dropped} lines dropped (not JSON objects)")


if __name__ == "__main__":
    main()
