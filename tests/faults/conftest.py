"""Shared pieces of the fault-injection suite: seeded randomness, a played server, OIP requests.

Every test takes its random choices from :func:`rng`, seeded by ``EDGEFLEET_FAULT_SEED`` (default 8), so a
failing run is repeated by exporting the seed it printed.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.agent.helpers import FakeServer
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.fleet import AgentProcess, ServerProcess
from tests.support.net import wait_for
from tests.support.redelivery import assert_redelivery_is_counted_and_not_stored

SEED = int(os.environ.get("EDGEFLEET_FAULT_SEED", "8"))
MODULE = "scaler"  # what the staged rollouts under faults take from v1 to v2


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


def outbox_state(state_dir: Path) -> tuple[int, int]:
    """``(records still waiting, highest seq ever issued)`` from an agent's own SQLite outbox (in ``state_dir``)."""
    with sqlite3.connect(f"file:{state_dir / 'agent.db'}?mode=ro", uri=True, timeout=5) as db:
        waiting = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
    return waiting, row[0] if row else 0


def stored_seqs(server: ServerProcess, device_id: str) -> list[int]:
    """Every stored seq of the device, read from the server's database (the API pages at 1,000 rows)."""
    with sqlite3.connect(f"file:{server.data_dir / 'fleet.db'}?mode=ro", uri=True, timeout=5) as db:
        return [row[0] for row in db.execute("SELECT seq FROM telemetry WHERE device_id = ?", (device_id,))]


def wait_outbox_drained(device_id: str, state_dir: Path, *, timeout: float = 60) -> int:
    """Wait until the agent's outbox holds nothing unsent; the last seq it issued.

    The outbox numbers records 1, 2, 3, ... (``AUTOINCREMENT``, kept across restarts of the agent) and deletes
    a record only once the broker acknowledged it, so an empty outbox means every issued seq was handed over.
    """
    def drained() -> int | None:
        waiting, last = outbox_state(state_dir)
        return last if waiting == 0 and last > 0 else None

    return wait_for(drained, timeout=timeout, what=f"{device_id}'s outbox to drain")


def assert_seqs_stored_once(device_id: str, last: int, read_seqs: Callable[[], list[int]]) -> list[int]:
    """Wait until the server stores seqs 1..``last`` of the device (``read_seqs``: every stored seq, one per
    row); assert none is stored twice and none lost. Returns the rows' seqs."""
    def all_stored() -> list[int] | None:
        seqs = read_seqs()
        return seqs if len(set(seqs)) >= last else None

    seqs = wait_for(all_stored, timeout=30, what=f"the server to store seqs 1..{last} of {device_id}")
    assert len(seqs) == len(set(seqs)), f"a telemetry record of {device_id} was stored twice"
    missing = sorted(set(range(1, last + 1)) - set(seqs))
    assert not missing, f"telemetry records of {device_id} lost: seqs {missing}"
    return seqs


def assert_every_record_arrived_once(server: ServerProcess, agent: AgentProcess, *, timeout: float = 60) -> int:
    """At-least-once delivery, exactly-once storage: wait for the agent's outbox to drain, check the server stores
    seqs 1..last exactly once each, and that a record delivered again is counted as delivered but not stored again.

    Rows alone cannot show a duplicate (the table's primary key drops one) and the faults do not always cause a
    redelivery, so one is made and checked against the server's delivery counters
    (:mod:`tests.support.redelivery`). Returns last.
    """
    last = wait_outbox_drained(agent.device_id, agent.state_dir, timeout=timeout)
    assert_seqs_stored_once(agent.device_id, last, lambda: stored_seqs(server, agent.device_id))

    received, duplicates = assert_redelivery_is_counted_and_not_stored(
        server_url=server.url, db_path=server.data_dir / "fleet.db", broker_url=server.broker_url,
        device_id=agent.device_id)
    print(f"{agent.device_id}: {last} records, each stored once; the server received {received} telemetry records "
          f"since it (re)started, {duplicates} of them duplicates (5 redelivered by the test), none stored twice")
    return last


def build(api: httpx.Client, scale: float) -> dict:
    """Upload a ``scaler`` module whose model multiplies by ``scale`` (a new version each time)."""
    archive = tar_gz(module_files(MODULE, model=tiny_onnx(scale)))
    response = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", archive)})
    assert response.status_code == 201, response.text
    return response.json()


def running_versions(api: httpx.Client, device_ids: list[str]) -> dict[str, int | None]:
    """The ``scaler`` version each device reports ``running`` (None when it reports none running)."""
    versions = {}
    for device_id in device_ids:
        modules = api.get(f"/api/devices/{device_id}").json()["modules"]
        versions[device_id] = next((m["version"] for m in modules if m["name"] == MODULE
                                    and m["state"] == "running"), None)
    return versions


def assert_history_applies_each_wave_once(api: httpx.Client, rollout_id: int, device_ids: list[str]) -> list[int]:
    history = api.get(f"/api/rollouts/{rollout_id}/history").json()
    started = [e["detail"]["wave"] for e in history if e["kind"] == "wave_started"]
    succeeded = [e["detail"]["wave"] for e in history if e["kind"] == "wave_succeeded"]
    admitted = [d for e in history if e["kind"] == "devices_admitted" for d in e["detail"]["devices"]]
    assert started == list(range(len(started))), f"a wave was started twice or out of order: {started}"
    assert succeeded == started, f"each started wave succeeds once: started {started}, succeeded {succeeded}"
    assert sorted(admitted) == sorted(device_ids), f"each device is admitted exactly once: {admitted}"
    assert [e["kind"] for e in history].count("completed") == 1 and history[-1]["kind"] == "completed"
    assert not [e for e in history if e["kind"] in ("paused", "aborted", "rolled_back")], history
    return started


def start_rollout_to_v2(api: httpx.Client, device_ids: list[str], tags: dict[str, str], *,
                        devices_per_minute: int) -> int:
    """Every device runs ``scaler`` v1 (a deployment to ``tags``); then a rollout to v2 starts (a canary of 1,
    then waves of 1, 2, 4, ... at most ``devices_per_minute`` inside a wave). Returns the rollout's id."""
    build(api, 2.0)
    assert api.post("/api/deployments", json={"module": MODULE, "selector": tags}).status_code == 201
    wait_for(lambda: set(running_versions(api, device_ids).values()) == {1}, timeout=60,
             what=f"{len(device_ids)} devices to run v1")
    build(api, 3.0)
    response = api.post("/api/rollouts", json={
        "module": MODULE, "version": 2, "selector": tags,
        "plan": {"canary": 1, "wave_size": 1, "growth": 2, "max_devices_per_minute": devices_per_minute}})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def assert_rollout_completed_once_everywhere(api: httpx.Client, rollout_id: int,
                                             device_ids: list[str]) -> tuple[dict, list[int]]:
    """Wait for the rollout to complete (never leaving ``running`` for another state), for every device to report
    v2 running, and check its history applies each wave once. Returns the rollout and the waves started."""
    def completed() -> dict | None:
        rollout = api.get(f"/api/rollouts/{rollout_id}").json()
        assert rollout["state"] in ("running", "completed"), rollout
        return rollout if rollout["state"] == "completed" else None

    done = wait_for(completed, timeout=120, interval=0.5, what="the rollout to complete")
    assert done["counts"]["running"] == len(device_ids) and done["waiting"] == []
    wait_for(lambda: set(running_versions(api, device_ids).values()) == {2}, timeout=60,
             what="every device to report v2 running")
    return done, assert_history_applies_each_wave_once(api, rollout_id, device_ids)
