"""Telemetry rollups and retention on both engines: rollups add up to the raw records, a redelivery counts once,
retention deletes exactly what is past its limit and keeps the totals, and the API reads each resolution."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgefleet_cli.main import app
from fleet_protocol import messages, sketch, topics
from fleet_protocol.messages import TelemetryBatch, TelemetryRecord
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from fleet_server.config import ServerConfig
from fleet_server.leadership import Leadership, NotLeader
from fleet_server.retention import TelemetryRetention
from fleet_server.store import Database
from fleet_server.store import captures as capture_store
from fleet_server.store import drift as drift_store
from fleet_server.store import rollups as rollup_store
from fleet_server.store import telemetry as telemetry_store
from tests.support.postgres import BOTH_ENGINES
from tests.support.net import wait_for

from .conftest import ADMIN_TOKEN
from .mqtt_device import FakeDevice

NOW = datetime(2026, 12, 1, 12, 0, 30, tzinfo=timezone.utc)
DAY = timedelta(days=1)


pytestmark = BOTH_ENGINES


@pytest.fixture
def db(store_url, tmp_path):
    database = Database(store_url or f"sqlite:///{tmp_path}/fleet.db")
    yield database
    database.close()


def retention(db: Database, tmp_path: Path, **limits) -> TelemetryRetention:
    return TelemetryRetention(db=db, config=ServerConfig(data_dir=tmp_path / "config", **limits), clock=lambda: NOW,
                              rollup_batch=7, prune_batch=5)  # small batches: every step takes several


def records(seqs, *, at: datetime, model: str = "iris") -> list[dict]:
    """A device's records as the agent writes them, cycling heartbeat, model_stats, event and fallback."""
    out = []
    for seq in seqs:
        ts = to_iso(at + timedelta(seconds=13 * seq))
        kind = ("heartbeat", "model_stats", "event", "fallback")[seq % 4]
        data = {"heartbeat": {"cpu_percent": seq % 90, "rss_bytes": 1000 + seq},
                "model_stats": {"model": model, "version": 1 + seq // 4 % 2, "requests": seq, "errors": seq % 3,
                                "latency_sketch": sketch.encode_bins([[900 + seq % 40, seq]])},
                "event": {"event": "install_started"},
                "fallback": {"model": model, "reasons": {"timeout": {"ok": 2, "failed": 1}}}}[kind]
        out.append({"seq": seq, "ts": ts, "kind": kind, "data": data})
    return out


def store(db: Database, device: str, batch: list[dict], *, received: datetime, outbox: str = "outbox-1") -> int:
    return telemetry_store.insert_records(db=db, device_id=device, outbox_id=outbox, records=batch,
                                          received=to_iso(received))


def totals(db: Database, resolution: str, device: str | None = None) -> dict[str, int]:
    rows = rollup_store.query(db=db, resolution=resolution, device_id=device, limit=1000)
    return {c: sum(r[c] for r in rows) for c in ("records", "requests", "errors", "fallbacks", "heartbeats", "events")}


def expected(batch: list[dict]) -> dict[str, int]:
    stats = [r["data"] for r in batch if r["kind"] == "model_stats"]
    return {"records": len(batch), "requests": sum(s["requests"] for s in stats),
            "errors": sum(s["errors"] for s in stats), "fallbacks": 3 * sum(r["kind"] == "fallback" for r in batch),
            "heartbeats": sum(r["kind"] == "heartbeat" for r in batch),
            "events": sum(r["kind"] == "event" for r in batch)}


def test_rollups_add_up_to_the_raw_records_at_both_resolutions(db, tmp_path):
    batches = {"cam-1": records(range(1, 90), at=NOW - timedelta(hours=3)),
               "cam-2": records(range(1, 40), at=NOW - timedelta(minutes=50), model="resnet")}
    for device, batch in batches.items():
        store(db, device, batch, received=NOW)
    assert retention(db, tmp_path).step()["rolled_up"] == 89 + 39
    for resolution in ("minute", "hour"):
        for device, batch in batches.items():
            assert totals(db, resolution, device) == expected(batch)
    hours = rollup_store.query(db=db, resolution="hour", device_id="cam-1", model="iris", limit=1000)
    assert {(r["version"], r["bucket"]) for r in hours} >= {(v, "2026-12-01T09:00:00Z") for v in (0, 1, 2)}
    assert all(r["latency_us"]["p50"] > 0 for r in hours if r["requests"])


def test_a_redelivered_batch_is_rolled_up_once(db, tmp_path):
    steps = retention(db, tmp_path)
    first = records(range(1, 30), at=NOW - timedelta(minutes=20))
    store(db, "cam-1", first, received=NOW)
    steps.step()
    again = records(range(20, 45), at=NOW - timedelta(minutes=20))  # 20..29 a second time (lost PUBACK), then new
    assert store(db, "cam-1", first, received=NOW) == 0
    assert store(db, "cam-1", again, received=NOW) == 15
    assert steps.step()["rolled_up"] == 15
    assert steps.step()["rolled_up"] == 0
    for resolution in ("minute", "hour"):
        assert totals(db, resolution) == expected(records(range(1, 45), at=NOW))


def test_retention_deletes_exactly_what_is_past_each_limit_and_the_rollups_keep_the_totals(db, tmp_path):
    ages = [timedelta(hours=1), 7 * DAY - timedelta(seconds=1), 7 * DAY, 7 * DAY + timedelta(seconds=1), 20 * DAY,
            30 * DAY + timedelta(minutes=1), 90 * DAY]  # how long ago each device's batch was received
    batches = []
    for i, age in enumerate(ages):
        received = to_iso(NOW - age)
        batches.append(records(range(1, 9), at=NOW - age - timedelta(minutes=2)))  # measured before it arrived
        store(db, f"cam-{i}", batches[-1], received=NOW - age)
        drift_store.insert_windows(db=db, device_id=f"cam-{i}", outbox_id="o", windows=[
            {"seq": 1, "ts": received, "model": "iris", "version": 1, "rows": 3, "counts": {}}], received=received)
        capture_store.insert_captures(db=db, device_id=f"cam-{i}", outbox_id="o", records=[
            {"seq": 1, "ts": received, "data": {"model": "iris", "version": 1}}], received=received)
    done = retention(db, tmp_path).step()

    within_7_days = {f"cam-{i}" for i, age in enumerate(ages) if age <= 7 * DAY}  # cam-0, 1, 2
    assert {r["device_id"] for r in telemetry_store.query(db=db, limit=1000)} == within_7_days
    assert done["telemetry"] == 8 * (len(ages) - len(within_7_days))
    assert {w["device_id"] for w in drift_store.windows(db=db, model="iris", version=1)} == within_7_days
    assert {c["device_id"] for c in capture_store.list_captures(db=db, limit=1000)} == within_7_days
    minute_devices = {r["device_id"] for r in rollup_store.query(db=db, resolution="minute", limit=1000)}
    assert minute_devices == {f"cam-{i}" for i, age in enumerate(ages) if age < 30 * DAY}
    assert totals(db, "hour") == expected([r for batch in batches for r in batch])  # hour rollups are kept


def test_raw_telemetry_is_pruned_only_once_rolled_up(db, tmp_path):
    store(db, "cam-1", records(range(1, 13), at=NOW - 30 * DAY), received=NOW - 30 * DAY)
    cutoff = to_iso(NOW - 7 * DAY)
    assert rollup_store.prune(db=db, table="telemetry", cutoff=cutoff, limit=100) == 0
    assert rollup_store.roll_up(db=db, limit=100) == 12
    assert [rollup_store.prune(db=db, table="telemetry", cutoff=cutoff, limit=5) for _ in range(4)] == [5, 5, 2, 0]
    assert totals(db, "hour")["records"] == 12


def test_the_api_reads_each_resolution_and_auto_reads_rollups_where_raw_telemetry_is_pruned(api, fleet):
    now = utc_now()
    store(fleet.db, "cam-1", records(range(1, 9), at=now - 10 * DAY), received=now - 10 * DAY)  # past 7 days
    store(fleet.db, "cam-1", records(range(9, 13), at=now - timedelta(hours=1)), received=now)
    fleet.retention.step()

    def get(**params) -> list[dict]:
        response = api.get("/api/telemetry", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    assert [r["seq"] for r in get()] == [12, 11, 10, 9]  # auto without since: raw, what is left of it
    assert [r["seq"] for r in get(resolution="raw", since="30d")] == [12, 11, 10, 9]
    for params, resolution in (({"since": "14d"}, "minute"), ({"since": "60d"}, "hour"),
                               ({"resolution": "hour"}, "hour"), ({"resolution": "minute", "since": "60d"}, "minute")):
        rows = get(**params)
        assert {r["resolution"] for r in rows} == {resolution}, params
        assert sum(r["records"] for r in rows) == 12, params
    iris = get(model="iris")
    assert {r["model"] for r in iris} == {"iris"} and sum(r["requests"] for r in iris) == 1 + 5 + 9  # model_stats seqs
    refused = api.get("/api/telemetry", params={"resolution": "minute", "kind": "heartbeat"})
    assert refused.status_code == 400 and "kind filters raw records" in refused.text


def test_a_batch_published_twice_counts_once_in_the_rollups_the_cli_shows(server):
    batch = records(range(1, 9), at=utc_now() - timedelta(hours=1))
    payload = messages.encode(TelemetryBatch("cam-1", "outbox-1", tuple(TelemetryRecord(**r) for r in batch)).to_dict())
    device = FakeDevice(server.broker_url, "cam-1")
    try:
        for _ in range(2):  # the outbox sends it again when the first PUBACK is lost
            device.publish(topics.device_topic("cam-1", "telemetry"), payload)
        wait_for(lambda: server.fleet.handlers.telemetry_received == 16, what="both deliveries")
    finally:
        device.close()
    server.fleet.retention.step()

    def cli(*args: str):
        return CliRunner().invoke(app, ["telemetry", *args, "--server", server.url, "--token", ADMIN_TOKEN],
                                  env={"COLUMNS": "200"})

    rows = json.loads(cli("--resolution", "hour", "--json").output)
    assert sum(r["records"] for r in rows) == 8 and sum(r["requests"] for r in rows) == 1 + 5
    table = cli("--resolution", "minute", "--device", "cam-1")
    assert table.exit_code == 0 and "minute rollups" in table.output and "iris:1" in table.output
    refused = cli("--resolution", "minute", "--kind", "heartbeat")
    assert refused.exit_code == 1 and "kind filters raw records" in str(refused.exception)


def test_a_replica_that_does_not_lead_rolls_up_and_prunes_nothing(db, tmp_path):
    store(db, "cam-1", records(range(1, 13), at=NOW - 30 * DAY), received=NOW - 30 * DAY)
    follower = Leadership(transaction=db.transaction, backend=object(), replica_id="follower", lease_s=5.0,
                          renew_s=1.0)  # never elected: its lease backend is never reached
    steps = TelemetryRetention(db=db, config=ServerConfig(data_dir=tmp_path / "config"), leadership=follower,
                               clock=lambda: NOW)
    with pytest.raises(NotLeader):
        steps.step()
    assert len(telemetry_store.query(db=db, limit=1000)) == 12
    assert rollup_store.query(db=db, resolution="minute") == rollup_store.query(db=db, resolution="hour") == []
