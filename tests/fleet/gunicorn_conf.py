"""gunicorn config of the fleet test, as docs/fleet.md shows it: multiprocess dir, one /metrics per pod."""

import os

from agentvigil.multiprocess import child_exit, prepare  # noqa: F401  (child_exit is a gunicorn hook)

prepare(os.environ["FLEET_METRICS_DIR"])
bind = "127.0.0.1:" + os.environ["FLEET_APP_PORT"]
workers = int(os.environ.get("FLEET_WORKERS", "3"))
worker_class = "sync"
timeout = 30
graceful_timeout = 5


def post_fork(server, worker):
    import agentvigil

    # every worker asks for the same port: one serves it, the others stand by
    agentvigil.start_metrics_server(port=int(os.environ["FLEET_METRICS_PORT"]))
