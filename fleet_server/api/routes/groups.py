"""Named device groups: ``/api/groups`` (a target for deployments, rollouts and jobs)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ...audit import note
from ..deployment_schemas import GroupCreate, GroupPublic
from ..deps import DeploymentsDep

router = APIRouter(prefix="/groups", tags=["deployments"])


@router.post("", response_model=GroupPublic, status_code=status.HTTP_201_CREATED)
def create_group(deployments: DeploymentsDep, request: Request, body: GroupCreate) -> dict:
    """A named device group: a list of devices and/or a tag selector (membership follows tag changes)."""
    note(request, group=body.name, devices=body.devices, selector=body.selector)
    return deployments.create_group(name=body.name, devices=body.devices, selector=body.selector)


@router.get("", response_model=list[GroupPublic])
def list_groups(deployments: DeploymentsDep) -> list[dict]:
    return deployments.list_groups()


@router.get("/{name}", response_model=GroupPublic)
def get_group(deployments: DeploymentsDep, name: str) -> dict:
    return deployments.group_detail(name)
