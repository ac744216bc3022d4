"""Deployments and their A/B comparisons: ``/api/deployments``.

Staged rollouts are in :mod:`.rollouts`, device groups in :mod:`.groups`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ...audit import note
from ..deployment_schemas import DeploymentCreate, DeploymentDetail, DeploymentPublic, PromoteRequest, VariantStats, \
    Verdict
from ..deps import DeploymentsDep, VariantsDep
from ._params import note_target

router = APIRouter(prefix="/deployments", tags=["deployments"])


@router.post("", response_model=DeploymentPublic, status_code=status.HTTP_201_CREATED)
def create(deployments: DeploymentsDep, request: Request, body: DeploymentCreate) -> dict:
    """Deploy a bundle (newest of the module by default) to devices, a tag selector or a group, at once.

    Each affected device whose desired modules change gets a new signed
    desired state, published retained. For waves gated on health, use
    ``POST /api/rollouts``.
    """
    note_target(request, body)
    deployment = deployments.create_deployment(
        module=body.module, version=body.version, bundle_digest=body.bundle_digest, devices=body.devices,
        selector=body.selector, group=body.group, priority=body.priority, split=body.split,
        gate=body.gate.model_dump() if body.gate else None, allow_empty=body.allow_empty)
    note(request, deployment_id=deployment["id"], version=deployment["version"])
    return deployment


@router.get("", response_model=list[DeploymentPublic])
def list_deployments(deployments: DeploymentsDep, module: str | None = None) -> list[dict]:
    return deployments.list_deployments(module=module)


@router.get("/{deployment_id}", response_model=DeploymentDetail)
def get_deployment(deployments: DeploymentsDep, deployment_id: int) -> dict:
    """The deployment with the state of each targeted device, from what the devices report."""
    return deployments.deployment_detail(deployment_id)


@router.post("/{deployment_id}/promote", response_model=DeploymentPublic, status_code=status.HTTP_201_CREATED)
def promote(ab: VariantsDep, request: Request, deployment_id: int, body: PromoteRequest) -> dict:
    """End an A/B split: deploy the winning version alone to the same target (the newest deployment wins).

    The comparison is frozen as it stands (``decided``); promoting again is refused (409).
    """
    note(request, version=body.version)
    created = ab.promote(deployment_id, body.version)
    note(request, new_deployment_id=created["id"])
    return created


@router.get("/{deployment_id}/variants", response_model=list[VariantStats])
def variants(ab: VariantsDep, deployment_id: int) -> list[dict]:
    """Per version of an A/B deployment: requests, error rate, latency and output distribution from telemetry."""
    return ab.variant_stats(deployment_id)


@router.get("/{deployment_id}/verdict", response_model=Verdict)
def verdict(ab: VariantsDep, deployment_id: int) -> dict:
    """The A/B decision: each variant against the main version, on accuracy when labels came back (Wilson
    intervals, two-proportion z-test, power estimate), else on errors and the class mix; one sentence each."""
    return ab.verdict_of(deployment_id)
