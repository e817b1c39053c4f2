"""``agentvigil watch``: argument parsing only (the loop is ``runner.Watch``). See docs/watch.md."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from ..actions.terminal import escape_controls
from .config import (
    ACTIONS,
    MAX_COUNT,
    MAX_PID,
    MAX_SEQUENCE_LENGTH,
    ConfigError,
    WatchConfig,
    apply_setting,
    check_kill_grace,
    check_path,
    check_positive,
    check_url,
    parse_actions,
    parse_duration,
)
from .runner import EXIT_USAGE, Watch


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "watch", help="tail sessions live: watchers, alerts, kill (docs/watch.md)",
        description="Tail an agent session's events, run the watchers and the in-process detectors, and alert "
                    "or kill. Exit codes: 0 ended without breach, 1 error, 2 usage/config, 3 breaches reported, "
                    "4 an agent was killed, 130 interrupted.")
    p.add_argument("path", nargs="?", default=None,
                   help="session dir, events.ndjson, a dir of sessions (newest; --all for every one), or an "
                        "agent-strace .agent-traces dir or session (default: .agentvigil/sessions)")
    p.add_argument("--all", action="store_true", help="follow every session in the directory, and new ones")
    p.add_argument("--config", help="JSON config (.agent-watch.json format, docs/watch.md)")
    p.add_argument("--set", action="append", default=[], metavar="WATCHER.KEY=VALUE",
                   help="any detector threshold, e.g. stuck.hold=4, or sessions.idle_seconds=N (repeatable; "
                        "as in the config file)")
    p.add_argument("--max-retries", type=int, help="retry watcher: failures of the same command (5)")
    p.add_argument("--max-cost", type=float, help="cost watcher: session USD (10)")
    p.add_argument("--max-duration", help="duration watcher: 30s, 10m, 1h (30m)")
    p.add_argument("--loop-length", type=int, help="loop watcher: shortest repeating sequence (3)")
    p.add_argument("--loop-repeats", type=int, help="loop watcher: back-to-back repeats (3)")
    p.add_argument("--silence", help="silence watcher: no events while the process lives, e.g. 30s (30s)")
    p.add_argument("--max-tokens", type=int, help="budget watcher: session tokens (off)")
    p.add_argument("--scope-policy", help="scope watcher policy (.agent-scope.json when present)")
    p.add_argument("--alert", action="append", metavar="ACTION",
                   help=f"actions for every watcher: {', '.join(ACTIONS)} (repeatable or comma list; terminal)")
    p.add_argument("--on-violation", choices=["alert", "kill"], default=None,
                   help="kill: also kill the agent on any breach")
    p.add_argument("--escalate", metavar="ACTION",
                   help="actions for correlated breaches (2+ watcher families within the window) (terminal)")
    p.add_argument("--allow-other-users", action="store_true",
                   help="kill: allow signalling an agent of another uid (still only the uid that wrote meta.json)")
    p.add_argument("--correlation-window", help="window for correlated breaches, e.g. 60s (60s)")
    p.add_argument("--webhook-url", help="POST every breach as JSON here")
    p.add_argument("--slack", action="store_true", help="Slack-compatible webhook payload ({\"text\": ...})")
    p.add_argument("--alerts-log", help="NDJSON alerts log for the file action (.agentvigil/alerts.ndjson)")
    p.add_argument("--kill-grace", help="SIGTERM → SIGKILL grace, e.g. 5s (5s)")
    p.add_argument("--pid", type=int, help="agent PID for kill/liveness when the session records none "
                                           "(agent-strace); pinned to its current start time")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    p.add_argument("--quiet", action="store_true", help="only breaches, actions and errors")
    p.add_argument("--status-every", type=float, default=10.0, help="seconds between status lines (10; 0 off)")
    p.add_argument("--metrics-port", type=int, help="serve the watched sessions' metrics on 127.0.0.1:PORT/metrics")
    p.add_argument("--metrics-addr", default="127.0.0.1", help=argparse.SUPPRESS)
    p.add_argument("--web-config-file", metavar="FILE", help="TLS and basic auth for /metrics: a node_exporter "
                   "web-config YAML file (default $AGENTVIGIL_WEB_CONFIG_FILE; docs/metrics-server.md)")
    p.add_argument("--no-follow", action="store_true", help="judge what is there, then exit")
    p.add_argument("--timeout", help="stop watching after this long, e.g. 10m (off)")
    p.add_argument("--poll", action="store_true", help="poll instead of inotify")
    p.set_defaults(func=run_command)


def build_config(args: argparse.Namespace) -> WatchConfig:
    config = WatchConfig.load(args.config) if args.config else WatchConfig.defaults()
    for text in args.set:
        apply_setting(config, text)
    config.override("retry", "max", _positive_int(args.max_retries, "--max-retries"))
    if args.max_cost is not None:   # finite and > 0, as cost.max_dollars in the file or --set
        config.override("cost", "max_dollars", check_positive("--max-cost", args.max_cost))
    if args.max_duration:
        config.override("duration", "max_seconds", parse_duration(args.max_duration, "--max-duration"))
    config.override("loop", "sequence_length", _positive_int(args.loop_length, "--loop-length", 2,
                                                             MAX_SEQUENCE_LENGTH))
    config.override("loop", "max_repeats", _positive_int(args.loop_repeats, "--loop-repeats", 2))
    if args.silence:
        config.override("silence", "max_seconds", parse_duration(args.silence, "--silence"))
    config.override("budget", "max_tokens", _positive_int(args.max_tokens, "--max-tokens"))
    if args.scope_policy:
        config.override("scope", "policy", check_path("--scope-policy", args.scope_policy))
    if args.alert:
        config.set_actions(parse_actions(",".join(args.alert), "--alert"))
    if args.on_violation == "kill":
        config.add_action("kill")
    if args.escalate:
        config.watchers["correlated"].actions = parse_actions(args.escalate, "--escalate")
    if args.correlation_window:
        config.override("correlated", "window_seconds", parse_duration(args.correlation_window,
                                                                        "--correlation-window"))
    if args.webhook_url:
        config.webhook_url = check_url("--webhook-url", args.webhook_url)
    if args.slack:
        config.webhook_slack = True
    if args.alerts_log:
        config.alerts_log = check_path("--alerts-log", args.alerts_log)
    if args.kill_grace:
        config.kill_grace = check_kill_grace("--kill-grace", parse_duration(args.kill_grace, "--kill-grace"))
    if args.pid is not None and not 1 <= args.pid <= MAX_PID:
        raise ConfigError("--pid", f"expected a process id between 1 and {MAX_PID}, got {args.pid}")
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise ConfigError("--metrics-port", f"expected a port number 0-65535, got {args.metrics_port}")
    if not 0 <= args.status_every < math.inf:   # NaN too
        raise ConfigError("--status-every", f"expected a number of seconds >= 0 (0 = off), got {args.status_every}")
    if config.uses("webhook") and not config.webhook_url:
        raise ConfigError("webhook.url", "the webhook action needs a URL (--webhook-url or webhook.url)")
    return config


def _positive_int(value: int | None, flag: str, minimum: int = 1, maximum: int = MAX_COUNT) -> int | None:
    if value is not None and value < minimum:
        raise ConfigError(flag, f"must be at least {minimum}, got {value}")
    if value is not None and value > maximum:
        raise ConfigError(flag, f"must be at most {maximum}, got {str(value)[:40]}")
    return value


def run_command(args: argparse.Namespace) -> int:
    from ..settings import Settings
    from ..signals.cost import PriceBook
    from .core import load_scope_policy
    from .sources import resolve

    try:
        config = build_config(args)
        scope = load_scope_policy(config)
        timeout = parse_duration(args.timeout, "--timeout") if args.timeout else None
    except ConfigError as exc:
        print(f"agentvigil watch: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    target = resolve(args.path)
    if args.no_follow and target.kind == "root" and not _exists(target.path):
        print(escape_controls(f"agentvigil watch: no such file or directory: {target.path}"), file=sys.stderr)
        return EXIT_USAGE
    metrics = None
    if args.metrics_port is not None:
        from prometheus_client import CollectorRegistry

        from ..exposition import start_metrics_server
        from ..metrics import metrics_for

        registry = CollectorRegistry()
        metrics = metrics_for(registry)
        try:
            server, _ = start_metrics_server(args.metrics_port, addr=args.metrics_addr, registry=registry,
                                             web_config_file=args.web_config_file)
        except OSError as exc:
            print(f"agentvigil watch: cannot serve /metrics on port {args.metrics_port}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except ValueError as exc:  # a bad web config, named by field
            print(f"agentvigil watch: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if not args.json:
            print(f"[watch] /metrics on {server.scheme}://{args.metrics_addr}:{server.server_port}/metrics",
                  file=sys.stderr)
    if target.kind == "root" and not args.all and not args.json and not args.quiet:
        from .sources import choose_session

        chosen, why = choose_session(target.path)
        if chosen is not None:
            print(escape_controls(f"agentvigil watch: following {chosen.session_id} (agent {chosen.agent or '-'}; "
                                  f"{why}; --all for every session)"), file=sys.stderr)
    watch = Watch(target, config, all_sessions=args.all, follow=not args.no_follow, json_out=args.json,
                  status_every=args.status_every, timeout=timeout, pid=args.pid, scope_policy=scope,
                  settings=Settings.from_env(), metrics=metrics, prices=PriceBook.from_env(),
                  use_inotify=not args.poll, quiet=args.quiet, allow_other_users=args.allow_other_users)
    return watch.run()


def _exists(path: str) -> bool:
    import os

    return os.path.exists(path)
