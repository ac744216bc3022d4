"""Drift alerts across models: ``/api/drift/alerts``.

A model version's drift report and reference are under its URL, in
:mod:`.models` (``/api/models/{name}/versions/{v}/drift``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import DriftDep

router = APIRouter(prefix="/drift", tags=["drift"])


@router.get("/alerts")
def alerts(drift: DriftDep, model: str | None = None, version: int | None = None,
           open: Annotated[bool, Query(description="Only alerts not cleared yet")] = False) -> list[dict]:
    """Drift alerts, newest first: one per crossing of a threshold by a feature on a device."""
    return drift.alerts(model=model, version=version, open_only=open)
