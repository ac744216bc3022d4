"""``GET /api/ready``: what a load balancer health-checks. 200 only while this replica reaches the database and
the broker; 503 naming what is missing. Real server threads on a real Mosquitto that is stopped and started."""

from __future__ import annotations

import httpx

from tests.support.net import wait_for


def _ready(server) -> httpx.Response:
    return httpx.get(f"{server.url}/api/ready", timeout=10)  # no token: HAProxy sends none


def test_ready_needs_no_token_and_says_ok_for_database_and_broker(server):
    response = _ready(server)
    assert (response.status_code, response.json()) == (200, {"database": "ok", "broker": "ok"})


def test_ready_is_503_naming_the_broker_while_it_is_away_and_health_stays_200(server, mosquitto):
    mosquitto.stop()
    try:
        wait_for(lambda: _ready(server).status_code == 503, what="readiness to notice the broker is gone")
        assert _ready(server).json() == {"database": "ok", "broker": "disconnected"}
        assert httpx.get(f"{server.url}/api/health", timeout=10).status_code == 200  # liveness: the process is fine
    finally:
        mosquitto.start()
    wait_for(lambda: _ready(server).status_code == 200, what="readiness once the broker is back")
