"""``GET /api/health`` (no token) and ``GET /api/keys``."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import AdminDep, FleetDep
from ..schemas import HealthPublic, KeysPublic, SigningKeyPublic

router = APIRouter(tags=["server"])


@router.get("/health", response_model=HealthPublic)
def health(fleet: FleetDep) -> HealthPublic:
    handlers = fleet.handlers
    malformed = handlers.malformed
    return HealthPublic(broker="connected" if fleet.broker_connected else "disconnected",
                        malformed_messages=malformed.total, malformed_by_kind=malformed.by_kind(),
                        telemetry_records_received=handlers.telemetry_received,
                        telemetry_records_duplicate=handlers.telemetry_duplicates)


@router.get("/keys", response_model=KeysPublic)
def keys(fleet: FleetDep, _: AdminDep) -> KeysPublic:
    public = fleet.signing_key.public_key
    return KeysPublic(signing_keys=[SigningKeyPublic(keyid=public.keyid, public_key=public.to_hex())])
