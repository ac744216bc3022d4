"""Device identity: ``POST /api/enrollments`` and ``POST /api/devices/{id}/revoke`` (operator), and
``POST /api/enroll`` (the device, no API token).

``/api/enroll`` is authenticated by the one-time enrollment token alone. Its
body is parsed by :func:`fleet_server.enrollment.parse_enrollment_request`
(400 on anything malformed); an unknown, used or expired token is 401 with
the reason; a CSR the CA will not sign is 400. Each enrollment is audited as
``enrollment:<device id>``.
"""

from __future__ import annotations

from dataclasses import asdict

from typing import Any

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import Field

from ... import enrollment as enrollment_service
from ... import revocation
from ...audit import note, record
from ..deps import FleetDep
from ..schemas import EnrollmentCreate, EnrollmentCreated, EnrollmentPublic, RevocationPublic

router = APIRouter(prefix="/enrollments", tags=["devices"])
devices_router = APIRouter(prefix="/devices", tags=["devices"])
public = APIRouter(tags=["devices"])


class EnrollmentWithRoot(EnrollmentPublic):
    root: dict[str, Any] = Field(description="The current signed root document: the device's root of trust")


@router.post("", response_model=EnrollmentCreated, status_code=status.HTTP_201_CREATED)
def create_enrollment(fleet: FleetDep, request: Request, body: EnrollmentCreate) -> dict:
    """A one-time enrollment token for a device (registered now if new); shown once."""
    note(request, device_id=body.device_id, tags=body.tags)
    token, expires = enrollment_service.create_enrollment(
        fleet.db, device_id=body.device_id, tags=body.tags,
        ttl_s=body.ttl_s if body.ttl_s is not None else fleet.config.enrollment_ttl_s)
    return {"device_id": body.device_id, "token": token, "expires": expires}


@public.post("/enroll", response_model=EnrollmentWithRoot,
             responses={400: {"description": "malformed request or CSR"},
                        401: {"description": "unknown, used or expired enrollment token"}})
async def enroll(fleet: FleetDep, request: Request) -> dict:
    """Exchange a one-time enrollment token and a CSR for the device's client certificate and trust anchors."""
    parsed = enrollment_service.parse_enrollment_request(await request.body())
    try:
        result = enrollment_service.enroll(
            fleet.db, fleet.ca, parsed, broker_url=fleet.public_broker_url,
            trusted_keys=[fleet.signing_key.public_key.to_hex()], root=fleet.keys.root,
            valid_days=fleet.config.device_cert_valid_days)
    except enrollment_service.EnrollmentRefused as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    fleet.desired.recompute([result.device_id])  # a device re-enrolled after a revocation gets its modules back
    record(fleet.db, actor=f"enrollment:{result.device_id}", action="POST /api/enroll",
           target=f"/api/devices/{result.device_id}", status=200, object={"device_id": result.device_id})
    return asdict(result)


@devices_router.post("/{device_id}/revoke", response_model=RevocationPublic)
def revoke(fleet: FleetDep, device_id: str) -> dict:
    """Revoke the device's certificates (CRL, broker reload) and give it no modules; new connects are refused."""
    return revocation.revoke_device(fleet, device_id)
