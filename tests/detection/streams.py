"""Hand-built event streams for the detector tests."""

from agentvigil.codec import digest
from agentvigil.events import Event
from agentvigil.fingerprint import result_fingerprint


class Stream:
    def __init__(self, run_id="r1", agent="a", session="s"):
        self.ids = {"agent_id": agent, "session_id": session, "run_id": run_id}
        self.ts = 1000.0
        self.step = 0

    def _e(self, kind, **kw):
        self.ts += 1.0
        return Event(kind, self.ts, step_index=self.step, **self.ids, **kw)

    def start(self, **limits):
        return self._e("run_start", detail=limits or None)

    def tool(self, name, args, result, status="ok", error_kind=None):
        self.step += 1
        return self._e("tool_end", tool_name=name, args_hash=digest(args), result_hash=digest(result),
                       result_fingerprint=result_fingerprint(result), status=status, error_kind=error_kind)

    def llm(self, cost=0.01, tokens=100):
        return self._e("llm_call", cost_usd=cost, input_tokens=tokens, output_tokens=0)

    def end(self, status="ok", error_kind=None):
        return self._e("run_end", status=status, error_kind=error_kind)


def verdicts(detector, events):
    out = []
    for e in events:
        out.extend(detector.feed(e) or [])
    return out
