"""Shared pieces of the fault-injection suite: seeded randomness, a played server, OIP requests.

Every test takes its random choices from :func:`rng`, seeded by ``EDGEFLEET_FAULT_SEED`` (default 8), so a
failing run is repeated by exporting the seed it printed.
"""

from __future__ import annotations

import os
import random
import sqlite3

import httpx
import pytest

from tests.agent.helpers import FakeServer
from tests.support.fleet import AgentProcess, ServerProcess
from tests.support.net import wait_for
from tests.support.redelivery import assert_redelivery_is_counted_and_not_stored

SEED = int(os.environ.get("EDGEFLEET_FAULT_SEED", "8"))


@pytest.fixture
def rng(request) -> random.Random:
    """A ``random.Random`` seeded by ``EDGEFLEET_FAULT_SEED`` and the test's name (repeatable per test)."""
    print(f"fault seed: EDGEFLEET_FAULT_SEED={SEED}")
    return random.Random(f"{SEED}:{request.node.name}")


@pytest.fixture
def fake_server(mosquitto):
    server = FakeServer(mosquitto.host, mosquitto.port)
    yield server
    server.close()


def linear_request(batch: int = 1) -> dict:
    """A valid OIP v2 request for the ``linear`` test model (input ``x``: FP32 [batch, 4])."""
    return {"inputs": [{"name": "x", "shape": [batch, 4], "datatype": "FP32", "data": [0.25] * (4 * batch)}]}


def infer_version(scoring_url: str, module: str = "linear") -> int:
    """Score one request and return the ``model_version`` that answered (asserts a 200)."""
    response = httpx.post(f"{scoring_url}/v2/models/{module}/infer", json=linear_request(), timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["model_version"])


def outbox_state(agent: AgentProcess) -> tuple[int, int]:
    """``(records still waiting, highest seq ever issued)`` from the agent's own SQLite outbox."""
    with sqlite3.connect(f"file:{agent.state_dir / 'agent.db'}?mode=ro", uri=True, timeout=5) as db:
        waiting = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return waiting, row[0] if row else 0


def stored_seqs(server: ServerProcess, device_id: str) -> list[int]:
    """Every stored seq of the device, read from the server's database (the API pages at 1,000 rows)."""
    with sqlite3.connect(f"file:{server.data_dir / 'fleet.db'}?mode=ro", uri=True, timeout=5) as db:
        return [row[0] for row in db.execute("SELECT seq FROM telemetry WHERE device_id = ?", (device_id,))]


def assert_every_record_arrived_once(server: ServerProcess, agent: AgentProcess, *, timeout: float = 60) -> int:
    """At-least-once delivery, exactly-once storage: wait for the agent's outbox to drain, check the server stores
    seqs 1..last exactly once each, and that a record delivered again is counted as delivered but not stored again.

    The outbox numbers records 1, 2, 3, ... (``AUTOINCREMENT``, kept across restarts of the agent) and deletes
    a record only once the broker acknowledged it, so an empty outbox means every issued seq was handed over.
    Rows alone cannot show a duplicate (the table's primary key drops one) and the faults do not always cause a
    redelivery, so one is made and checked against the server's delivery counters
    (:mod:`tests.support.redelivery`). Returns last.
    """
    def drained() -> int | None:
        waiting, last = outbox_state(agent)
        return last if waiting == 0 and last > 0 else None

    last = wait_for(drained, timeout=timeout, what=f"{agent.device_id}'s outbox to drain")

    def all_stored() -> list[int] | None:
        seqs = stored_seqs(server, agent.device_id)
        return seqs if len(set(seqs)) >= last else None

    seqs = wait_for(all_stored, timeout=30, what=f"the server to store seqs 1..{last} of {agent.device_id}")
    assert len(seqs) == len(set(seqs)), f"a telemetry record of {agent.device_id} was stored twice"
    missing = sorted(set(range(1, last + 1)) - set(seqs))
    assert not missing, f"telemetry records of {agent.device_id} lost: seqs {missing}"

    received, duplicates = assert_redelivery_is_counted_and_not_stored(
        server_url=server.url, db_path=server.data_dir / "fleet.db", broker_url=server.broker_url,
        device_id=agent.device_id)
    print(f"{agent.device_id}: {last} records, each stored once; the server received {received} telemetry records "
          f"since it (re)started, {duplicates} of them duplicates (5 redelivered by the test), none stored twice")
    return last
