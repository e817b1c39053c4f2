"""``agentvigil supervise`` and ``agentvigil report``: argument parsing only."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from ..actions.terminal import escape_controls
from .policy import OPTIONS, ConfigError, build_policy

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def register(subparsers: Any) -> None:
    sup = subparsers.add_parser(
        "supervise", help="run an agent as a child: liveness, zombie, silent-exit and cost-spike watch, "
                          "restart policy, escalation, probes",
        usage="agentvigil supervise [options] -- CMD [ARGS...]",
        description="Run CMD as a supervised child. Exit codes: 0 done or stopped on request, 1 internal "
                    "error, 2 usage/config error or CMD cannot start, 3 restart policy exhausted (escalated). "
                    "See docs/supervise.md.")
    sup.add_argument("--config", metavar="FILE", help="TOML or JSON file of options (keys = option names "
                     "with underscores); flags win")
    sup.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    for option in OPTIONS:
        # type=str: every value is parsed (and its errors named) by the policy, the same way as the file's
        sup.add_argument(option.flag, dest=option.name, default=None, metavar=option.metavar or None,
                         help=option.help)
    sup.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sup.set_defaults(func=_cmd_supervise)

    rep = subparsers.add_parser("report", help="daily health report from recorded sessions (text, Markdown, "
                                               "JSON), optionally posted to a webhook")
    rep.add_argument("--dir", default=".agentvigil/sessions", help="recorded sessions and supervisor journals "
                     "(.agentvigil/sessions)")
    rep.add_argument("--since", default="24h", help="report window ending now (24h)")
    rep.add_argument("--baseline", default="7d", help="window before --since for the cost baseline (7d)")
    rep.add_argument("--format", choices=("text", "markdown", "json", "html"), default="text")
    rep.add_argument("--out", help="write the report to this file instead of stdout (html: a self-contained page)")
    rep.add_argument("--agent", action="append", help="only this agent (repeatable)")
    rep.add_argument("--prometheus-url", help="also query this Prometheus (http://127.0.0.1:9090)")
    rep.add_argument("--webhook-url", help="POST the report as a Slack-compatible message")
    rep.add_argument("--zombie-after", default="2m", help="busy without progress this long counts as a "
                     "zombie stall in recorded sessions (2m)")
    rep.set_defaults(func=_cmd_report)


def _cmd_supervise(args: argparse.Namespace) -> int:
    from . import descendants
    from .supervisor import StartError, Supervisor

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    argv = list(args.cmd)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("agentvigil supervise: no command given (usage: agentvigil supervise [options] -- CMD ARGS...)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        policy = build_policy(args.config, {option.name: getattr(args, option.name) for option in OPTIONS})
    except ConfigError as exc:
        print(escape_controls(f"agentvigil supervise: {exc}"), file=sys.stderr)   # one line, whatever the file holds
        return EXIT_USAGE
    supervisors: list[Supervisor] = []
    if policy.replicas > 1:
        # Orphans re-parent to us and are reaped, but cannot be told apart by replica: stopped at the end.
        descendants.become_subreaper()
    try:
        for index in range(policy.replicas):
            replica = None if policy.replicas == 1 else index
            own = policy if replica is None else policy.with_values(
                {"port": policy.port + index if policy.port else 0})
            supervisors.append(Supervisor(argv, own, replica=replica, adopt_orphans=policy.replicas == 1))
    except OSError as exc:
        print(f"agentvigil supervise: cannot serve on {policy.addr}: {exc}", file=sys.stderr)
        _close(supervisors)
        return EXIT_USAGE
    except ValueError as exc:  # a bad web config, named by field
        print(f"agentvigil supervise: {exc}", file=sys.stderr)
        _close(supervisors)
        return EXIT_USAGE
    def stop_all(*_: Any) -> None:
        for supervisor in supervisors:
            supervisor.request_stop()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, stop_all)
    for s in supervisors:
        which = "" if s.replica is None else f" (replica {s.replica})"
        print(f"agentvigil supervise: {s.agent}{which}: /metrics /healthz /readyz on "
              f"{s.server.scheme if s.server else 'http'}://{policy.addr}:{s.port}", file=sys.stderr, flush=True)
    try:
        if len(supervisors) == 1:
            return supervisors[0].run()
        return _run_replicas(supervisors)
    except StartError as exc:
        print(f"agentvigil supervise: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if policy.replicas > 1:
            _stop_orphans(policy.stop_grace)
        _close(supervisors)


def _stop_orphans(grace: float) -> None:
    """``--replicas``: every supervisor is done; what is still re-parented to us descends from one of the
    children (a single supervisor claims and stops those itself)."""
    from .._safety import internal_error
    from . import descendants

    try:
        drain = descendants.stop_orphans(grace)
    except Exception as exc:   # the exit code stands whatever happens here
        internal_error(descendants.COMPONENT, exc)
        return
    if drain is not None:
        print(f"agentvigil supervise: stopped {drain.tree.stopped} orphaned descendant(s) of the agents"
              + (f"; not stopped: {drain.unstopped}" if drain.unstopped else ""), file=sys.stderr)


def _run_replicas(supervisors: list[Any]) -> int:
    """Each replica on its own thread, with the same policy; the worst exit code wins. A replica that cannot
    start at all stops the others (a usage problem, the same for every copy)."""
    from .supervisor import StartError

    codes: dict[int, int] = {}
    failed: list[BaseException] = []

    def run(index: int, supervisor: Any) -> None:
        try:
            codes[index] = supervisor.run()
        except StartError as exc:
            failed.append(exc)
            for other in supervisors:
                other.request_stop()

    threads = [threading.Thread(target=run, args=(i, s), name=f"agentvigil-replica-{i}", daemon=True)
               for i, s in enumerate(supervisors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)   # short joins: the main thread keeps taking signals
    if failed:
        raise failed[0]
    return max(codes.values(), default=EXIT_ERROR)


def _close(supervisors: list[Any]) -> None:
    for supervisor in supervisors:
        supervisor.close()


def _cmd_report(args: argparse.Namespace) -> int:
    from . import report
    from .policy import parse_duration

    try:
        since, baseline, zombie_after = (parse_duration(args.since), parse_duration(args.baseline),
                                         parse_duration(args.zombie_after))
    except ValueError as exc:
        print(f"agentvigil report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.webhook_url:   # refused before the report is built and written: a usage error, not a failed POST
        from ..policy import check_url

        try:
            check_url("--webhook-url", args.webhook_url)
        except ValueError as exc:   # policy.ConfigError (not supervise's, of the same name)
            print(f"agentvigil report: {escape_controls(str(exc))}", file=sys.stderr)
            return EXIT_USAGE
    try:
        data = report.build_report(args.dir, since=since, baseline=baseline, agents=args.agent,
                                   zombie_after=zombie_after)
    except FileNotFoundError as exc:
        print(f"agentvigil report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.prometheus_url:
        data["prometheus"] = report.query_prometheus(args.prometheus_url, since)
    text = report.render_page(data, args.dir, args.agent) if args.format == "html" else report.render(data, args.format)
    # a lone surrogate in an id (a recording may carry "\ud800") is written as its escape, not an encode error
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"agentvigil report: cannot write {args.out}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    else:
        sys.stdout.write(text)
    if args.webhook_url:
        error = report.post_report(args.webhook_url, data)
        if error:
            print(f"agentvigil report: webhook: {error}", file=sys.stderr)
            return EXIT_ERROR
    return EXIT_OK
