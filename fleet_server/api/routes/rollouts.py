"""Staged rollouts: ``/api/rollouts`` (the waves are run by :class:`fleet_server.rollouts.RolloutController`)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, status

from ...audit import note
from ..deployment_schemas import RolloutCreate, RolloutEvent, RolloutPublic
from ..deps import RolloutsDep
from ._params import note_target

router = APIRouter(prefix="/rollouts", tags=["deployments"])


@router.post("", response_model=RolloutPublic, status_code=status.HTTP_201_CREATED)
def create_rollout(rollouts: RolloutsDep, request: Request, body: RolloutCreate) -> dict:
    """A deployment let in wave by wave: canary first, each wave gated on its devices running the version."""
    note_target(request, body)
    rollout = rollouts.create(module=body.module, version=body.version, bundle_digest=body.bundle_digest,
                              devices=body.devices, selector=body.selector, group=body.group,
                              priority=body.priority, plan=body.plan.model_dump(),
                              gate=body.gate.model_dump() if body.gate else None, allow_empty=body.allow_empty)
    note(request, rollout_id=rollout["id"], deployment_id=rollout["deployment_id"],
         version=rollout["deployment"]["version"])
    return rollout


@router.get("", response_model=list[RolloutPublic])
def list_rollouts(rollouts: RolloutsDep) -> list[dict]:
    return rollouts.list()


@router.get("/{rollout_id}", response_model=RolloutPublic)
def get_rollout(rollouts: RolloutsDep, rollout_id: int) -> dict:
    return rollouts.detail(rollout_id)


@router.get("/{rollout_id}/history", response_model=list[RolloutEvent])
def rollout_history(rollouts: RolloutsDep, rollout_id: int) -> list[dict]:
    """Every creation, wave transition and operator action, oldest first; append-only."""
    return rollouts.history(rollout_id)


@router.post("/{rollout_id}/{action}", response_model=RolloutPublic)
def rollout_action(rollouts: RolloutsDep, rollout_id: int,
                   action: Literal["pause", "resume", "abort", "rollback"]) -> dict:
    """pause / resume / abort (stop letting devices in) / rollback (withdraw: devices go back to the previous version)."""
    return rollouts.act(rollout_id, action)
