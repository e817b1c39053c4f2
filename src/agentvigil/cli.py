"""The ``agentvigil`` command: argument parsing only; each command lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import sys
from typing import TYPE_CHECKING

from ._version import __version__

if TYPE_CHECKING:
    from .policy import WatchConfig
    from .replay import ReplayStats
    from .settings import Settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    view = args.view
    if view == "auto":
        view = "top" if sys.stdout.isatty() and sys.stdin.isatty() and not args.quiet else "lines"
    run_demo(duration=args.duration, port=args.port, speed=args.speed,
             record_dir=None if args.no_record else args.record_dir, seed=args.seed,
             status_every=0 if args.quiet else args.status_every, prometheus=args.prometheus,
             prometheus_port=args.prometheus_port, alertmanager_port=args.alertmanager_port, rules=args.rules,
             view=view)
    return EXIT_OK


def _text(value: object) -> str:
    """A value from a recording (an id, a path, a message) as one printable line: control characters (ESC, CR,
    LF...) and lone surrogates (``\\ud800``, which no encoder writes) as their escapes, and whatever the
    output's encoding cannot hold as backslash escapes, so nothing printed can raise UnicodeEncodeError."""
    from .actions.terminal import escape_controls

    text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", escape_controls(str(value)))
    encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
    if not text.isascii() and encoding.lower().replace("-", "") != "utf8":
        try:
            text.encode(encoding)
        except (UnicodeEncodeError, LookupError):
            text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text


_SURROGATE = re.compile("[\ud800-\udfff]")


def _json_line(record: dict) -> str:
    try:
        text: str | None = json.dumps(record, separators=(",", ":"), allow_nan=False)
    except ValueError:   # a non-finite number somewhere
        text = None
    # rare, so repaired only when seen: a non-finite number, or a surrogate escape (perhaps a lone one)
    if text is None or "\\ud" in text:
        from .codec import finite_json

        text = json.dumps(finite_json(record), separators=(",", ":"), allow_nan=False)
    return text + "\n"


def _check_replay_flags(args: argparse.Namespace) -> str | None:
    """The message for an invalid --loop-max-repeats / --cost-spike-factor (refused, where the environment's
    value is logged and replaced by the default), else None."""
    from .settings import MAX_SECONDS

    repeats, factor = args.loop_max_repeats, args.cost_spike_factor
    if repeats is not None and not 2 <= repeats <= MAX_SECONDS:
        return f"--loop-max-repeats must be a whole number from 2 to {MAX_SECONDS:.0f}, got {repeats}"
    if factor is not None and not (math.isfinite(factor) and 0 < factor <= MAX_SECONDS):
        return f"--cost-spike-factor must be a finite number greater than 0, got {factor}"
    return None


def _path_error(exc: OSError, path: str) -> int:
    """PATH of replay / replay --score could not be read: missing is a usage error; a session file that vanishes
    mid-replay is a counted skip and never gets here. A closed stdout (``| head``) is not a read error."""
    if isinstance(exc, BrokenPipeError):
        raise exc
    if isinstance(exc, FileNotFoundError):
        print(f"agentvigil replay: {_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    print(f"agentvigil replay: cannot read {_text(path)}: {_text(exc)}", file=sys.stderr)
    return EXIT_ERROR


def _cmd_replay(args: argparse.Namespace) -> int:
    from .codec import finite_json
    from .replay import ReplayStats, replay
    from .settings import Settings

    bad = _check_replay_flags(args)
    if bad:
        print(f"agentvigil replay: {bad}", file=sys.stderr)
        return EXIT_USAGE
    overrides = {"loop_max_repeats": args.loop_max_repeats, "cost_spike_factor": args.cost_spike_factor}
    settings = Settings.from_env(**overrides)
    policy = _replay_policy(args, settings)
    if policy is None:
        return EXIT_USAGE
    if args.score or args.labels:
        return _cmd_score(args, settings, policy)
    stats = ReplayStats()
    agents: dict[str, str] = {}
    try:
        for record in replay(args.path, settings, stats, policy=policy):
            agents.setdefault(_text(record["session_id"] or "-"), _text(record["agent_id"] or "-"))
            if args.json:
                sys.stdout.write(_json_line(record))
            elif args.verbose:
                step = record["step_index"] if record["step_index"] is not None else "-"
                where = f"task={_text(record['task_id'] or '-')} step={step}"
                detail = json.dumps(finite_json(record["detail"]), separators=(",", ":"), allow_nan=False)
                sys.stdout.write(f"{_text(record['agent_id'] or '-'):<16} {where:<28} "
                                 f"{_text(record['detector'] or '-'):<20} {detail}\n")
    except OSError as exc:
        return _path_error(exc, args.path)
    if not args.json:
        sys.stdout.write(_detections_table(stats.by_detector, agents))
    summary = (f"agentvigil replay: {stats.sessions} session(s), {stats.events} events, {stats.detections} "
               f"detections, {_skipped(stats)}")
    print(summary, file=sys.stderr if args.json else sys.stdout)
    _print_problems(stats)
    if stats.sessions == 0:
        print(f"agentvigil replay: no events.ndjson under {_text(args.path)}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _skipped(stats: ReplayStats) -> str:
    """``N skipped (reason: n, ...)``, then ``, N internal error(s) (component: n)`` when there were any."""
    skipped = sum(stats.skipped.values())
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(stats.skipped.items()))
    text = f"{skipped} skipped" + (f" ({reasons})" if reasons else "")
    errors = sum(stats.internal_errors.values())
    if errors:
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(stats.internal_errors.items()))
        text += f", {errors} internal error(s) ({parts}; their verdicts are missing)"
    return text


def _print_problems(stats: ReplayStats) -> None:
    """The first offending lines (file:line) on stderr."""
    for path, lineno, reason, message in stats.first_errors[:5]:
        where = f"{path}:{lineno}" if lineno else path
        print(f"  skipped {_text(where)}: {reason}: {_text(message)}", file=sys.stderr)


def _replay_policy(args: argparse.Namespace, settings: Settings) -> WatchConfig | None:
    """The watchers policy of ``AGENTVIGIL_CONFIG`` (or the defaults) with the ``--set`` thresholds applied;
    None (the error printed) when a setting is bad."""
    from .pipeline.build import load_policy
    from .policy import ConfigError, apply_setting

    policy = load_policy(settings)
    try:
        for text in args.set:
            apply_setting(policy, text)
    except ConfigError as exc:   # it names the key
        print(f"agentvigil replay: bad setting: {exc}", file=sys.stderr)
        return None
    return policy


def _cmd_score(args: argparse.Namespace, settings: Settings, policy: WatchConfig) -> int:
    """replay --score: verdicts against a labels file (agentvigil.scoring)."""
    from . import scoring

    if not (args.score and args.labels):
        print("agentvigil replay: --score and --labels FILE go together", file=sys.stderr)
        return EXIT_USAGE
    from .replay import ReplayStats

    try:
        labels = scoring.load_labels(args.labels)
    except (OSError, ValueError, RecursionError) as exc:
        print(f"agentvigil replay: cannot read labels: {_text(exc)}", file=sys.stderr)
        return EXIT_USAGE
    stats = ReplayStats()
    try:
        traces = scoring.collect(args.path, labels, settings, policy, stats)
        out: dict = {"report": scoring.report(traces)} if traces else {}
        if traces and args.sweep:
            out["sweep"] = scoring.sweep(args.path, labels, settings, policy)
    except OSError as exc:
        return _path_error(exc, args.path)
    if stats.skipped or stats.internal_errors:   # on stderr, and only then: the report itself is unchanged
        print(f"agentvigil replay: {stats.sessions} session(s), {stats.events} events, {_skipped(stats)}",
              file=sys.stderr)
        _print_problems(stats)
    if not traces:
        print(f"agentvigil replay: no labelled runs under {_text(args.path)}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
    else:
        sys.stdout.write(scoring.format_table(out["report"]))
        if args.sweep:
            sys.stdout.write("\n" + scoring.format_sweep(out["sweep"]))
    return EXIT_OK


def _detections_table(counts: dict[tuple[str, str], int], agents: dict[str, str]) -> str:
    """Detections per detector (columns) per session (rows), sessions without any left out."""
    if not counts:
        return "no detections\n"
    merged: dict[tuple[str, str], int] = {}
    for (session, detector), n in counts.items():   # an event may lack session_id (an optional field)
        key = (_text(session or "-"), _text(detector or "-"))
        merged[key] = merged.get(key, 0) + n
    counts = merged
    detectors = sorted({detector for _session, detector in counts})
    sessions = sorted({session for session, _detector in counts})
    width = max(len("session"), *(len(s) for s in sessions))
    agent_width = max(len("agent"), *(len(agents.get(s, "-")) for s in sessions))
    lines = [f"{'session':<{width}}  {'agent':<{agent_width}}  "
             + "  ".join(f"{d:>{max(len(d), 5)}}" for d in detectors)]
    for session in sessions:
        lines.append(f"{session:<{width}}  {agents.get(session, '-'):<{agent_width}}  "
                     + "  ".join(f"{counts.get((session, d), 0):>{max(len(d), 5)}}" for d in detectors))
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentvigil", description="Health signals, alerts and guards for LLM agents.")
    parser.add_argument("--version", action="version", version=f"agentvigil {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a simulated fleet with injected failures (no network, no key)")
    demo.add_argument("--duration", type=float, default=180.0, help="real seconds to run; 0 = until Ctrl-C (180)")
    demo.add_argument("--port", type=int, default=9464, help="/metrics port on 127.0.0.1 (9464; 0 = any free)")
    demo.add_argument("--speed", type=float, default=1.0, help="scenario seconds per real second (1)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (7)")
    demo.add_argument("--record-dir", default=".agentvigil/sessions", help="NDJSON sessions (.agentvigil/sessions)")
    demo.add_argument("--no-record", action="store_true", help="do not record sessions")
    demo.add_argument("--status-every", type=float, default=5.0, help="seconds between status blocks (5)")
    demo.add_argument("--quiet", action="store_true", help="no status lines")
    demo.add_argument("--prometheus", action="store_true",
                      help="also run Debian's prometheus and prometheus-alertmanager on 127.0.0.1 with the demo rules")
    demo.add_argument("--prometheus-port", type=int, default=9090, help="with --prometheus (9090; 0 = any free)")
    demo.add_argument("--alertmanager-port", type=int, default=9093, help="with --prometheus (9093; 0 = any free)")
    demo.add_argument("--rules", default=None, help="rule file (alert_rules/profiles/demo.yaml)")
    demo.add_argument("--view", choices=("auto", "top", "lines"), default="auto",
                      help="top: the live `agentvigil top` view; lines: status lines (auto: top on a terminal)")
    demo.set_defaults(func=_cmd_demo)

    rep = sub.add_parser("replay", help="run the detectors over recorded sessions")
    rep.add_argument("path", help="events.ndjson, a session directory, or a directory of sessions")
    rep.add_argument("--json", action="store_true", help="one JSON object per detection")
    rep.add_argument("-v", "--verbose", action="store_true", help="one line per detection, then the table")
    rep.add_argument("--loop-max-repeats", type=int, default=None)
    rep.add_argument("--cost-spike-factor", type=float, default=None)
    rep.add_argument("--labels", metavar="FILE", help="JSON object: run_id or task_id -> true (should be flagged)")
    rep.add_argument("--score", action="store_true", help="precision, recall, FPR, lead time per detector/source")
    rep.add_argument("--sweep", action="store_true", help="with --score: a one-at-a-time threshold sweep")
    rep.add_argument("--set", action="append", default=[], metavar="WATCHER.KEY=VALUE",
                     help="any detector threshold, e.g. stuck.hold=4 or detectors.loop_window=30 (repeatable; "
                          "as in .agent-watch.json)")
    rep.set_defaults(func=_cmd_replay)

    # Commands that live in their own packages register themselves: register(subparsers) -> None.
    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if not module_name.startswith(exc.name or "\0"):  # the command's own package is absent
                raise
            continue
        module.register(sub)
    return parser


_COMMAND_MODULES = ("agentvigil.watch.command", "agentvigil.supervise.command", "agentvigil.top")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
