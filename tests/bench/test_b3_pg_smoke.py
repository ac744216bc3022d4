"""B3 on PostgreSQL (benchmarks/b3_pg.py): replicas store every record once, the costs it reports, its projection.

The full run at reduced size is slow (Mosquitto, a PostgreSQL cluster, five server processes): ``pytest -m slow
tests/bench``. No timing is asserted.
"""

from __future__ import annotations

import pytest

from benchmarks import b3_pg
from benchmarks.telemetry_rig import loss_check
from tests.support.postgres import start_postgres


@pytest.mark.slow
def test_b3_pg_replicas_store_every_record_exactly_once_and_report_cpu_and_wal_per_record():
    result = b3_pg.run(devices=2, records=1000, rounds=1, replicas=(1, 2), publish=False)
    assert set(result["runs"]) == {"sqlite-1", "pg-1", "pg-2"}
    for name, (run,) in result["runs"].items():
        assert run["issued"] == run["rows_stored"] == 2 * 1000, run
        assert run["delivered"] - run["duplicates_delivered"] == run["rows_stored"], run
        assert run["missing"] == run["extra_stored"] == 0 and run["zero_loss"], run
        assert run["cpu_s"]["servers"] > 0
    for name in ("pg-1", "pg-2"):
        (run,) = result["runs"][name]
        assert run["cpu_s"]["postgres"] > 0  # the backends' work is counted, not only the idle postmaster
        assert run["wal_bytes_per_record"] > 100  # each row (~650 B of JSON) goes through the WAL
    assert sum(result["runs"]["pg-2"][0]["delivered_by_replica"]) == 2 * 1000
    assert result["zero_loss"]
    assert set(b3_pg._rows(result)) == {"B3-pg-1", "B3-pg-2"}


def test_projection_grows_with_replicas_until_postgres_cpu_bounds_it():
    projected = b3_pg.projection({"servers": 0.2, "postgres": 0.05}, 700.0, postgres_cores=1)
    assert projected["records_per_s_per_replica"] == pytest.approx(5000)
    assert projected["records_per_s_per_postgres_core"] == pytest.approx(20000)
    by_replicas = projected["records_per_s_by_replicas"]
    assert by_replicas[1] == pytest.approx(5000) and by_replicas[2] == pytest.approx(10000)
    assert by_replicas[4] == pytest.approx(20000)
    assert by_replicas[8] == pytest.approx(20000)  # 8 x 5,000 would be 40,000: one PostgreSQL core carries 20,000
    assert projected["replicas_one_postgres_core_carries"] == pytest.approx(4)
    assert projected["wal_mb_per_s_at_100k_records_per_s"] == pytest.approx(70)


def test_pg_row_counter_finds_a_record_stored_twice_and_one_missing(postgres):
    cluster = postgres
    url = cluster.create_database(migrated=True)
    counter = b3_pg.PgRowCounter(cluster, url.split("?")[0].rsplit("/", 1)[1])
    try:
        with cluster.connect(url.split("?")[0].rsplit("/", 1)[1]) as conn:
            for outbox, seq in (("ob-a", 1), ("ob-a", 2), ("ob-other", 1)):  # seq 3 never arrives
                conn.execute("INSERT INTO telemetry (device_id, outbox_id, seq, ts, kind, data, received) "
                             "VALUES ('a', %s, %s, 't', 'model_stats', '{}', 't')", (outbox, seq))
        report = {"a": {"outbox_id": "ob-a", "last_seq": 3, "left": 0, "dropped": 0}}
        checks = loss_check(counter, report, lambda: (3, 0), settle_s=0)
    finally:
        counter.close()
    assert checks["missing"] == 1 and checks["extra_stored"] == 1
    assert not checks["zero_loss"] and not checks["stored_once"]


def test_durable_cluster_keeps_postgres_own_durability_settings():
    cluster = start_postgres(durable=True)
    try:
        with cluster.connect() as conn:
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                        for name in ("fsync", "synchronous_commit", "full_page_writes")}
    finally:
        cluster.stop()
    assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
