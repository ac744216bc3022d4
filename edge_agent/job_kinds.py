"""What each remote job kind does on the device (:data:`fleet_protocol.jobs.KINDS`); no shell, no paths.

Each function takes the verified :class:`~fleet_protocol.jobs.JobDocument` and
the agent's parts (:class:`JobContext`) and returns the result dict, or raises
an :class:`~fleet_protocol.errors.EdgefleetError` whose ``{code, category,
message}`` becomes the failed job's error. Values are integers and strings
(results are canonical JSON: no floats). The runner around them
(:mod:`edge_agent.jobs`) verifies, deduplicates and reports; this module only acts.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import psutil

from edgefleet_runtime.runtime import Runtime
from fleet_protocol.jobs import JobDocument
from fleet_protocol.timestamps import from_iso

from . import __version__
from .log_ring import LogRing
from .outbox import Outbox
from .reconciler import Reconciler
from .telemetry import Telemetry

_VERSIONS_OF = ("onnxruntime", "numpy", "paho-mqtt", "ai-edge-litert", "cryptography")


@dataclass(frozen=True)
class JobContext:
    reconciler: Reconciler
    runtime: Runtime
    telemetry: Telemetry
    outbox: Outbox
    logs: LogRing
    state_dir: Path
    profile: str


def restart_module(job: JobDocument, ctx: JobContext, now: datetime) -> dict:
    loaded = ctx.reconciler.restart(job.params["module"])
    return {"module": loaded.name, "version": loaded.version, "accelerator": loaded.accelerator,
            "health_attempts": loaded.health_attempts}


def health_check(job: JobDocument, ctx: JobContext, now: datetime) -> dict:
    loaded, checked = ctx.runtime.check_health(job.params["module"])
    return {"module": loaded.name, "version": loaded.version, "healthy": True, "checked": checked}


def collect_logs(job: JobDocument, ctx: JobContext, now: datetime) -> dict:
    text = ctx.logs.tail(job.params["max_bytes"])
    return {"text": text, "bytes": len(text.encode("utf-8")), "ring_bytes": ctx.logs.size_bytes,
            "ring_max_bytes": ctx.logs.max_bytes, "lines_dropped": ctx.logs.dropped}


def diagnostics(job: JobDocument, ctx: JobContext, now: datetime) -> dict:
    import onnxruntime

    memory = psutil.virtual_memory()
    disk = psutil.disk_usage(str(ctx.state_dir))
    skew = now - from_iso(job.issued, what="job issued")
    return {"providers": list(onnxruntime.get_available_providers()), "profile": ctx.profile,
            "memory": {"total_bytes": int(memory.total), "available_bytes": int(memory.available),
                       "agent_rss_bytes": int(psutil.Process().memory_info().rss)},
            "disk": {"path": "state_dir", "total_bytes": int(disk.total), "free_bytes": int(disk.free)},
            "versions": {"agent": __version__, "python": platform.python_version(), "platform": platform.platform(),
                         **{name: _version(name) for name in _VERSIONS_OF}},
            "clock_skew_s": round(skew.total_seconds()),  # device clock minus the job's issue time (1 s resolution)
            "modules": {name: m.version for name, m in sorted(ctx.runtime.table.items())}}


def flush_outbox(job: JobDocument, ctx: JobContext, now: datetime) -> dict:
    ctx.telemetry.flush_soon()
    return {"records_pending": ctx.outbox.count(), "bytes_pending": ctx.outbox.size_bytes(),
            "connected": ctx.telemetry.link.connected}


def _version(distribution: str) -> str | None:
    from importlib import metadata  # email, zipfile, csv: for the diagnostics job only, not the idle agent

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


RUN: dict[str, Callable[[JobDocument, JobContext, datetime], dict]] = {
    "restart_module": restart_module, "health_check": health_check, "collect_logs": collect_logs,
    "diagnostics": diagnostics, "flush_outbox": flush_outbox}
