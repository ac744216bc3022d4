"""The web dashboard: its static files and the live-update stream it listens to.

:func:`install` adds three things to an app built by
:func:`fleet_server.api.app.create_app`:

- ``GET /api/events?token=…``: server-sent events. ``EventSource`` cannot send
  headers, so a viewer (or higher) token comes as a query parameter and is
  checked by the API's own :func:`~fleet_server.api.deps.authenticate` (the
  access log drops query strings). The stream sends ``event: change`` with
  ``{"version": …, "topics": [...]}`` once at the start (so a page that
  reconnects can tell whether it missed something) and then whenever a
  committed write changed the devices, the deployments, the rollouts, the jobs
  or the telemetry, on this replica or any other: it is woken by
  :class:`fleet_server.changes.Changes` (PostgreSQL ``LISTEN/NOTIFY`` between
  replicas), never polls the database, and sends at most one event per
  :data:`~fleet_server.changes.COALESCE_S` however fast telemetry comes. Each stream
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
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles

from ..api.deps import ChangesDep, Principal, TokensDep, authenticate, check_role, require_viewer
from ..changes import COALESCE_S, TOPICS, Changes
from ..tokens import VIEWER

STATIC_DIR = Path(__file__).parent / "static"
STREAM_LIFETIME_S = 10.0
RECONNECT_DELAY_MS = 500

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
def events(changes: ChangesDep, tokens: TokensDep,
           token: Annotated[str, Query(description="An API token (viewer or higher)")] = "") -> StreamingResponse:
    """Server-sent ``change`` events when devices, deployments, rollouts, jobs or telemetry change (on any replica)."""
    credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=token) if token else None
    check_role(authenticate(tokens, credentials), VIEWER)
    return StreamingResponse(_stream(changes), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _stream(changes: Changes) -> AsyncIterator[str]:
    yield f"retry: {RECONNECT_DELAY_MS}\n\n"
    subscription = changes.subscribe()
    try:
        yield _change(changes.version(), list(TOPICS))
        ends_at = time.monotonic() + STREAM_LIFETIME_S
        while await subscription.wait(ends_at - time.monotonic()):
            await asyncio.sleep(COALESCE_S)  # the rest of a burst joins this event
            topics = subscription.take()
            if topics:
                yield _change(changes.version(), topics)
            if time.monotonic() >= ends_at:
                return
    finally:
        changes.unsubscribe(subscription)


def _change(version: str, topics: list[str]) -> str:
    return f"event: change\ndata: {json.dumps({'version': version, 'topics': topics})}\n\n"
