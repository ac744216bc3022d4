"""Several server replicas on one broker share the device topics: each message is handled by exactly one.

Real Mosquitto, two real ``edgefleet server run --shared-subscriptions`` processes on one store, bare paho
clients as devices.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from fleet_server.broker import EmbeddedBroker
from fleet_server.config import ServerConfig
from fleet_protocol import topics
from tests.server import messages
from tests.server.mqtt_device import FakeDevice
from tests.support.fleet import ServerProcess, start_server
from tests.support.net import wait_for

DEVICES = 4
BATCHES = 10  # telemetry batches per device
RECORDS = 5  # records per batch


def test_shared_subscriptions_are_refused_on_the_embedded_broker(tmp_path):
    with pytest.raises(ValueError, match=r"embedded one \(amqtt\) has no \$share"):
        ServerConfig(data_dir=tmp_path, shared_subscriptions=True)


def test_embedded_broker_delivers_nothing_to_a_shared_subscription():
    """Why the flag is refused there: amqtt 0.12 treats ``$share/...`` as a plain filter that matches nothing."""
    broker = EmbeddedBroker(port=0)
    broker.start()
    clients = []
    try:
        shared, plain, device = (FakeDevice(broker.url, name) for name in ("shared", "plain", "dev-1"))
        clients += [shared, plain, device]
        shared.subscribe(topics.server_subscriptions(shared=True)[1])
        plain.subscribe(topics.server_subscriptions(shared=False)[1])
        topic = topics.device_topic("dev-1", "status")
        for _ in range(3):
            device.publish(topic, messages.status("dev-1"))
        plain.wait_message(topic, count=3)
        assert shared.received == []
    finally:
        for client in clients:
            client.close()
        broker.stop()


def test_replicas_get_distinct_client_ids_and_shared_filters(tmp_path):
    one = ServerConfig(data_dir=tmp_path, broker_url="mqtt://127.0.0.1:1883", shared_subscriptions=True, port=8081)
    two = ServerConfig(data_dir=tmp_path, broker_url="mqtt://127.0.0.1:1883", shared_subscriptions=True, port=8082)
    assert one.mqtt_client_id != two.mqtt_client_id
    assert ServerConfig(data_dir=tmp_path, port=8081).mqtt_client_id == "edgefleet-server"  # one server: as before
    assert all(f.startswith("$share/edgefleet/edgefleet/v1/devices/+/") for f in topics.server_subscriptions(shared=True))


def _health(server: ServerProcess) -> dict:
    return httpx.get(f"{server.url}/api/health", timeout=10).json()


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_two_replicas_handle_each_device_message_once(tmp_path, mosquitto, engine, request):
    """On SQLite both replicas open one data dir's file; on PostgreSQL ``--database-url`` alone implies sharing."""
    store = ["--shared-subscriptions"] if engine == "sqlite" else \
        ["--database-url", request.getfixturevalue("database_url")]
    replicas: list[ServerProcess] = []
    devices: list[FakeDevice] = []
    try:
        for name in ("a", "b"):
            replicas.append(start_server(tmp_path, mosquitto.url, *store, "--server-id", name,
                                         data_dir=tmp_path / "data", name=name))
        sent: Counter[str] = Counter()
        for i in range(DEVICES):
            device_id = f"dev-{i}"
            device = FakeDevice(mosquitto.url, device_id)
            devices.append(device)
            device.publish(topics.device_topic(device_id, "status"), messages.status(device_id))
            sent["status"] += 1
            for batch in range(BATCHES):
                seqs = range(batch * RECORDS + 1, (batch + 1) * RECORDS + 1)
                device.publish(topics.device_topic(device_id, "telemetry"), messages.telemetry(device_id, seqs))
                sent["telemetry"] += 1
        # a redelivered batch (the broker lost the device's PUBACK...): handled once more, stored once in all
        devices[0].publish(topics.device_topic("dev-0", "telemetry"), messages.telemetry("dev-0", range(1, 6)))
        sent["telemetry"] += 1

        def handled() -> Counter[str]:
            return sum((Counter(_health(r)["messages_handled_by_kind"]) for r in replicas), Counter())

        wait_for(lambda: all(handled()[kind] >= n for kind, n in sent.items()), timeout=60,
                 what=f"the replicas to handle {dict(sent)}")
        healths = [_health(r) for r in replicas]
        assert handled() == sent  # not one message twice
        assert all(sum(h["messages_handled_by_kind"].values()) > 0 for h in healths)  # both took a share
        assert sum(h["telemetry_records_received"] for h in healths) == DEVICES * BATCHES * RECORDS + RECORDS
        assert sum(h["telemetry_records_duplicate"] for h in healths) == RECORDS  # the redelivered batch
        with replicas[1].api() as api:
            stored = api.get("/api/telemetry", params={"limit": 1000}).json()
            assert len(stored) == DEVICES * BATCHES * RECORDS
            assert len({(r["device_id"], r["outbox_id"], r["seq"]) for r in stored}) == len(stored)
            assert {d["id"] for d in api.get("/api/devices").json()} >= {f"dev-{i}" for i in range(DEVICES)}
    finally:
        for device in devices:
            device.close()
        for replica in replicas:
            replica.stop()

