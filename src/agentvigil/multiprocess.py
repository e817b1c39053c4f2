"""Metrics of many worker processes (gunicorn, uvicorn workers, Celery prefork, multiprocessing pools) served
as one /metrics, through prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``).

Every process writes its series to mmap'd files in the directory; the one process that holds the metrics
port merges them (``multiprocess_merge``: prometheus_client's merge, each file entry decoded once). Live
gauges of a dead worker must go (``child_exit`` for gunicorn, ``remove_dead_workers`` for pools and crashes,
also run before every scrape); its counters stay, so totals never go backwards. A nearly full directory
(usually a tmpfs) is reported before it fills up: prometheus_client grows its files sparsely and writes
through mmap, so a full tmpfs kills the writer with SIGBUS; agentvigil therefore allocates the blocks of every
file before prometheus_client maps them (``BackedMmapedDict``), so a full tmpfs fails the metric write with a
counted OSError instead. See docs/fleet.md.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, mmap_dict, values
from prometheus_client import multiprocess as _mp
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict

from ._safety import internal_error
from .multiprocess_merge import FamilyList, FleetCaps, MultiProcessMerge

log = logging.getLogger("agentvigil")

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFETCH_INTERVAL = 0.1  # seconds between the serving process' looks for new file entries (a header read each)
MIN_FREE_BYTES = 8 * 1024 * 1024  # below this the directory counts as full: one more file doubling may not fit
_FILE = re.compile(r"^(?P<kind>[a-z]+)(?:_(?P<mode>[a-z]+))?_(?P<pid>\d+)\.db$")
_warned: set[str] = set()
# BackedMmapedDict follows MmapedDict's layout (prometheus_client 0.20 to 0.26); if that changes, files stay
# sparse (the SIGBUS risk is back, the free-space report remains) rather than break metric writes
_INITIAL_MMAP_SIZE = getattr(mmap_dict, "_INITIAL_MMAP_SIZE", 0)


class BackedMmapedDict(MmapedDict):
    """prometheus_client's per-process file, with its blocks allocated (``posix_fallocate``) before they are
    mapped, at creation and at every growth. On a full filesystem the allocation raises OSError (ENOSPC),
    which the metric write reports like any sink failure, where a sparse page would have raised SIGBUS."""

    def __init__(self, filename: str, read_mode: bool = False):
        if not read_mode:
            fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                try:
                    _allocate(fd, size or _INITIAL_MMAP_SIZE)
                except OSError:
                    if not size:  # an empty file would break the collector's reads
                        os.remove(filename)
                    raise
            finally:
                os.close(fd)
        super().__init__(filename, read_mode)

    def _init_value(self, key: str) -> None:
        encoded = len(key.encode("utf-8"))
        needed = 4 + encoded + (8 - (encoded + 4) % 8) + 16  # as MmapedDict packs it
        capacity = self._capacity
        while self._used + needed > capacity:
            capacity *= 2
        if capacity > self._capacity:
            _allocate(self._f.fileno(), capacity)
        super()._init_value(key)


def _allocate(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of blocks; raise only when the filesystem is full (a filesystem that cannot
    allocate ahead keeps prometheus_client's sparse files)."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise


def _back_files() -> None:
    """Make prometheus_client create its files through BackedMmapedDict (it looks the class up per file)."""
    if _INITIAL_MMAP_SIZE and getattr(values, "MmapedDict", None) is MmapedDict:
        values.MmapedDict = BackedMmapedDict  # type: ignore[attr-defined,misc]


def directory() -> str | None:
    """The multiprocess directory, or None in single-process mode."""
    return os.environ.get(ENV) or os.environ.get(ENV.lower()) or None


def enabled() -> bool:
    """True when metrics are written to the multiprocess directory (the variable was set before the first
    metric value was created, or ``prepare`` was called)."""
    return directory() is not None and getattr(values.ValueClass, "_multiprocess", False)


def prepare(path: str, *, wipe: bool = True) -> str:
    """Turn on multiprocess mode for this process and the workers it forks: create ``path``, empty it (a
    restarted master must not merge the previous run's files; pass ``wipe=False`` in a worker) and set
    ``PROMETHEUS_MULTIPROC_DIR``. Call it in the master before any metric is created, e.g. at the top of
    ``gunicorn.conf.py``. Returns the absolute path."""
    path = os.path.abspath(path)
    os.makedirs(path, exist_ok=True)
    if wipe:
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.remove(os.path.join(path, name))
    os.environ[ENV] = path
    _back_files()
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client picks its value class at import; metrics created from now on use the files
        values.ValueClass = values.MultiProcessValue()
    return path


def mark_dead(pid: int, path: str | None = None) -> None:
    """Remove the live-gauge files of worker ``pid`` (its counters and histograms stay in the totals)."""
    path = path or directory()
    if not path:
        return
    try:
        _mp.mark_process_dead(pid, path)
    except OSError as exc:
        internal_error("multiprocess", exc)


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: ``from agentvigil.multiprocess import child_exit`` in gunicorn.conf.py."""
    mark_dead(worker.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_workers(path: str | None = None) -> list[int]:
    """Remove the live-gauge files of every process that no longer exists; returns their pids. The pool
    equivalent of ``child_exit`` (multiprocessing, concurrent.futures and Celery give no exit hook), and the
    safety net after a SIGKILL. Run by the serving process before each scrape."""
    path = path or directory()
    if not path:
        return []
    dead: set[int] = set()
    for name in os.listdir(path):
        match = _FILE.match(name)
        if match and (match["mode"] or "").startswith("live"):
            pid = int(match["pid"])
            if pid != os.getpid() and not _alive(pid):
                dead.add(pid)
    for pid in dead:
        mark_dead(pid, path)
    return sorted(dead)


def free_bytes(path: str) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def check_space(path: str | None = None, min_free: int = MIN_FREE_BYTES) -> bool:
    """True when the directory has room. When it does not, log it (once), count it in
    ``agentvigil_internal_errors_total{component="multiprocess"}`` and return False."""
    path = path or directory()
    if not path:
        return True
    try:
        free = free_bytes(path)
    except OSError as exc:
        _report(path, f"cannot stat {path}: {exc}", exc)
        return False
    if free < min_free:
        _report(path, f"{ENV}={path} has {free} bytes free (< {min_free}): new series may kill the process "
                "(SIGBUS); give the tmpfs more room", None)
        return False
    _warned.discard(path)
    return True


def _report(path: str, message: str, exc: BaseException | None) -> None:
    internal_error("multiprocess", exc or OSError(message))
    if path not in _warned:
        _warned.add(path)
        log.error("agentvigil: %s", message)


class FleetCollector:
    """What the serving process exposes: the merged files (``multiprocess_merge``), after dropping dead
    workers' live gauges, with the label caps applied fleet-wide (``caps``: label -> limit; ``per_agent``:
    label -> limit per agent), plus the directory's free space (``agentvigil_multiprocess_dir_free_bytes``)
    so an alert sees it fill up. Series folded by the fleet caps are counted once each in
    ``agentvigil_label_overflow_total{label}`` of the serving process."""

    def __init__(self, path: str, caps: dict[str, int] | None = None, per_agent: dict[str, int] | None = None):
        self.path = path
        self.caps = FleetCaps(caps or {}, per_agent)
        self._merged = MultiProcessMerge(path, self.caps)
        self._prefetch: threading.Thread | None = None
        self._prefetch_lock = threading.Lock()

    def start_prefetch(self) -> None:
        """Decode new file entries in the background from now on (idempotent): run by the serving process from
        the moment it binds, so the series a deploy creates are decoded as they appear, not by a scrape."""
        with self._prefetch_lock:
            if self._prefetch is None:
                self._prefetch = threading.Thread(target=self._prefetch_loop, name="agentvigil-multiprocess-merge",
                                                  daemon=True)
                self._prefetch.start()

    def collect(self) -> Iterable[Metric]:
        remove_dead_workers(self.path)
        check_space(self.path)
        families = self._merged.collect()
        self._count_folds()
        yield from families
        yield from self._free()

    def render(self, encoder: Callable[[Any], bytes]) -> bytes:
        """``encoder(registry)`` of a registry holding only this collector (prometheus_client's text or
        OpenMetrics ``generate_latest``), the merged series rendered from cached lines."""
        remove_dead_workers(self.path)
        check_space(self.path)
        body = self._merged.render(encoder)
        self._count_folds()
        if self._prefetch is None:  # this process serves: from now on, decode new entries between scrapes
            self.start_prefetch()
        return body + encoder(FamilyList(list(self._free())))

    def _prefetch_loop(self, interval: float = PREFETCH_INTERVAL) -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            try:
                self._merged.prefetch()
            except Exception as exc:  # never raise in a background thread of the agent
                internal_error("multiprocess", exc)
                stop.wait(60)

    def _count_folds(self) -> None:
        pending, self.caps.pending = self.caps.pending, {}
        if not pending:
            return
        try:
            from .metrics import default_metrics

            counter = default_metrics().label_overflow
            for label, count in pending.items():
                counter.labels(label).inc(count)
        except Exception as exc:  # a full directory: the scrape still answers
            internal_error("multiprocess", exc)

    def _free(self) -> Iterable[Metric]:
        try:
            free = GaugeMetricFamily("agentvigil_multiprocess_dir_free_bytes",
                                     "Free bytes in PROMETHEUS_MULTIPROC_DIR (a full tmpfs kills writers).")
            free.add_metric([], float(free_bytes(self.path)))
            yield free
        except OSError as exc:
            internal_error("multiprocess", exc)


def fleet_collector(path: str | None = None) -> FleetCollector:
    """The collector of every worker's metrics in the multiprocess directory, with this process' caps."""
    path = path or directory()
    if not path:
        raise ValueError(f"{ENV} is not set")
    from .metrics import default_metrics

    m = default_metrics()
    caps = {label: cap.limit for label, cap in m.cap.items()}
    per_agent = {"tool": m.tools_per_agent.limit, "model": m.models_per_agent.limit}
    return FleetCollector(path, caps, per_agent)


def fleet_registry(path: str | None = None, collector: FleetCollector | None = None) -> CollectorRegistry:
    """A registry serving every worker's metrics from the multiprocess directory."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector or fleet_collector(path))  # type: ignore[arg-type]
    return registry


class SpaceWatch:
    """Checks the directory every ``interval`` seconds in each process (restarted after fork), so a writer
    that never serves /metrics still learns the tmpfs is filling up."""

    def __init__(self, interval: float = 15.0):
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forked)

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="agentvigil-multiprocess", daemon=True)
                self._thread.start()

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._thread = None
        if enabled():
            self.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                check_space()
            except Exception as exc:
                internal_error("multiprocess", exc)


_watch: SpaceWatch | None = None


def watch_space() -> None:
    """Start the per-process space check (idempotent)."""
    global _watch
    if _watch is None:
        _watch = SpaceWatch()
    _watch.start()


if directory() is not None:
    _back_files()
