"""``GET /metrics``: the server's Prometheus metrics (:mod:`fleet_server.metrics`); any valid API token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from ...metrics import CONTENT_TYPE
from ..deps import MetricsDep, Principal, require_viewer

router = APIRouter(tags=["server"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format 0.0.4"}})
def metrics(metrics: MetricsDep, _: Annotated[Principal, Depends(require_viewer)]) -> Response:
    """Fleet gauges, ingest and refusal counts, API latency and ingest lag histograms, broker link state."""
    return Response(metrics.render(), media_type=CONTENT_TYPE)
