"""Reading what devices sent: telemetry across devices (raw records or minute/hour rollups), captures.

Ingest is not here: batches arrive over MQTT and are stored by
:mod:`fleet_server.handlers`; rollups are made and old rows pruned by
:mod:`fleet_server.retention`. A capture is read back with its tensors as
Open Inference Protocol tensors (decoded from what was validated at ingest).

Telemetry is read at a resolution: ``raw`` records, ``minute`` or ``hour``
rollups, or ``auto`` (the default): raw records unless ``since`` reaches
back past the raw retention (pruned there), then minute rollups while
``since`` is within their retention, else hour rollups. ``kind`` filters raw
records only (with ``auto`` it asks for raw), ``model`` rollups only (with
``auto`` it asks for rollups). Both filter on the device's time (``ts``, a
rollup's bucket).
"""

from __future__ import annotations

from datetime import timedelta

from fleet_protocol import oip
from fleet_protocol.captures import decode_capture
from fleet_protocol.errors import BadDataError
from fleet_protocol.timestamps import to_iso

from . import telemetry_rollup
from .clock import utc_now
from .config import ServerConfig
from .errors import NotFoundError
from .spans import parse_since
from .store import Database
from .store import captures as capture_store
from .store import rollups as rollup_store
from .store import telemetry as telemetry_store

MAX_QUERY_ROWS = telemetry_store.MAX_QUERY_ROWS  # records one telemetry query returns at most
MAX_CAPTURE_ROWS = capture_store.MAX_QUERY_ROWS  # captures one listing returns at most
RESOLUTIONS = ("auto", "raw", *telemetry_rollup.RESOLUTIONS)


class Telemetry:
    """Telemetry and captures in the store; built by the fleet."""

    def __init__(self, *, db: Database, config: ServerConfig):
        self._db = db
        self._config = config

    def query(self, *, device_id: str | None = None, kind: str | None = None, model: str | None = None,
              since: str | None = None, until: str | None = None, resolution: str = "auto",
              limit: int = 100) -> list[dict]:
        """Records or rollup rows, newest first; ``since`` and ``until``: ISO times or spans back (``30m``, ``7d``)."""
        since, until = parse_since(since), parse_since(until)
        chosen = choose_resolution(resolution, since=since, kind=kind, model=model, config=self._config)
        if chosen == "raw":
            return telemetry_store.query(db=self._db, device_id=device_id, kind=kind, since=since, until=until,
                                         limit=limit)
        if since is not None:  # the bucket holding `since` overlaps the span asked for
            since = telemetry_rollup.bucket_start(since, since, telemetry_rollup.RESOLUTIONS[chosen])
        return rollup_store.query(db=self._db, resolution=chosen, device_id=device_id, model=model, since=since,
                                  until=until, limit=limit)

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


def choose_resolution(resolution: str, *, since: str | None, kind: str | None, model: str | None,
                      config: ServerConfig) -> str:
    """The resolution that answers: the one asked for, or for ``auto`` the finest one that still holds ``since``."""
    if resolution not in RESOLUTIONS:
        raise BadDataError(f"resolution {resolution!r} is not one of {', '.join(RESOLUTIONS)}")
    if kind is not None and model is not None:
        raise BadDataError("kind filters raw records and model filters rollups: give one of them")
    if resolution == "auto":
        if kind is None and (model is not None or _before(since, config.telemetry_retention_s)):
            return "hour" if _before(since, config.minute_rollup_retention_s) else "minute"
        return "raw"
    if resolution == "raw" and model is not None:
        raise BadDataError("model filters rollups (resolution minute or hour); raw records filter by kind")
    if resolution != "raw" and kind is not None:
        raise BadDataError(f"kind filters raw records; {resolution} rollups have one row per device, model version and "
                           "bucket (filter them with model)")
    return resolution


def _before(since: str | None, retention_s: int) -> bool:
    """Whether ``since`` reaches back past what a retention of ``retention_s`` keeps."""
    return since is not None and since < to_iso(utc_now() - timedelta(seconds=retention_s))
