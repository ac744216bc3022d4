"""Telemetry across devices: ``/api/telemetry``, raw records or minute/hour rollups (one device's raw records:
``/api/devices/{id}/telemetry``)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from ...telemetry import MAX_QUERY_ROWS
from ..deps import TelemetryDep
from ..schemas import TelemetryPublic, TelemetryRollupPublic

router = APIRouter(prefix="/telemetry", tags=["telemetry"])


@router.get("", response_model=list[TelemetryPublic | TelemetryRollupPublic])
def query(telemetry: TelemetryDep, device_id: str | None = None,
          kind: Annotated[str | None, Query(description="Raw records of this kind only")] = None,
          model: Annotated[str | None, Query(description="Rollups of this model only ('' for the devices' own "
                                                         "rows: heartbeats, events)")] = None,
          since: Annotated[str | None, Query(description="ISO time or span back (30m, 6h, 7d), on the device's "
                                                         "time")] = None,
          until: Annotated[str | None, Query(description="ISO time or span back")] = None,
          resolution: Annotated[Literal["auto", "raw", "minute", "hour"],
                                Query(description="raw records, minute or hour rollups; auto: raw unless since "
                                                  "reaches past the raw retention")] = "auto",
          limit: Annotated[int, Query(ge=1, le=MAX_QUERY_ROWS)] = 100) -> list[dict]:
    """Newest first."""
    return telemetry.query(device_id=device_id, kind=kind, model=model, since=since, until=until,
                           resolution=resolution, limit=limit)
