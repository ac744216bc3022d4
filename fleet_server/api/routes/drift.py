"""Drift of a model version's inputs and outputs: ``/api/models/{name}/versions/{v}/drift`` and ``/api/drift``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from fleet_protocol.errors import BadDataError
from fleet_protocol.timestamps import from_iso, to_iso

from ... import registry
from ...clock import utc_now
from ...drift import service
from ...errors import NotFoundError
from ...store import drift as drift_store
from ..deps import FleetDep

router = APIRouter(tags=["drift"])
_AGO = re.compile(r"([0-9]{1,6})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(since: str | None) -> str | None:
    """``2026-12-03T10:00:00Z`` or a span back from now (``30m``, ``6h``, ``7d``) to a timestamp."""
    if since is None:
        return None
    ago = _AGO.fullmatch(since)
    if ago:
        try:
            return to_iso(utc_now() - timedelta(seconds=int(ago[1]) * _UNIT_S[ago[2]]))
        except OverflowError:  # 999999d reaches back before year 1
            raise BadDataError(f"since {since!r} reaches back before year 1") from None
    try:
        return to_iso(from_iso(since))
    except BadDataError:
        raise BadDataError(f"since {since!r} is neither a time (2026-12-03T10:00:00Z) nor a span back from now "
                           "(30m, 6h, 7d)") from None


@router.get("/models/{name}/versions/{version}/drift")
def drift_report(fleet: FleetDep, name: str, version: int,
                 by: Annotated[str | None, Query(description="Group by this device tag, or 'device'")] = None,
                 since: Annotated[str, Query(description="ISO time or span back (30m, 6h, 7d)")] = "24h",
                 bucket_s: Annotated[int, Query(ge=60, le=30 * 86400, description="Drift over time: bucket width")]
                 = 3600) -> dict:
    """PSI, Jensen–Shannon distance and KS per feature for each group, PSI per time bucket, and the alerts."""
    registry.get_model_version(fleet, name=name, version=version)
    return service.report(fleet, model=name, version=version, by=by, since=parse_since(since), bucket_s=bucket_s)


@router.get("/models/{name}/versions/{version}/drift/reference")
def drift_reference(fleet: FleetDep, name: str, version: int) -> dict:
    """The stored reference: per feature its bin edges, baseline range and baseline counts."""
    stored = drift_store.get_reference(db=fleet.db, model=name, version=version)
    if stored is None:
        raise NotFoundError(f"model {name}:{version} has no drift reference")
    return stored


@router.get("/drift/alerts")
def alerts(fleet: FleetDep, model: str | None = None, version: int | None = None,
           open: Annotated[bool, Query(description="Only alerts not cleared yet")] = False) -> list[dict]:
    """Drift alerts, newest first: one per crossing of a threshold by a feature on a device."""
    return drift_store.list_alerts(db=fleet.db, model=model, version=version, open_only=open)
