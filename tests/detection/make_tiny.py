"""Writes data/tiny/ (committed): 4 labelled runs — two loops, one healthy, one healthy-looking positive."""

import json
import os

from .streams import Stream

HERE = os.path.join(os.path.dirname(__file__), "data", "tiny")


def build() -> None:
    events, labels = [], {}
    for run_id, kind, label in (("loop-1", "loop", True), ("loop-2", "loop", True), ("ok-1", "ok", False),
                                ("miss-1", "ok", True)):
        s = Stream(run_id, agent="tiny", session="tiny")
        events.append(s.start())
        for i in range(20):
            if kind == "loop":
                events.append(s.tool("bash", "make", f"[{i}:00] build {i} failed"))
            else:
                events.append(s.tool("read", {"f": i}, f"module {chr(65 + i)} text {chr(90 - i)} " * 3))
        events.append(s.end("error" if label else "ok"))
        labels[run_id] = label
    os.makedirs(HERE, exist_ok=True)
    with open(os.path.join(HERE, "events.ndjson"), "w") as fh:
        for e in events:
            fh.write(e.to_json() + "\n")
    with open(os.path.join(os.path.dirname(HERE), "tiny_labels.json"), "w") as fh:
        json.dump(labels, fh, indent=1)


if __name__ == "__main__":
    build()
