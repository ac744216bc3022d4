"""Deployments, staged rollouts and device groups: ``/api/deployments``, ``/api/rollouts``, ``/api/groups``."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, status

from ... import deployments as service
from ...audit import note
from ...store import deployments as deployment_store
from ...store import rollouts as rollout_store
from ..deps import FleetDep
from ...variants import promote as promote_variant, variant_stats, verdict_of
from ..deployment_schemas import (DeploymentCreate, DeploymentDetail, DeploymentPublic, GroupCreate, GroupPublic,
                                  PromoteRequest, RolloutCreate, RolloutEvent, RolloutPublic, VariantStats, Verdict)

router = APIRouter(tags=["deployments"])


@router.post("/deployments", response_model=DeploymentPublic, status_code=status.HTTP_201_CREATED)
def create(fleet: FleetDep, request: Request, body: DeploymentCreate) -> dict:
    """Deploy a bundle (newest of the module by default) to devices, a tag selector or a group, at once.

    Each affected device whose desired modules change gets a new signed
    desired state, published retained. For waves gated on health, use
    ``POST /api/rollouts``.
    """
    _note_target(request, body)
    deployment = service.create_deployment(
        fleet, module=body.module, version=body.version, bundle_digest=body.bundle_digest, devices=body.devices,
        selector=body.selector, group=body.group, priority=body.priority, split=body.split,
        gate=body.gate.model_dump() if body.gate else None, allow_empty=body.allow_empty)
    note(request, deployment_id=deployment["id"], version=deployment["version"])
    return deployment


def _note_target(request: Request, body: DeploymentCreate) -> None:
    """What a deployment or rollout request aims at, in its audit entry (refused ones too)."""
    note(request, module=body.module, version=body.version, devices=body.devices, selector=body.selector,
         group=body.group)


@router.get("/deployments", response_model=list[DeploymentPublic])
def list_deployments(fleet: FleetDep, module: str | None = None) -> list[dict]:
    return deployment_store.list_deployments(db=fleet.db, module=module)


@router.get("/deployments/{deployment_id}", response_model=DeploymentDetail)
def get_deployment(fleet: FleetDep, deployment_id: int) -> dict:
    """The deployment with the state of each targeted device, from what the devices report."""
    return service.deployment_detail(fleet, deployment_id)


@router.post("/deployments/{deployment_id}/promote", response_model=DeploymentPublic,
             status_code=status.HTTP_201_CREATED)
def promote(fleet: FleetDep, request: Request, deployment_id: int, body: PromoteRequest) -> dict:
    """End an A/B split: deploy the winning version alone to the same target (the newest deployment wins).

    The comparison is frozen as it stands (``decided``); promoting again is refused (409).
    """
    note(request, version=body.version)
    created = promote_variant(fleet, deployment_id, body.version)
    note(request, new_deployment_id=created["id"])
    return created


@router.get("/deployments/{deployment_id}/variants", response_model=list[VariantStats])
def variants(fleet: FleetDep, deployment_id: int) -> list[dict]:
    """Per version of an A/B deployment: requests, error rate, latency and output distribution from telemetry."""
    return variant_stats(fleet, deployment_id)


@router.get("/deployments/{deployment_id}/verdict", response_model=Verdict)
def verdict(fleet: FleetDep, deployment_id: int) -> dict:
    """The A/B decision: each variant against the main version, on accuracy when labels came back (Wilson
    intervals, two-proportion z-test, power estimate), else on errors and the class mix; one sentence each."""
    return verdict_of(fleet, deployment_id)


@router.post("/rollouts", response_model=RolloutPublic, status_code=status.HTTP_201_CREATED)
def create_rollout(fleet: FleetDep, request: Request, body: RolloutCreate) -> dict:
    """A deployment let in wave by wave: canary first, each wave gated on its devices running the version."""
    _note_target(request, body)
    rollout = fleet.rollouts.create(module=body.module, version=body.version, bundle_digest=body.bundle_digest,
                                    devices=body.devices, selector=body.selector, group=body.group,
                                    priority=body.priority, plan=body.plan.model_dump(),
                                    gate=body.gate.model_dump() if body.gate else None, allow_empty=body.allow_empty)
    note(request, rollout_id=rollout["id"], deployment_id=rollout["deployment_id"],
         version=rollout["deployment"]["version"])
    return rollout


@router.get("/rollouts", response_model=list[RolloutPublic])
def list_rollouts(fleet: FleetDep) -> list[dict]:
    return fleet.rollouts.list()


@router.get("/rollouts/{rollout_id}", response_model=RolloutPublic)
def get_rollout(fleet: FleetDep, rollout_id: int) -> dict:
    return fleet.rollouts.detail(rollout_id)


@router.get("/rollouts/{rollout_id}/history", response_model=list[RolloutEvent])
def rollout_history(fleet: FleetDep, rollout_id: int) -> list[dict]:
    """Every creation, wave transition and operator action, oldest first; append-only."""
    return fleet.rollouts.history(rollout_id)


@router.post("/rollouts/{rollout_id}/{action}", response_model=RolloutPublic)
def rollout_action(fleet: FleetDep, rollout_id: int, action: Literal["pause", "resume", "abort", "rollback"]) -> dict:
    """pause / resume / abort (stop letting devices in) / rollback (withdraw: devices go back to the previous version)."""
    return fleet.rollouts.act(rollout_id, action)


@router.post("/groups", response_model=GroupPublic, status_code=status.HTTP_201_CREATED)
def create_group(fleet: FleetDep, request: Request, body: GroupCreate) -> dict:
    """A named device group: a list of devices and/or a tag selector (membership follows tag changes)."""
    note(request, group=body.name, devices=body.devices, selector=body.selector)
    return service.create_group(fleet, name=body.name, devices=body.devices, selector=body.selector)


@router.get("/groups", response_model=list[GroupPublic])
def list_groups(fleet: FleetDep) -> list[dict]:
    return [service.group_detail(fleet, g["name"]) for g in rollout_store.list_groups(db=fleet.db)]


@router.get("/groups/{name}", response_model=GroupPublic)
def get_group(fleet: FleetDep, name: str) -> dict:
    return service.group_detail(fleet, name)
