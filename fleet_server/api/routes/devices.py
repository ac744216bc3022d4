"""Devices: ``/api/devices/...`` (registry, tags, explain, telemetry, revoke).

A device's enrollment token is made at ``/api/enrollments`` (:mod:`.enrollments`) and used at ``/api/enroll``
(:mod:`.enroll`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, status

from ...audit import note
from ...telemetry import MAX_QUERY_ROWS
from ...tokens import ADMIN
from ..deps import DeploymentsDep, DevicesDep, RevocationDep, check_role, require_admin
from ..schemas import (DeviceCreate, DeviceDetail, DeviceExplain, DevicePublic, DeviceTags, DeviceUpdate,
                       RevocationPublic, TelemetryPublic)
from ._params import parse_tag_filters

router = APIRouter(prefix="/devices", tags=["devices"])


@router.post("", response_model=DeviceDetail, status_code=status.HTTP_201_CREATED)
def register(devices: DevicesDep, request: Request, body: DeviceCreate) -> dict:
    """Register a device ahead of its agent (devices also appear by themselves when their agent connects)."""
    note(request, device_id=body.id, tags=body.tags)
    return devices.register(device_id=body.id, name=body.name, tags=body.tags)


@router.get("", response_model=list[DevicePublic])
def list_devices(devices: DevicesDep,
                 tag: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None,
                 status: Literal["online", "offline", "unknown"] | None = None) -> list[dict]:
    return devices.list_devices(status=status, tags=parse_tag_filters(tag))


@router.get("/{device_id}", response_model=DeviceDetail)
def get_device(devices: DevicesDep, device_id: str) -> dict:
    return devices.get(device_id)


@router.patch("/{device_id}", response_model=DeviceDetail)
def update_device(devices: DevicesDep, request: Request, device_id: str, body: DeviceUpdate) -> dict:
    """Rename (operator) or replace all tags (admin); deployments by tag selector are re-evaluated for the device."""
    note(request, name=body.name, tags=body.tags)
    if body.tags is not None:
        check_role(request.state.principal, ADMIN)
    return devices.update(device_id, name=body.name, tags=body.tags)


@router.post("/{device_id}/tags", response_model=DeviceExplain, dependencies=[Depends(require_admin)])
def tag(deployments: DeploymentsDep, request: Request, device_id: str, body: DeviceTags) -> dict:
    """Set and remove tags (admin): selector deployments and their fit checks are re-evaluated for the device at
    once; the answer explains what it runs now and why (``edgefleet device tag``)."""
    note(request, set=body.set, removed=body.remove)
    return deployments.retag_device(device_id, set_tags=body.set, remove=body.remove)


@router.get("/{device_id}/explain", response_model=DeviceExplain)
def explain(deployments: DeploymentsDep, device_id: str) -> dict:
    """Per module: which deployment put the version there and why (priority, then newest), and who lost."""
    return deployments.explain_device(device_id)


@router.get("/{device_id}/telemetry", response_model=list[TelemetryPublic])
def telemetry(devices: DevicesDep, device_id: str, kind: str | None = None,
              limit: Annotated[int, Query(ge=1, le=MAX_QUERY_ROWS)] = 100) -> list[dict]:
    return devices.telemetry(device_id, kind=kind, limit=limit)


@router.post("/{device_id}/revoke", response_model=RevocationPublic)
def revoke(revocation: RevocationDep, device_id: str) -> dict:
    """Revoke the device's certificates (CRL, broker reload) and give it no modules; new connects are refused."""
    return revocation.revoke_device(device_id)
