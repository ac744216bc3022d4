"""The audit log: ``GET /api/audit`` (viewer), oldest first, paged by id. There is no route that changes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import AuditDep
from ..schemas import AuditEntryPublic

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditEntryPublic])
def list_audit(audit: AuditDep, actor: str | None = None,
               after_id: Annotated[int, Query(ge=0, description="Page: ids greater than this")] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> list[dict]:
    return audit.entries(after_id=after_id, actor=actor, limit=limit)
