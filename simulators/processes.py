"""Spread a simulated fleet over worker processes, each with its own MQTT loop; merge their stats.

One Python process drives a few thousand devices (one loop thread, the GIL);
:class:`FleetProcesses` starts ``processes`` workers (``spawn``), gives
worker *k* every *k*-th device id, and merges the stats each worker sends
once per ``report_interval_s``. Device ids, profiles and faults are seeded
per device, so the split does not change what a device does.

It does not restart a worker that died: :meth:`FleetProcesses.stats` says so
under ``failed_workers``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import queue
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from .faults import FaultPlan

FDS_PER_DEVICE = 4  # its MQTT socket and its SQLite outbox (database, WAL, shared memory)
SUMMED = ("devices", "connected", "outbox_pending", "telemetry_sent", "dropped_messages", "crashes", "partitions",
          "mqtt_clients", "rss_bytes")


@dataclass
class FleetSpec:
    """Everything a worker needs to build its part of the fleet (picklable)."""

    broker_url: str
    trusted_keys: list[str]
    root_dir: Path
    device_ids: list[str]
    profiles: list[tuple[str, float]] = field(default_factory=lambda: [("generic-cpu", 1.0)])
    tags: dict[str, str] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    seed: int = 0

    def part(self, index: int, processes: int) -> "FleetSpec":
        return FleetSpec(self.broker_url, self.trusted_keys, self.root_dir, self.device_ids[index::processes],
                         self.profiles, self.tags, self.settings, self.faults, self.seed)


def device_ids(count: int, prefix: str = "sim") -> list[str]:
    """``sim-00000``, ``sim-00001``... (zero-padded so they sort)."""
    width = max(5, len(str(count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def devices_per_process_limit() -> int:
    """How many devices one worker can open files for (its open-file hard limit, less some headroom)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return 1_000_000
    return max(1, (hard - 256) // FDS_PER_DEVICE)


class FleetProcesses:
    """Run :class:`FleetSpec` over ``processes`` workers (more if the open-file limit needs more)."""


    def __init__(self, spec: FleetSpec, processes: int, *, report_interval_s: float = 1.0):
        FaultPlan.parse(spec.faults)  # refuse a bad fault here, not in every worker
        self.spec = spec
        needed = math.ceil(len(spec.device_ids) / devices_per_process_limit())
        self.processes = max(1, min(max(processes, needed), len(spec.device_ids)))
        self.report_interval_s = report_interval_s
        context = mp.get_context("spawn")
        self._queue = context.Queue()
        self._stop = context.Event()
        self._workers = [context.Process(target=_worker, name=f"edgefleet-sim-{i}", daemon=True,
                                         args=(spec.part(i, self.processes), i, self._queue, self._stop,
                                               report_interval_s))
                         for i in range(self.processes)]
        self._latest: dict[int, dict] = {}
        self.started_at = 0.0
        self.all_connected_s: float | None = None

    def start(self) -> None:
        self.started_at = time.monotonic()
        for worker in self._workers:
            worker.start()

    def poll(self, timeout_s: float = 0.0) -> dict:
        """Take the reports that arrived (waiting up to ``timeout_s`` for one) and return :meth:`stats`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                report = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self._latest[report["worker"]] = report
            deadline = 0.0  # drain what else is there, without waiting
        stats = self.stats()
        if self.all_connected_s is None and stats["connected"] == len(self.spec.device_ids):
            self.all_connected_s = round(time.monotonic() - self.started_at, 2)
            stats["all_connected_s"] = self.all_connected_s
        return stats

    def stats(self) -> dict:
        """The workers' latest stats merged (sums; modules by version), plus elapsed time and failures."""
        merged: dict = {name: 0 for name in SUMMED}
        modules: dict[str, int] = {}
        for report in self._latest.values():
            for name in SUMMED:
                merged[name] += report.get(name, 0)
            for key, count in report.get("modules", {}).items():
                modules[key] = modules.get(key, 0) + count
        merged["devices_total"] = len(self.spec.device_ids)
        merged["modules"] = dict(sorted(modules.items()))
        merged["processes"] = self.processes
        merged["elapsed_s"] = round(time.monotonic() - self.started_at, 1)
        merged["all_connected_s"] = self.all_connected_s
        merged["failed_workers"] = [w.name for w in self._workers if w.exitcode not in (None, 0)]
        merged["workers_reporting"] = len(self._latest)
        return merged

    def stop(self, timeout_s: float = 60.0) -> dict:
        """Stop every worker cleanly (devices publish offline) and return the final merged stats."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(max(0.1, deadline - time.monotonic()))
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
        return self.poll()


def _worker(spec: FleetSpec, index: int, reports, stop, interval_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    logging.basicConfig(level=os.environ.get("EDGEFLEET_LOG_LEVEL", "WARNING"),
                        format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    from .fleet import SimulatedFleet  # heavy imports (onnxruntime) in the worker only

    fleet = SimulatedFleet(spec.broker_url, spec.trusted_keys, spec.root_dir, spec.device_ids,
                           profiles=spec.profiles, tags=spec.tags, settings=spec.settings, faults=spec.faults,
                           seed=spec.seed)
    fleet.start()
    try:
        while True:
            reports.put({"worker": index, **fleet.stats()})
            if stop.wait(interval_s):
                break
    finally:
        fleet.stop()
        reports.put({"worker": index, **fleet.stats(), "connected": 0})
