"""Remote jobs: ``/api/jobs`` (create, list, show, cancel) and their request and response bodies.

A job is one of a fixed set of kinds (:data:`fleet_protocol.jobs.KINDS`) with
bounded params, never a command line; :mod:`fleet_server.jobs` stages its
delivery and collects each device's result.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field

from fleet_protocol.jobs import KINDS

from ...audit import note
from ..deps import JobsDep

router = APIRouter(prefix="/jobs", tags=["jobs"])
JobKind = Literal[KINDS]  # type: ignore[valid-type]


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind = Field(description="restart_module, health_check ({module}), collect_logs ({max_bytes}), "
                                      "diagnostics or flush_outbox")
    params: dict[str, Any] = Field(default_factory=dict, description="The kind's params; unknown keys are refused")
    devices: list[str] | None = None
    selector: dict[str, str] | None = Field(None, description="Devices whose tags include all of these")
    group: str | None = Field(None, description="A named device group instead of devices/selector")
    rate_per_minute: float | None = Field(None, gt=0, le=60_000, description="Send to at most this many devices per minute "
                                                                  "(one at once); default: all at once")
    abort_after_failures: int | None = Field(None, ge=1, description="After this many devices failed or did not "
                                                                     "answer, cancel the devices not sent yet")
    ttl_s: int = Field(3600, ge=10, le=7 * 86400, description="Each device's job expires this long after it is "
                                                              "sent; a device that has not answered by then timed out")


class JobDeviceState(BaseModel):
    device_id: str
    position: int = Field(description="Delivery order")
    state: Literal["queued", "sent", "succeeded", "failed", "timed_out", "cancelled"]
    sent: str | None
    expires: str | None
    finished: str | None
    answers: int = Field(description="Results the device sent (a redelivered job is answered again, not re-run)")
    result: dict[str, Any] | None
    error: dict[str, Any] | None


class JobSummary(BaseModel):
    id: int
    wire_id: str = Field(description="The job id devices see")
    kind: str
    params: dict[str, Any]
    target: dict[str, Any]
    plan: dict[str, Any]
    state: Literal["running", "completed", "aborted", "cancelled"]
    reason: str | None
    created_by: str | None
    created: str
    updated: str
    counts: dict[str, int]


class JobPublic(JobSummary):
    devices: list[JobDeviceState]


@router.post("", response_model=JobPublic, status_code=status.HTTP_201_CREATED)
def create(jobs: JobsDep, request: Request, body: JobCreate) -> dict:
    """Run a job on the devices a list, tag selector or group names now; staged by the rate, stopped by the
    abort threshold."""
    note(request, kind=body.kind, devices=body.devices, selector=body.selector, group=body.group)
    principal = getattr(request.state, "principal", None)
    job = jobs.create(kind=body.kind, params=body.params, devices=body.devices, selector=body.selector,
                            group=body.group, rate_per_minute=body.rate_per_minute,
                            abort_after_failures=body.abort_after_failures, ttl_s=body.ttl_s,
                            created_by=principal.name if principal else None)
    note(request, job_id=job["id"], targeted=len(job["devices"]))
    return job


@router.get("", response_model=list[JobSummary])
def list_jobs(jobs: JobsDep) -> list[dict]:
    return jobs.list()


@router.get("/{job_id}", response_model=JobPublic)
def get_job(jobs: JobsDep, job_id: int) -> dict:
    """The job with each device's state and result (logs, diagnostics, …) or error."""
    return jobs.detail(job_id)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(jobs: JobsDep, request: Request, job_id: int) -> dict:
    """Cancel the devices not sent yet; what was sent still reports."""
    principal = getattr(request.state, "principal", None)
    return jobs.cancel(job_id, actor=principal.name if principal else "an operator")
