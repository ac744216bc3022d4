"""Device-side messages for the tests, built with the protocol's own dataclasses."""

from __future__ import annotations

from fleet_protocol import messages
from fleet_protocol.messages import (DeviceStatus, FetchRequest, ModuleReport, ReportedState, TelemetryBatch,
                                     TelemetryRecord)
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now


def status(device_id: str, state: str = "online", **extra) -> bytes:
    return messages.encode(DeviceStatus(device_id, state, ts=to_iso(utc_now()), **extra).to_dict())


def reported(device_id: str, modules: list[ModuleReport], generation: int = 1, error: dict | None = None) -> bytes:
    return messages.encode(ReportedState(device_id, generation, to_iso(utc_now()), tuple(modules),
                                         agent_version="0.1.0", profile="generic-cpu", error=error).to_dict())


def telemetry(device_id: str, seqs, outbox_id: str = "outbox-a", kind: str = "inference") -> bytes:
    records = tuple(TelemetryRecord(seq, to_iso(utc_now()), kind, {"latency_ms": seq}) for seq in seqs)
    return messages.encode(TelemetryBatch(device_id, outbox_id, records).to_dict())


def fetch(device_id: str, bundle_digest: str, chunks: list[str]) -> bytes:
    return messages.encode(FetchRequest(device_id, bundle_digest, tuple(chunks)).to_dict())
