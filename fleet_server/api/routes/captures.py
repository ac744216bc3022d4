"""Captured inputs and outputs, per model version: ``/api/captures``.

Devices send captures through their telemetry outbox (see
:mod:`fleet_protocol.captures`); here they are listed (without tensors) and
read one at a time with their tensors as Open Inference Protocol tensors
(:class:`fleet_server.telemetry.Telemetry`).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...telemetry import MAX_CAPTURE_ROWS
from ..deps import TelemetryDep
from ..schemas import CapturePublic, CaptureSummary

router = APIRouter(prefix="/captures", tags=["captures"])


@router.get("", response_model=list[CaptureSummary])
def list_captures(telemetry: TelemetryDep, model: str | None = None, version: int | None = None,
                  device_id: str | None = None,
                  reason: Annotated[str | None, Query(description="low_confidence: the hard examples only")] = None,
                  after_id: Annotated[int, Query(ge=0, description="Page: ids greater than this")] = 0,
                  limit: Annotated[int, Query(ge=1, le=MAX_CAPTURE_ROWS)] = 100) -> list[dict]:
    """Oldest first."""
    return telemetry.captures(model=model, version=version, device_id=device_id, reason=reason, after_id=after_id,
                              limit=limit)


@router.get("/{capture_id}", response_model=CapturePublic)
def get_capture(telemetry: TelemetryDep, capture_id: int) -> dict:
    return telemetry.capture(capture_id)
