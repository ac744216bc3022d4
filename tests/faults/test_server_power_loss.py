"""kill -9 of the fleet server during heavy telemetry writes loses no acknowledged record and no database.

A publisher plays a device: it sends telemetry batches (200 records each, QoS 1) as fast as the broker
acknowledges them, while the server process is killed with SIGKILL at seeded random moments and started
again on the same data directory. The server's persistent MQTT session keeps what arrives while it is down.
At the end ``PRAGMA integrity_check`` is ``ok`` and every record the broker acknowledged is stored once.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from fleet_protocol import messages, topics
from fleet_protocol.messages import TelemetryBatch, TelemetryRecord
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from tests.support.fleet import ServerProcess, start_server
from tests.support.net import wait_for

DEVICE = "power-1"
BATCH = 200


class Publisher(threading.Thread):
    """Publish telemetry batches until stopped; ``acked`` is the highest seq the broker acknowledged."""

    def __init__(self, host: str, port: int):
        super().__init__(daemon=True)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=mqtt.MQTTv311)
        self.client.connect(host, port)
        self.client.loop_start()
        self.acked = 0
        self.halt = threading.Event()

    def run(self) -> None:
        seq = 0
        while not self.halt.is_set():
            records = tuple(TelemetryRecord(seq + i, to_iso(utc_now()), "heartbeat", {"n": seq + i, "pad": "x" * 200})
                            for i in range(1, BATCH + 1))
            batch = TelemetryBatch(DEVICE, "outbox-power", records)
            info = self.client.publish(topics.device_topic(DEVICE, "telemetry"), messages.encode(batch.to_dict()),
                                       qos=1)
            info.wait_for_publish(10)
            seq += BATCH
            self.acked = seq
            self.halt.wait(0.01)  # about 20,000 records a second: heavy, yet the suite stays short

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=15)
        self.client.loop_stop()
        self.client.disconnect()


def stored(db_path: Path) -> list[int]:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as db:
        return [row[0] for row in db.execute("SELECT seq FROM telemetry WHERE device_id = ?", (DEVICE,))]


def power_cuts(tmp_path: Path, mosquitto, rng: random.Random, cuts: int) -> None:
    server: ServerProcess = start_server(tmp_path, mosquitto.url)
    db_path = server.data_dir / "fleet.db"
    publisher = Publisher(mosquitto.host, mosquitto.port)
    publisher.start()
    recoveries = []
    try:
        for _ in range(cuts):
            wait_for(lambda: stored(db_path), timeout=30, what="the server to store telemetry")
            time.sleep(rng.uniform(0.2, 1.5))
            server.kill()
            started = time.monotonic()
            server.restart()
            recoveries.append(round(time.monotonic() - started, 2))
        publisher.stop()
        acked = publisher.acked
        seqs = wait_for(lambda: (s := stored(db_path)) and len(set(s)) >= acked and s, timeout=60,
                        what=f"the server to store all {acked} acknowledged records")
    finally:
        publisher.stop()
        server.kill()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert len(seqs) == len(set(seqs)), "a record was stored twice"
    missing = sorted(set(range(1, acked + 1)) - set(seqs))
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. seqs {missing[:10]}"
    print(f"{cuts} kills, {acked} records acknowledged and stored; restart to healthy took {recoveries} s")


def test_sigkill_of_the_server_during_heavy_writes_keeps_the_database_whole_and_every_acknowledged_record(
        tmp_path, mosquitto, rng):
    power_cuts(tmp_path, mosquitto, rng, 3)


@pytest.mark.slow
def test_sigkill_of_the_server_thirty_times_during_heavy_writes_keeps_every_acknowledged_record(
        tmp_path, mosquitto, rng):
    power_cuts(tmp_path, mosquitto, rng, 30)
