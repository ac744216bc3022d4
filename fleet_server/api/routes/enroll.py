"""Device identity: ``POST /api/enroll`` (the device, no API token).

``/api/enroll`` is authenticated by the one-time enrollment token alone
(made at ``/api/enrollments``, :mod:`.enrollments`). Its body is parsed by
:func:`fleet_server.enrollment.parse_enrollment_request` (400 on anything
malformed); an unknown, used or expired token is 401 with the reason; a CSR
the CA will not sign is 400. Each enrollment is audited as
``enrollment:<device id>``. Revoking a device is
``POST /api/devices/{id}/revoke`` (:mod:`.devices`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import Field

from ...enrollment import EnrollmentRefused
from ..deps import EnrollmentsDep
from ..schemas import EnrollmentPublic

public = APIRouter(tags=["devices"])


class EnrollmentWithRoot(EnrollmentPublic):
    root: dict[str, Any] = Field(description="The current signed root document: the device's root of trust")


@public.post("/enroll", response_model=EnrollmentWithRoot,
             responses={400: {"description": "malformed request or CSR"},
                        401: {"description": "unknown, used or expired enrollment token"}})
async def enroll(enrollments: EnrollmentsDep, request: Request) -> dict:
    """Exchange a one-time enrollment token and a CSR for the device's client certificate and trust anchors."""
    try:
        result = enrollments.enroll(await request.body())
    except EnrollmentRefused as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    return asdict(result)
