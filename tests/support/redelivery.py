"""At-least-once delivery, exactly-once storage: make a redelivery happen and check the server neither loses it
from its count nor stores it again.

A check that only counts stored rows cannot see a duplicate: the telemetry table's primary key and the captures
table's unique key ``(device_id, outbox_id, seq)`` drop one before it becomes a row. And a fault run is not sure
to cause a redelivery. So :func:`assert_redelivery_is_counted_and_not_stored` publishes records the server already
stored again, through the broker (same device, outbox, seqs and content: what a redelivery is), and reads the
server's delivery counters (``telemetry_records_received``, ``telemetry_records_duplicate`` in ``GET /api/health``):
each redelivered record must count as received and duplicate, and stay stored once.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt

from fleet_protocol import messages, topics
from tests.support.net import wait_for


def telemetry_counts(server_url: str) -> tuple[int, int]:
    """``(records the broker delivered to the server, of those already stored)`` since it started."""
    body = httpx.get(f"{server_url}/api/health", timeout=10).json()
    return body["telemetry_records_received"], body["telemetry_records_duplicate"]


def _stored(db_path: Path, device_id: str, count: int) -> tuple[str, list[messages.TelemetryRecord], dict]:
    """The device's last ``count`` telemetry rows and last ``count`` captures, as records; and how often each
    ``(table, seq)`` is stored."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
        rows = db.execute("SELECT outbox_id, seq, ts, kind, data FROM telemetry WHERE device_id = ? "
                          "ORDER BY seq DESC LIMIT ?", (device_id, count)).fetchall()
        rows += db.execute("SELECT outbox_id, seq, ts, 'capture', data FROM captures WHERE device_id = ? "
                           "ORDER BY seq DESC LIMIT ?", (device_id, count)).fetchall()
        times = {("telemetry", seq): n for seq, n in db.execute(
            "SELECT seq, COUNT(*) FROM telemetry WHERE device_id = ? GROUP BY seq", (device_id,))}
        times |= {("captures", seq): n for seq, n in db.execute(
            "SELECT seq, COUNT(*) FROM captures WHERE device_id = ? GROUP BY seq", (device_id,))}
    outbox_id = rows[0][0]
    records = sorted((messages.TelemetryRecord(seq, ts, kind, json.loads(data))
                      for box, seq, ts, kind, data in rows if box == outbox_id), key=lambda r: r.seq)
    return outbox_id, records, times


def publish_once(broker_url: str, topic: str, payload: bytes) -> None:
    """Publish one QoS 1 message from a throwaway client, as a redelivery (or a forger) would."""
    broker = urlsplit(broker_url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(broker.hostname, broker.port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


def assert_redelivery_is_counted_and_not_stored(*, server_url: str, db_path: Path, broker_url: str, device_id: str,
                                                count: int = 5) -> tuple[int, int]:
    """Deliver the device's last stored records again; return the server's ``(received, duplicate)`` counts after."""
    outbox_id, records, _ = _stored(db_path, device_id, count)
    _, duplicates = telemetry_counts(server_url)
    batch = messages.TelemetryBatch(device_id, outbox_id, tuple(records))
    publish_once(broker_url, topics.device_topic(device_id, "telemetry"), messages.encode(batch.to_dict()))
    wait_for(lambda: telemetry_counts(server_url)[1] >= duplicates + len(records), timeout=30,
             what=f"the server to count the {len(records)} records delivered again as duplicates")
    _, _, times = _stored(db_path, device_id, count)
    twice = sorted(key for key, n in times.items() if n != 1)
    assert not twice, f"records of {device_id} stored more than once: {twice}"
    return telemetry_counts(server_url)
