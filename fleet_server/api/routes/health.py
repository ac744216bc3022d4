"""``GET /api/health`` (liveness) and ``GET /api/ready`` (readiness), both without a token.

Health says the process answers, with its message counters; it stays 200
while the broker or the database is away. Ready says whether this replica
can do its work now: 200 ``{"database": "ok", "broker": "ok"}`` when a query
reaches the database and the MQTT link is connected, else 503 naming what is
missing; a load balancer takes a replica out of rotation on it (see
``docs/haproxy.cfg.example``). Neither is written to the audit log (reads
never are), and a successful readiness check stays out of the access log.
Both read the :class:`~fleet_server.fleet.Fleet` itself (``FleetDep``): the
server's own health is the one thing no service owns.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from ..deps import FleetDep
from ..schemas import HealthPublic, ReadyPublic

log = logging.getLogger(__name__)
router = APIRouter(tags=["server"])


@router.get("/health", response_model=HealthPublic)
def health(fleet: FleetDep) -> HealthPublic:
    handlers = fleet.handlers
    malformed = handlers.malformed
    return HealthPublic(broker="connected" if fleet.broker_connected else "disconnected",
                        malformed_messages=malformed.total, malformed_by_kind=malformed.by_kind(),
                        telemetry_records_received=handlers.telemetry_received,
                        telemetry_records_duplicate=handlers.telemetry_duplicates,
                        messages_handled_by_kind=handlers.handled(),
                        role=fleet.leadership.role, leader_epoch=fleet.leadership.epoch)


@router.get("/ready", response_model=ReadyPublic,
            responses={503: {"model": ReadyPublic, "description": "the database or the broker is out of reach"}})
def ready(fleet: FleetDep, response: Response) -> ReadyPublic:
    """200 when this replica reaches the database and the broker; 503 with the one(s) it does not."""
    try:
        fleet.db.ping()
        database = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; the reason goes to the log
        log.warning("readiness: the database does not answer: %s", exc)
        database = "unreachable"
    state = ReadyPublic(database=database, broker="ok" if fleet.broker_connected else "disconnected")
    if state.database != "ok" or state.broker != "ok":
        response.status_code = 503
    return state

