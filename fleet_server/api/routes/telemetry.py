"""Telemetry across devices: ``/api/telemetry``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...store import telemetry as telemetry_store
from ..deps import FleetDep
from ..schemas import TelemetryPublic

router = APIRouter(prefix="/telemetry", tags=["telemetry"])


@router.get("", response_model=list[TelemetryPublic])
def query(fleet: FleetDep, device_id: str | None = None, kind: str | None = None,
          limit: Annotated[int, Query(ge=1, le=telemetry_store.MAX_QUERY_ROWS)] = 100) -> list[dict]:
    """Newest first."""
    return telemetry_store.query(db=fleet.db, device_id=device_id, kind=kind, limit=limit)
