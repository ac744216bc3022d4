"""The web dashboard: its static files and the live-update stream it listens to.

:func:`install` adds three things to an app built by
:func:`fleet_server.api.app.create_app`:

- ``GET /api/events?token=…``: server-sent events. ``EventSource`` cannot send
  headers, so a viewer (or higher) token comes as a query parameter and is
  checked by the API's own :func:`~fleet_server.api.deps.authenticate` (the
  access log drops query strings). Once a second the stream reads a cheap
  fingerprint of the devices, the deployments, the rollouts, the jobs and the
  newest telemetry record, and sends ``event: change`` with
  ``{"version": …, "topics": [...]}`` when it moved (and once at the start, so
  a page that reconnects can tell whether it missed something). Each stream
  ends after :data:`STREAM_LIFETIME_S` (the browser reconnects by itself):
  uvicorn waits for open responses at shutdown, so an endless stream would
  hold a stopping server. A client that disconnects ends its stream at once.
- ``GET /api/whoami``: the calling token's name and role, so the app can
  sign in any role and hide the buttons a viewer may not use (the API
  refuses those calls anyway: hiding is a courtesy, not the control).
- the single-page app under ``/`` (``static/``): plain HTML, CSS and ES
  modules, no third-party code, so it works air-gapped.

It adds no write operations: the app's buttons call the rollout and
deployment API like any other client.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..api.deps import FleetDep, Principal, authenticate, check_role, require_viewer
from ..fleet import Fleet
from ..store import deployments as deployment_store
from ..store import devices as device_store
from ..store import jobs as job_store
from ..store import rollouts as rollout_store
from ..store import telemetry as telemetry_store
from ..tokens import VIEWER

STATIC_DIR = Path(__file__).parent / "static"
POLL_INTERVAL_S = 1.0
STREAM_LIFETIME_S = 10.0
RECONNECT_DELAY_MS = 500
TOPICS = ("devices", "deployments", "rollouts", "telemetry", "jobs")

router = APIRouter(tags=["dashboard"])


def install(app: FastAPI) -> None:
    """Add the event stream and serve the dashboard at ``/``; call it after the API routers are included."""
    app.include_router(router, prefix="/api")
    app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="dashboard")


@router.get("/whoami", responses={401: {"description": "missing or invalid token"}})
def whoami(principal: Annotated[Principal, Depends(require_viewer)]) -> dict[str, str]:
    """The calling token's name and role (``viewer``, ``operator`` or ``admin``); never the token."""
    return {"name": principal.name, "role": principal.role}


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}, 401: {"description": "missing or invalid token"}})
def events(fleet: FleetDep,
           token: Annotated[str, Query(description="An API token (viewer or higher)")] = "") -> StreamingResponse:
    """Server-sent ``change`` events when devices, deployments, rollouts or telemetry change (checked once a second)."""
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token else None
    check_role(authenticate(fleet.tokens, credentials), VIEWER)
    return StreamingResponse(_stream(fleet), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(fleet: Fleet) -> AsyncIterator[str]:
    yield f"retry: {RECONNECT_DELAY_MS}\n\n"
    last: dict[str, str] = {}
    ends_at = time.monotonic() + STREAM_LIFETIME_S
    while True:
        current = await run_in_threadpool(fingerprints, fleet)
        changed = [topic for topic in TOPICS if current[topic] != last.get(topic)]
        if changed:
            last = current
            version = hashlib.sha256(json.dumps(current, sort_keys=True).encode()).hexdigest()[:16]
            yield f"event: change\ndata: {json.dumps({'version': version, 'topics': changed})}\n\n"
        if time.monotonic() >= ends_at:
            return
        await asyncio.sleep(POLL_INTERVAL_S)


def fingerprints(fleet: Fleet) -> dict[str, str]:
    """A short digest per topic; it changes when what the dashboard shows of that topic changes.

    ``last_seen`` is left out of the devices' digest: it moves with every
    heartbeat, which the telemetry digest already reports. A deployment
    counts by the devices a rollout has let in, whether it was withdrawn and
    whether its A/B comparison was decided (promoted);
    a rollout by its state, reason and waves (``updated`` moves with each); jobs by the states and per-device
    counts of those still waiting for devices (running, or stopped with a device sent but not answered),
    and how many there are.
    """
    devices = [{k: v for k, v in d.items() if k not in ("last_seen", "desired_envelope")}
               for d in device_store.list_devices(db=fleet.db)]
    deployments = [(d["id"], d.get("admitted"), d.get("withdrawn"), bool(d.get("decided")))
                   for d in deployment_store.list_deployments(db=fleet.db)]
    rollouts = [(r["id"], r["state"], r["reason"], r["waves"], r["updated"])
                for r in rollout_store.list_rollouts(db=fleet.db)]
    jobs = [(j["id"], j["state"], j["updated"], job_store.counts(db=fleet.db, job_id=j["id"]))
            for j in map(lambda job_id: job_store.get_job(db=fleet.db, job_id=job_id),
                         job_store.waiting_job_ids(db=fleet.db))] + [len(job_store.list_jobs(db=fleet.db))]
    newest = telemetry_store.query(db=fleet.db, limit=1)
    newest_key = [(r["device_id"], r["outbox_id"], r["seq"], r["received"]) for r in newest]
    return {topic: hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]
            for topic, value in (("devices", devices), ("deployments", deployments), ("rollouts", rollouts),
                                 ("telemetry", newest_key), ("jobs", jobs))}
