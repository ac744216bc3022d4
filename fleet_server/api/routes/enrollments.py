"""One-time enrollment tokens: ``POST /api/enrollments`` (operator). The device uses its token at
``POST /api/enroll`` (:mod:`.enroll`)."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from ...audit import note
from ..deps import EnrollmentsDep
from ..schemas import EnrollmentCreate, EnrollmentCreated

router = APIRouter(prefix="/enrollments", tags=["devices"])


@router.post("", response_model=EnrollmentCreated, status_code=status.HTTP_201_CREATED)
def create_enrollment(enrollments: EnrollmentsDep, request: Request, body: EnrollmentCreate) -> dict:
    """A one-time enrollment token for a device (registered now if new); shown once."""
    note(request, device_id=body.device_id, tags=body.tags)
    return enrollments.create(device_id=body.device_id, tags=body.tags, ttl_s=body.ttl_s)
