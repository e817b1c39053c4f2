"""The merge of a ``PROMETHEUS_MULTIPROC_DIR``: what prometheus_client's ``MultiProcessCollector`` returns,
without re-parsing every file entry on every scrape.

prometheus_client stays the writer. Its files are append-only: a header with the bytes used, then entries
(length, JSON key, padding, value and timestamp as two doubles) that never move; values change in place. So
each file's entries are decoded once (and again only past the last decoded offset when the file grows), each
key resolved once to a *slot* (one output series, after the fleet label caps; the same key in every worker's
file is resolved once), and ``struct.Struct``s (one per decoded stretch of a file, merged past a few) unpack
its doubles. A scrape then reads the files, unpacks,
and adds each value to its slot: counters, histograms, summaries and ``sum`` gauges add up, ``min``/``max``
gauges keep the lowest or highest, ``mostrecent`` the value with the latest timestamp, ``all``/``liveall`` keep
one series per pid, exactly as prometheus_client merges them (tests/fleet/test_merge.py diffs the two).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import mmap
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from ._safety import internal_error
from .metrics import OVERFLOW

_INT = struct.Struct("i")
_KIND = {"min": "min", "livemin": "min", "max": "max", "livemax": "max", "sum": "sum", "livesum": "sum",
         "mostrecent": "recent", "livemostrecent": "recent"}  # any other gauge mode (all, liveall): per pid
_TYPES = ("counter", "gauge", "histogram", "summary")  # what prometheus_client's multiprocess mode writes
_MAX_KEYS = 200_000
Labels = tuple[tuple[str, str], ...]


class FleetCaps:
    """The label caps applied to the merged series of all workers: each worker caps its own label values, so
    W workers could expose W times the cap. ``limits``: label -> distinct values; ``per_agent``: label ->
    distinct values per agent value (tools, models). Past a cap a value folds into ``__overflow__`` (first
    come, first admitted; kept across scrapes). Each label set folded is counted once, per label, in
    ``pending`` (the caller takes the counts after each merge)."""

    def __init__(self, limits: dict[str, int], per_agent: dict[str, int] | None = None):
        self.limits = limits
        self.per_agent = per_agent or {}
        self.admitted: dict[str, set[str]] = {label: set() for label in limits}
        self._per_agent: dict[str, dict[str, set[str]]] = {label: {} for label in self.per_agent}
        self.pending: dict[str, int] = {}
        self.folded = 0  # label sets folded so far
        self._done: dict[Labels, Labels] = {}

    @staticmethod
    def _admit(admitted: set[str], limit: int, value: str) -> str:
        if value in admitted or value == OVERFLOW:
            return value
        if len(admitted) < limit:
            admitted.add(value)
            return value
        return OVERFLOW

    def relabel(self, labels: Labels) -> Labels:
        """``labels`` with every value past its cap replaced by ``__overflow__`` (kept: admission is final)."""
        done = self._done.get(labels)
        if done is None:
            if len(self._done) > _MAX_KEYS:
                self._done.clear()
            done = self._done[labels] = self._relabel(labels)
        return done

    def _relabel(self, labels: Labels) -> Labels:
        current = dict(labels)
        changed = False
        for name, value in labels:
            limit = self.limits.get(name)
            if limit is not None and self._admit(self.admitted[name], limit, value) != value:
                current[name] = OVERFLOW
                changed = True
        agent = current.get("agent")
        if agent is not None:  # tools and models per agent, after the agent itself is capped
            for name, limit in self.per_agent.items():
                inner = current.get(name)
                if inner is not None and self._admit(self._per_agent[name].setdefault(agent, set()), limit,
                                                     inner) != inner:
                    current[name] = OVERFLOW
                    changed = True
        if not changed:
            return labels
        self.folded += 1
        for name, value in labels:
            if current[name] != value:
                self.pending[name] = self.pending.get(name, 0) + 1
        return tuple((name, current[name]) for name, _ in labels)


class _File:
    """One file's decoded entries: their slots, and Structs reading all their (value, timestamp) pairs: one per
    decoded stretch of the file (a growing file adds one), merged into one past a few."""

    __slots__ = ("inode", "end", "slots", "positions", "chunks", "families", "check")

    def __init__(self, inode: tuple[int, int]):
        self.inode = inode
        self.end = 8            # offset past the last decoded entry
        self.slots: list[int] = []
        self.positions: list[int] = []
        self.chunks: list[tuple[int, struct.Struct]] = []  # (offset, Struct of the entries from there)
        self.families: set[str] = set()
        self.check = b""       # the last entry's bytes, to tell a re-created file (same inode) from a grown one

    def add_chunk(self, first: int) -> None:
        """A Struct for the entries from index ``first`` on; past 8 chunks, one Struct for all."""
        if len(self.chunks) >= 8:
            self.chunks, first = [], 0
        positions = self.positions[first:]
        if not positions:
            return
        base = cursor = positions[0]
        fmt = ["="]
        for position in positions:
            fmt.append(f"{position - cursor}xdd")
            cursor = position + 16
        self.chunks.append((base, struct.Struct("".join(fmt))))

    def values(self, data: bytes) -> tuple[float, ...]:
        """value, timestamp, value, timestamp, ... of every decoded entry, in file order."""
        chunks = self.chunks
        if len(chunks) == 1:
            return chunks[0][1].unpack_from(data, chunks[0][0])
        out: tuple[float, ...] = ()
        for base, packed in chunks:
            out += packed.unpack_from(data, base)
        return out


class MultiProcessMerge:
    """Merges the files of ``path`` like ``prometheus_client.multiprocess.MultiProcessCollector``; with
    ``caps``, label values past the fleet caps fold into ``__overflow__`` at the same time. Thread-safe."""

    def __init__(self, path: str, caps: FleetCaps | None = None):
        self.path = path
        self.caps = caps
        self._lock = threading.Lock()
        self._wanted = 0  # scrapes waiting for the lock: the prefetch gives way to them (a Lock is not fair)
        self._wanted_lock = threading.Lock()
        self._files: dict[str, _File] = {}
        # per (file type, gauge mode, pid of per-pid gauges): JSON key bytes -> (slot, family)
        self._resolved: dict[tuple[str, str, str], dict[bytes, tuple[int, str]]] = {}
        self._slot_of: dict[tuple[Any, ...], int] = {}
        # per slot: le (histogram buckets; None otherwise)
        self._slot_le: list[float | None] = []
        # per family: type, help, gauge mode, and its label groups in creation order (labels -> slots)
        self._families: dict[str, list[Any]] = {}
        self._slot_out: list[tuple[str, Labels]] = []  # sample name and labels as exposed
        # per family, per label group: [group id, its slots without le, its buckets sorted by le]
        self._groups: dict[str, dict[Labels, list[Any]]] = {}
        self._count_out: list[tuple[str, Labels]] = []  # per group id: the histogram's _count sample
        # per encoder: family headers, series line prefixes, and per series shape a template of the prefix
        self._lines: dict[tuple[Any, ...], tuple[dict[str, str], dict[int, str], dict[Any, _Template | None]]] = {}

    def collect(self) -> list[Metric]:
        with self._scrape():
            merged = self._collect()
            return [self._metric(family, info, samples) for family, info, samples in self._samples(merged)]

    @contextlib.contextmanager
    def _scrape(self) -> Iterator[None]:
        """The lock, for a scrape: the prefetch stops at its next batch instead of taking the lock again."""
        with self._wanted_lock:
            self._wanted += 1
        try:
            with self._lock:
                yield
        finally:
            with self._wanted_lock:
                self._wanted -= 1

    # -- decoding (once per entry) --------------------------------------------------------------------------
    def _slot(self, family: str, name: str, labels: Labels, le: float | None, typ: str, help_text: str,
              mode: str) -> int:
        if self.caps is not None:
            labels = self.caps.relabel(labels)
        key = (family, name, labels, le)
        slot = self._slot_of.get(key)
        if slot is None:
            slot = self._slot_of[key] = len(self._slot_le)
            self._slot_le.append(le)
            if family not in self._families:
                self._families[family] = [typ, help_text, mode]
                self._groups[family] = {}
            group = self._groups[family].get(labels)
            if group is None:
                group = self._groups[family][labels] = [len(self._count_out), [], []]
                self._count_out.append((family + "_count", labels))
            if le is None:
                self._slot_out.append((name, labels))
                group[1].append(slot)
            else:
                self._slot_out.append((family + "_bucket", labels + (("le", floatToGoString(le)),)))
                group[2].append(slot)
                group[2].sort(key=self._slot_le.__getitem__)
        return slot

    def _decode(self, entry: _File, data: bytes, used: int, typ: str, mode: str, pid: str,
                limit: int | None = None) -> None:
        """Resolve the entries between ``entry.end`` and ``used`` (at most ``limit`` of them) to slots, and add a
        Struct for them."""
        pos = entry.end
        per_pid = typ == "gauge" and mode not in _KIND
        # a key's slot depends only on its bytes, the file type and (per-pid gauges) the pid: resolved once per
        # key, not once per file that holds it
        cache = self._resolved.setdefault((typ, mode if typ == "gauge" else "", pid if per_pid else ""), {})
        if sum(len(c) for c in self._resolved.values()) > _MAX_KEYS:  # a parse cache only: churn of names
            self._resolved.clear()                                     # over days must not grow it for good
            cache = self._resolved.setdefault((typ, mode if typ == "gauge" else "", pid if per_pid else ""), {})
        slots, positions, families = entry.slots, entry.positions, entry.families
        start = last = pos
        first = len(positions)
        most = -1 if limit is None else first + limit
        try:
            while pos < used and len(positions) != most:
                start = pos
                length = _INT.unpack_from(data, pos)[0]
                if length <= 0 or length + pos > used:
                    raise RuntimeError(f"{typ} file of pid {pid or '?'}: corrupted entry at offset {pos}")
                raw = data[pos + 4:pos + 4 + length]
                pos += 4 + length + (8 - (length + 4) % 8)
                resolved = cache.get(raw)
                if resolved is None:
                    resolved = cache[raw] = self._resolve(raw, typ, mode, pid if per_pid else None)
                slots.append(resolved[0])
                positions.append(pos)
                families.add(resolved[1])
                pos += 16
                entry.end, last = pos, start
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError, struct.error) as exc:  # torn, foreign
            internal_error("multiprocess", exc)
        if entry.end > last:  # the length and key of the last entry, not its value (which changes in place)
            entry.check = data[last:entry.end - 16]
        entry.add_chunk(first)

    def _resolve(self, raw: bytes, typ: str, mode: str, pid: str | None) -> tuple[int, str]:
        """(slot, family) of one entry's JSON key."""
        text = raw.decode("utf-8")
        try:
            parsed, end = _scan(text, 0)  # json.loads without its wrapper: ~3x faster per key
        except StopIteration:
            raise ValueError(f"{typ} file: an entry's key is not JSON") from None
        if text[end:].strip(" \t\n\r"):
            raise ValueError(f"{typ} file: trailing bytes after an entry's key")
        family, name, labels, help_text = parsed
        labels_key = tuple(sorted(labels.items()))
        le: float | None = None
        if typ == "histogram":
            for label, value in labels_key:
                if label == "le":
                    le = float(value)
                    labels_key = tuple(item for item in labels_key if item[0] != "le")
                    break
        if pid is not None:
            labels_key = labels_key + (("pid", pid),)
        return self._slot(family, name, labels_key, le, typ, help_text, mode), family

    def prefetch(self, batch: int = 500) -> int:
        """Decode what the files gained since the last look, at most ``batch`` entries per hold of the lock (a
        scrape waits for one batch, not for a whole burst), so that a scrape while series are still appearing
        (a deploy) finds them decoded; returns the entries decoded. Run between scrapes by the serving process
        (``FleetCollector``). A scrape waiting for the lock ends the pass (the next one goes on from there)."""
        decoded = 0
        for path in glob.glob(os.path.join(self.path, "*.db")):
            parsed = _parse_name(path)
            if parsed is None:
                continue
            gained = batch
            while gained >= batch:  # bounded: each turn decodes a full batch of the file's finite entries
                if self._wanted:
                    return decoded
                with self._lock:
                    entry = self._files.get(path)
                    before = len(entry.slots) if entry is not None else 0
                    read = self._read(path, *parsed, values=False, limit=batch)
                    if read is None:
                        break
                    gained = len(read[0].slots) - (before if read[0] is entry else 0)
                    decoded += gained
        return decoded

    def _read(self, path: str, typ: str, mode: str, pid: str, values: bool = True,
              limit: int | None = None) -> tuple[_File, tuple[float, ...]] | None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(mmap.PAGESIZE)
                used = _INT.unpack_from(data, 0)[0] if len(data) >= 4 else 0
                known = self._files.get(path)
                if not values and known is not None and used == known.end:
                    return known, ()  # nothing new (a re-created file is caught at the next scrape)
                if used > len(data):
                    data += fh.read(used - len(data))
                stat = os.fstat(fh.fileno())
        except FileNotFoundError:  # removed since the glob (a dead worker's live gauges, a wiped directory)
            return None
        used = min(used, len(data))
        entry = self._files.get(path)
        inode = (stat.st_dev, stat.st_ino)
        if (entry is None or entry.inode != inode or used < entry.end
                or data[entry.end - 16 - len(entry.check):entry.end - 16] != entry.check):
            entry = self._files[path] = _File(inode)
        if used > entry.end:
            self._decode(entry, data, used, typ, mode, pid, limit)
        return entry, entry.values(data) if values else ()

    # -- merging (every scrape) -----------------------------------------------------------------------------
    def _collect(self) -> _Merged:
        paths = glob.glob(os.path.join(self.path, "*.db"))
        for gone in self._files.keys() - set(paths):
            del self._files[gone]
        n = len(self._slot_le)
        acc = [0.0] * n
        stamps = [0.0] * n
        present: set[int] = set()
        families: set[str] = set()
        for path in paths:
            parsed = _parse_name(path)
            if parsed is None:
                continue
            typ, mode, pid = parsed
            read = self._read(path, typ, mode, pid)
            if read is None:
                continue
            entry, pairs = read
            if len(self._slot_le) > n:  # new slots in this file
                grow = len(self._slot_le) - n
                acc.extend([0.0] * grow)
                stamps.extend([0.0] * grow)
                n = len(self._slot_le)
            slots, values = entry.slots, pairs[::2]
            families.update(entry.families)
            kind = _KIND.get(mode, "last") if typ == "gauge" else "sum"
            if kind == "sum":
                for slot, value in zip(slots, values, strict=True):
                    acc[slot] += value
                present.update(slots)
            elif kind == "min":
                for slot, value in zip(slots, values, strict=True):
                    if slot not in present:
                        present.add(slot)
                        acc[slot] = value
                    elif value < acc[slot]:
                        acc[slot] = value
            elif kind == "max":
                for slot, value in zip(slots, values, strict=True):
                    if slot not in present:
                        present.add(slot)
                        acc[slot] = value
                    elif value > acc[slot]:
                        acc[slot] = value
            elif kind == "recent":  # as prometheus_client: a value never written (timestamp 0) is not shown
                for slot, value, stamp in zip(slots, values, pairs[1::2], strict=True):
                    if stamps[slot] < stamp:
                        stamps[slot] = stamp
                        acc[slot] = value
                        present.add(slot)
            else:
                for slot, value in zip(slots, values, strict=True):
                    acc[slot] = value
                present.update(slots)
        return families, acc, present

    def _samples(self, merged: _Merged) -> Iterator[tuple[str, list[Any], list[tuple[int, float]]]]:
        """Per present family: (name, [type, help, mode], [(key, value)]) in the order of prometheus_client's
        merge within each label group (buckets by le, cumulative, then _count). A key is a slot, or
        ``-1 - group`` for a histogram's _count; ``_out(key)`` gives its sample name and labels."""
        present_families, acc, present = merged
        for family, info in self._families.items():
            if family not in present_families:
                continue
            samples: list[tuple[int, float]] = []
            add = samples.append
            for gid, plain, buckets in self._groups[family].values():
                for slot in plain:
                    if slot in present:
                        add((slot, acc[slot]))
                total, seen = 0.0, False
                for slot in buckets:
                    if slot in present:
                        total += acc[slot]
                        seen = True
                        add((slot, total))
                if seen:
                    add((-1 - gid, total))
            yield family, info, samples

    def _out(self, key: int) -> tuple[str, Labels]:
        return self._slot_out[key] if key >= 0 else self._count_out[-1 - key]

    def _metric(self, family: str, info: list[Any], samples: list[tuple[int, float]]) -> Metric:
        typ, help_text, mode = info
        metric = Metric(family, help_text, typ)
        if typ == "gauge":
            metric._multiprocess_mode = mode  # type: ignore[attr-defined]
        out = self._out
        metric.samples = [Sample(name, dict(labels), value)
                          for (name, labels), value in ((out(key), value) for key, value in samples)]
        return metric

    def render(self, encoder: Callable[[Any], bytes]) -> bytes:
        """What ``encoder`` (prometheus_client's ``generate_latest`` or ``openmetrics.generate_latest``) makes
        of ``collect()``, without its trailing ``# EOF``. Each family's header and each series' line up to its
        value are rendered by ``encoder`` itself, once, and kept; a scrape only formats the values."""
        with self._scrape():
            merged = self._collect()
            key = _encoder_key(encoder)
            if key not in self._lines and len(self._lines) >= 4:  # Accept headers choose it: keep a few
                self._lines.clear()
            headers, prefixes, templates = self._lines.setdefault(key, ({}, {}, {}))
            out: list[str] = []
            for family, info, samples in self._samples(merged):
                header = headers.get(family)
                if header is None:
                    header = headers[family] = _render(encoder, self._metric(family, info, []))
                out.append(header)
                new = [k for k, _ in samples if k not in prefixes]
                if new:
                    prefixes.update(self._new_prefixes(encoder, family, info, header, new, templates))
                out.extend([f"{prefixes[k]}{_go(value)}\n" for k, value in samples])
            return "".join(out).encode("utf-8")

    def _new_prefixes(self, encoder: Callable[[Any], bytes], family: str, info: list[Any], header: str,
                      keys: list[int], templates: dict[Any, _Template | None]) -> dict[int, str]:
        """The line prefixes of new series: from a template of their shape (sample name and label names) where
        the encoder's own line for the first series of that shape matched it; else from the encoder."""
        out: dict[int, str] = {}
        rest: list[tuple[int, float]] = []
        for k in keys:
            name, labels = self._out(k)
            shape = (family, name, tuple(label for label, _ in labels))
            if shape not in templates:
                template = self._template(encoder, family, info, header, name, shape[2])
                real = self._prefixes(encoder, family, info, header, [(k, 0.0)])[k]
                templates[shape] = template if template is not None and _fill(template, labels) == real else None
                out[k] = real
                continue
            template = templates[shape]
            if template is None:
                rest.append((k, 0.0))
            else:
                out[k] = _fill(template, labels)
        if rest:
            out.update(self._prefixes(encoder, family, info, header, rest))
        return out

    def _template(self, encoder: Callable[[Any], bytes], family: str, info: list[Any], header: str, name: str,
                  label_names: tuple[str, ...]) -> _Template | None:
        """The encoder's prefix for ``name`` with placeholder label values, cut at the placeholders: (the text
        between them, which label each stands for). None if the encoder's line is not of that form."""
        typ, help_text, mode = info
        metric = Metric(family, help_text, typ)
        if typ == "gauge":
            metric._multiprocess_mode = mode  # type: ignore[attr-defined]
        metric.samples = [Sample(name, {label: f"\x00{i}\x00" for i, label in enumerate(label_names)}, 0.0)]
        lines = _render(encoder, metric)[len(header):].split("\n")[:-1]
        if len(lines) != 1 or not lines[0].endswith(" 0.0"):
            return None
        cut = _PLACEHOLDER.split(lines[0][:-3])
        order = tuple(int(i) for i in cut[1::2])
        if sorted(order) != list(range(len(label_names))):
            return None
        return tuple(cut[0::2]), order

    def _prefixes(self, encoder: Callable[[Any], bytes], family: str, info: list[Any], header: str,
                  samples: list[tuple[int, float]]) -> dict[int, str]:
        """The sample lines of ``samples`` up to their value, from one encoder call."""
        lines = _render(encoder, self._metric(family, info, samples))[len(header):].split("\n")[:-1]
        if len(lines) != len(samples) or not all(line.endswith(" 0.0") for line in lines):
            raise ValueError(f"{family}: unexpected sample lines from the encoder")  # a format we do not know
        return {k: line[:-3] for (k, _), line in zip(samples, lines, strict=True)}


_Template = tuple[tuple[str, ...], tuple[int, ...]]  # texts around the label values; label index of each value
_PLACEHOLDER = re.compile("\x00([0-9]+)\x00")


def _fill(template: _Template, labels: Labels) -> str:
    """A template's prefix with ``labels``' values, escaped as both encoders escape label values."""
    texts, order = template
    pieces = [texts[0]]
    for index, text in zip(order, texts[1:], strict=True):
        value = labels[index][1]
        pieces.append(value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"'))
        pieces.append(text)
    return "".join(pieces)


def _parse_name(path: str) -> tuple[str, str, str] | None:
    """(type, gauge mode, pid) from a file name as prometheus_client writes it; None for other files."""
    parts = os.path.basename(path).split("_")
    if parts[0] not in _TYPES:
        return None
    if parts[0] == "gauge" and len(parts) > 2:
        return parts[0], parts[1], parts[2][:-3]
    return parts[0], "", ""


def _go(value: float) -> str:
    """floatToGoString, with its common case first: below 1e6 (and not NaN or -Inf) it is repr()."""
    return repr(value) if _MINUS_INF < value < 1e6 else floatToGoString(value)


_MINUS_INF = float("-inf")
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_Merged = tuple[set[str], list[float], set[int]]


class FamilyList:
    """A registry stand-in for an encoder: just ``collect()``."""

    def __init__(self, families: list[Metric]):
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _render(encoder: Callable[[Any], bytes], metric: Metric) -> str:
    text = encoder(FamilyList([metric])).decode("utf-8")
    return text[:-len(_EOF)] if text.endswith(_EOF) else text


def _encoder_key(encoder: Callable[[Any], bytes]) -> tuple[Any, ...]:
    if isinstance(encoder, functools.partial):
        return (encoder.func, encoder.args, tuple(sorted(encoder.keywords.items())))
    return (encoder,)


_EOF = "# EOF\n"
