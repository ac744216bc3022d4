"""Deployments: ``/api/deployments``."""

from __future__ import annotations

from fastapi import APIRouter, status

from ... import deployments as service
from ...store import deployments as deployment_store
from ..deps import FleetDep
from ..schemas import DeploymentCreate, DeploymentDetail, DeploymentPublic

router = APIRouter(prefix="/deployments", tags=["deployments"])


@router.post("", response_model=DeploymentPublic, status_code=status.HTTP_201_CREATED)
def create(fleet: FleetDep, body: DeploymentCreate) -> dict:
    """Deploy a bundle (newest of the module by default) to devices and/or a tag selector.

    Each affected device whose desired modules change gets a new signed
    desired state, published retained.
    """
    return service.create_deployment(fleet, module=body.module, version=body.version,
                                     bundle_digest=body.bundle_digest, devices=body.devices, selector=body.selector)


@router.get("", response_model=list[DeploymentPublic])
def list_deployments(fleet: FleetDep, module: str | None = None) -> list[dict]:
    return deployment_store.list_deployments(db=fleet.db, module=module)


@router.get("/{deployment_id}", response_model=DeploymentDetail)
def get_deployment(fleet: FleetDep, deployment_id: int) -> dict:
    """The deployment with the state of each targeted device, from what the devices report."""
    return service.deployment_detail(fleet, deployment_id)
