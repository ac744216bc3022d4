"""Devices: ``/api/devices``."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status

from fleet_protocol.errors import BadDataError
from fleet_protocol.fields import NAME
from fleet_protocol.timestamps import to_iso

from ... import deployments as deployment_service
from ...audit import note
from ...clock import utc_now
from ...errors import ConflictError, NotFoundError
from ...store import devices as device_store
from ...store import telemetry as telemetry_store
from ...tokens import ADMIN
from ..deps import FleetDep, check_role, require_admin
from ..schemas import (DeviceCreate, DeviceDetail, DeviceExplain, DevicePublic, DeviceTags, DeviceUpdate,
                       TelemetryPublic)
from ._params import parse_tag_filters

router = APIRouter(prefix="/devices", tags=["devices"])


def public(device: dict) -> dict:
    return {**device, "modules": list((device.get("reported") or {}).get("modules", []))}


def _get(fleet, device_id: str) -> dict:
    device = device_store.get_device(db=fleet.db, device_id=device_id)
    if device is None:
        raise NotFoundError(f"there is no device {device_id!r}")
    return device


@router.post("", response_model=DeviceDetail, status_code=status.HTTP_201_CREATED)
def register(fleet: FleetDep, request: Request, body: DeviceCreate) -> dict:
    """Register a device ahead of its agent (devices also appear by themselves when their agent connects)."""
    note(request, device_id=body.id, tags=body.tags)
    if not NAME.fullmatch(body.id):
        raise BadDataError(f"device id {body.id!r} must be lowercase letters, digits, '.', '_' or '-' "
                           "(up to 64, starting with a letter or digit)")
    if not device_store.create_device(db=fleet.db, device_id=body.id, name=body.name, tags=body.tags,
                                      created=to_iso(utc_now())):
        raise ConflictError(f"device {body.id!r} already exists")
    fleet.desired.recompute([body.id])
    return public(_get(fleet, body.id))


@router.get("", response_model=list[DevicePublic])
def list_devices(fleet: FleetDep,
                 tag: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None,
                 status: Literal["online", "offline", "unknown"] | None = None) -> list[dict]:
    return [public(d) for d in device_store.list_devices(db=fleet.db, status=status, tags=parse_tag_filters(tag))]


@router.get("/{device_id}", response_model=DeviceDetail)
def get_device(fleet: FleetDep, device_id: str) -> dict:
    return public(_get(fleet, device_id))


@router.patch("/{device_id}", response_model=DeviceDetail)
def update_device(fleet: FleetDep, request: Request, device_id: str, body: DeviceUpdate) -> dict:
    """Rename (operator) or replace all tags (admin); deployments by tag selector are re-evaluated for the device."""
    note(request, name=body.name, tags=body.tags)
    if body.tags is not None:
        check_role(request.state.principal, ADMIN)
    _get(fleet, device_id)
    device_store.update_device(db=fleet.db, device_id=device_id, name=body.name, tags=body.tags)
    if body.tags is not None:
        fleet.desired.recompute([device_id])
    return public(_get(fleet, device_id))


@router.post("/{device_id}/tags", response_model=DeviceExplain, dependencies=[Depends(require_admin)])
def tag(fleet: FleetDep, request: Request, device_id: str, body: DeviceTags) -> dict:
    """Set and remove tags (admin): selector deployments and their fit checks are re-evaluated for the device at
    once; the answer explains what it runs now and why (``edgefleet device tag``)."""
    note(request, set=body.set, removed=body.remove)
    return deployment_service.retag_device(fleet, device_id, set_tags=body.set, remove=body.remove)


@router.get("/{device_id}/explain", response_model=DeviceExplain)
def explain(fleet: FleetDep, device_id: str) -> dict:
    """Per module: which deployment put the version there and why (priority, then newest), and who lost."""
    return deployment_service.explain_device(fleet, device_id)


@router.get("/{device_id}/telemetry", response_model=list[TelemetryPublic])
def telemetry(fleet: FleetDep, device_id: str, kind: str | None = None,
              limit: Annotated[int, Query(ge=1, le=telemetry_store.MAX_QUERY_ROWS)] = 100) -> list[dict]:
    _get(fleet, device_id)
    return telemetry_store.query(db=fleet.db, device_id=device_id, kind=kind, limit=limit)
