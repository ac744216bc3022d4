"""Reading what devices sent: telemetry records across devices and captured inputs and outputs.

Ingest is not here: batches arrive over MQTT and are stored by
:mod:`fleet_server.handlers`. A capture is read back with its tensors as
Open Inference Protocol tensors (decoded from what was validated at ingest).
"""

from __future__ import annotations

from fleet_protocol import oip
from fleet_protocol.captures import decode_capture

from .errors import NotFoundError
from .store import Database
from .store import captures as capture_store
from .store import telemetry as telemetry_store

MAX_QUERY_ROWS = telemetry_store.MAX_QUERY_ROWS  # records one telemetry query returns at most
MAX_CAPTURE_ROWS = capture_store.MAX_QUERY_ROWS  # captures one listing returns at most


class Telemetry:
    """Telemetry and captures in the store; built by the fleet."""

    def __init__(self, *, db: Database):
        self._db = db

    def query(self, *, device_id: str | None, kind: str | None, limit: int) -> list[dict]:
        """Records, newest first."""
        return telemetry_store.query(db=self._db, device_id=device_id, kind=kind, limit=limit)

    def captures(self, *, model: str | None, version: int | None, device_id: str | None, reason: str | None,
                 after_id: int, limit: int) -> list[dict]:
        """Captures without their tensors, oldest first."""
        return capture_store.list_captures(db=self._db, model=model, version=version, device_id=device_id,
                                           reason=reason, after_id=after_id, limit=limit)

    def capture(self, capture_id: int) -> dict:
        """One capture with its inputs and outputs as Open Inference Protocol tensors."""
        record = capture_store.get_capture(db=self._db, capture_id=capture_id)
        if record is None:
            raise NotFoundError(f"there is no capture {capture_id}")
        capture = decode_capture(record.pop("data"))  # validated at ingest
        return {**record, "accelerator": capture.accelerator,
                "inputs": [oip.encode_tensor(n, a) for n, a in capture.inputs.items()],
                "outputs": [oip.encode_tensor(n, a) for n, a in capture.outputs.items()]}
