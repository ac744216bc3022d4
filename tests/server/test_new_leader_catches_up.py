"""A replica that becomes leader recomputes the desired state a dead leader committed the cause of but never
computed (real PostgreSQL, real Mosquitto, servers in threads, one after the other on one database).

The rollout controller admits devices in one fenced transaction and recomputes their desired state after it
commits; a leader ``kill -9``-ed between the two left the admitted devices on their old document, and the next
leader only republished stored documents, so the wave waited for ever (seen in
``tests/faults/test_replica_failover.py``). Here the dead leader's last act is played directly on the store: a
deployment of v2 committed, no recompute.
"""

from __future__ import annotations

import httpx

from fleet_server.config import ServerConfig
from fleet_server.runner import ServerThread
from fleet_server.store import deployments as deployment_store
from fleet_server.store import devices as device_store
from tests.support.fleet import ADMIN_TOKEN, SECRET_KEY
from tests.support.net import wait_for

from .builders import module_files, tar_gz, tiny_onnx


def desired_version(server: ServerThread, device_id: str) -> int | None:
    envelope = device_store.get_device(db=server.fleet.db, device_id=device_id)["desired_envelope"]
    return envelope["signed"]["modules"][0]["version"] if envelope else None


def test_a_new_leader_recomputes_the_desired_state_a_dead_leader_left_uncomputed(tmp_path, mosquitto, postgres,
                                                                                 monkeypatch):
    monkeypatch.setenv("EDGEFLEET_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    url = postgres.create_database(migrated=True)

    def config(name: str) -> ServerConfig:
        return ServerConfig(data_dir=tmp_path / name, database_url=url, port=0, broker_url=mosquitto.url,
                            shared_subscriptions=True, server_id=name, leader_lease_s=2.0, leader_renew_s=0.5)

    with ServerThread(config("old")) as old, \
            httpx.Client(base_url=old.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30) as api:
        assert api.post("/api/devices", json={"id": "cam-1"}).status_code == 201
        bundles = [api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(module_files(
            "scaler", model=tiny_onnx(scale))))}).json() for scale in (2.0, 3.0)]
        assert api.post("/api/deployments", json={"module": "scaler", "version": 1,
                                                  "devices": ["cam-1"]}).status_code == 201
        assert desired_version(old, "cam-1") == 1
        v2 = bundles[1]
        deployment_store.insert_deployment(db=old.fleet.db, module="scaler", version=v2["version"],
                                           bundle_digest=v2["digest"], devices=["cam-1"], selector=None,
                                           created="2026-01-01T00:00:00+00:00")  # committed; recompute never ran
        assert desired_version(old, "cam-1") == 1
    with ServerThread(config("new")) as new:  # the old one is gone: this one is elected at start
        wait_for(lambda: new.fleet.leadership.is_leader, what="the new replica to lead")
        assert wait_for(lambda: desired_version(new, "cam-1") == 2, timeout=20,
                        what="the new leader to compute cam-1's desired state from the committed deployment")
