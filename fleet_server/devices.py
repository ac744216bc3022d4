"""The device registry as the API sees it: register, list, show, rename and retag devices, and their telemetry.

Devices also appear by themselves when their agent first reports
(:mod:`fleet_server.handlers`) or when an operator enrolls them
(:mod:`fleet_server.enrollment`); tags set through ``edgefleet device tag``
(with an explanation of what the device runs) are in
:meth:`fleet_server.deployments.Deployments.retag_device`, revocation in
:mod:`fleet_server.revocation`. A change of tags recomputes the device's
desired state; nothing here talks to the device.
"""

from __future__ import annotations

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import NAME
from fleet_protocol.timestamps import to_iso

from .clock import utc_now
from .desired import DesiredStates
from .errors import ConflictError, NotFoundError
from .store import Database
from .store import devices as device_store
from .store import telemetry as telemetry_store


class Devices:
    """Devices over the store; each public record lists the modules the device last reported. Built by the fleet."""

    def __init__(self, *, db: Database, desired: DesiredStates):
        self._db = db
        self._desired = desired

    def register(self, *, device_id: str, name: str | None, tags: dict[str, str]) -> dict:
        """Register a device ahead of its agent; 409 when the id is taken."""
        if not NAME.fullmatch(device_id):
            raise BadDataError(f"device id {device_id!r} must be lowercase letters, digits, '.', '_' or '-' "
                               "(up to 64, starting with a letter or digit)")
        if not device_store.create_device(db=self._db, device_id=device_id, name=name, tags=tags,
                                          created=to_iso(utc_now())):
            raise ConflictError(f"device {device_id!r} already exists")
        self._desired.recompute([device_id])
        return self.get(device_id)

    def list_devices(self, *, status: str | None, tags: dict[str, str]) -> list[dict]:
        return [_public(d) for d in device_store.list_devices(db=self._db, status=status, tags=tags)]

    def get(self, device_id: str) -> dict:
        return _public(self._get(device_id))

    def update(self, device_id: str, *, name: str | None, tags: dict[str, str] | None) -> dict:
        """Rename and/or replace all tags (None: keep); new tags re-evaluate selector deployments for the device."""
        self._get(device_id)
        device_store.update_device(db=self._db, device_id=device_id, name=name, tags=tags)
        if tags is not None:
            self._desired.recompute([device_id])
        return self.get(device_id)

    def telemetry(self, device_id: str, *, kind: str | None, limit: int) -> list[dict]:
        """The device's telemetry records, newest first; 404 for an unknown device."""
        self._get(device_id)
        return telemetry_store.query(db=self._db, device_id=device_id, kind=kind, limit=limit)

    def _get(self, device_id: str) -> dict:
        device = device_store.get_device(db=self._db, device_id=device_id)
        if device is None:
            raise NotFoundError(f"there is no device {device_id!r}")
        return device


def _public(device: dict) -> dict:
    return {**device, "modules": list((device.get("reported") or {}).get("modules", []))}
