"""Captured inputs and outputs, per model version: ``/api/captures``.

Devices send captures through their telemetry outbox (see
:mod:`fleet_protocol.captures`); here they are listed (without tensors) and
read one at a time with their tensors as Open Inference Protocol tensors.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from fleet_protocol import oip
from fleet_protocol.captures import decode_capture

from ...errors import NotFoundError
from ...store import captures as capture_store
from ..deps import FleetDep
from ..schemas import CapturePublic, CaptureSummary

router = APIRouter(prefix="/captures", tags=["captures"])


@router.get("", response_model=list[CaptureSummary])
def list_captures(fleet: FleetDep, model: str | None = None, version: int | None = None,
                  device_id: str | None = None,
                  reason: Annotated[str | None, Query(description="low_confidence: the hard examples only")] = None,
                  after_id: Annotated[int, Query(ge=0, description="Page: ids greater than this")] = 0,
                  limit: Annotated[int, Query(ge=1, le=capture_store.MAX_QUERY_ROWS)] = 100) -> list[dict]:
    """Oldest first."""
    return capture_store.list_captures(db=fleet.db, model=model, version=version, device_id=device_id,
                                       reason=reason, after_id=after_id, limit=limit)


@router.get("/{capture_id}", response_model=CapturePublic)
def get_capture(fleet: FleetDep, capture_id: int) -> dict:
    record = capture_store.get_capture(db=fleet.db, capture_id=capture_id)
    if record is None:
        raise NotFoundError(f"there is no capture {capture_id}")
    capture = decode_capture(record.pop("data"))  # validated at ingest
    return {**record, "accelerator": capture.accelerator,
            "inputs": [oip.encode_tensor(n, a) for n, a in capture.inputs.items()],
            "outputs": [oip.encode_tensor(n, a) for n, a in capture.outputs.items()]}
