"""Telemetry across devices: ``/api/telemetry`` (one device's: ``/api/devices/{id}/telemetry``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...telemetry import MAX_QUERY_ROWS
from ..deps import TelemetryDep
from ..schemas import TelemetryPublic

router = APIRouter(prefix="/telemetry", tags=["telemetry"])


@router.get("", response_model=list[TelemetryPublic])
def query(telemetry: TelemetryDep, device_id: str | None = None, kind: str | None = None,
          limit: Annotated[int, Query(ge=1, le=MAX_QUERY_ROWS)] = 100) -> list[dict]:
    """Newest first."""
    return telemetry.query(device_id=device_id, kind=kind, limit=limit)
