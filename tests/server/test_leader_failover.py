"""Two real server processes on one PostgreSQL database and one Mosquitto: one leads, a dead or frozen one is replaced.

Each replica is ``edgefleet server run --database-url ... --shared-subscriptions`` (one data dir) with a short lease (2 s, renewed every 0.5 s) so the
takeovers fit the CI budget; the measured takeover times are printed (``pytest -s``), bounded only generously.
"""

from __future__ import annotations

import os
import signal
import time
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from tests.server.builders import module_files, tar_gz
from tests.server.test_metrics import scrape, value
from tests.support.fleet import ServerProcess, spawn_server, wait_healthy
from tests.support.net import wait_for

LEASE_S, RENEW_S = 2.0, 0.5
BOUND_S = 30  # generous: a takeover takes about a lease; this only catches one that never happens


@pytest.fixture
def replicas(tmp_path, mosquitto, postgres):
    url = postgres.create_database(migrated=True)
    options = ("--database-url", url, "--shared-subscriptions", "--leader-lease-s", str(LEASE_S),
               "--leader-renew-s", str(RENEW_S))
    started = [spawn_server(tmp_path, mosquitto.url, *options, "--server-id", name, name=name)
               for name in ("replica-a", "replica-b")]
    try:
        for replica in started:
            wait_healthy(replica)
        yield started, url
    finally:
        for replica in started:
            if replica.popen.poll() is None:
                os.kill(replica.popen.pid, signal.SIGCONT)  # a stopped process ignores SIGTERM until continued
            replica.stop()


def health(replica: ServerProcess) -> dict:
    return httpx.get(f"{replica.url}/api/health", timeout=5).json()


def leader_and_follower(replicas: list[ServerProcess]) -> tuple[ServerProcess, ServerProcess]:
    roles = wait_for(lambda: (lambda r: r if sorted(r) == ["follower", "leader"] else None)(
        [health(r)["role"] for r in replicas]), timeout=BOUND_S, what="one leader and one follower")
    leader = replicas[roles.index("leader")]
    return leader, replicas[1 - roles.index("leader")]


def wait_leader(replica: ServerProcess, since: float, what: str) -> float:
    wait_for(lambda: health(replica)["role"] == "leader", timeout=BOUND_S, interval=0.05, what=what)
    took = time.monotonic() - since
    print(f"{what}: {took:.2f} s (lease {LEASE_S} s, renewed every {RENEW_S} s)")
    return took


def test_exactly_one_replica_leads_and_another_takes_over_within_the_lease_when_it_is_killed(replicas):
    servers, _ = replicas
    leader, follower = leader_and_follower(servers)
    epoch = health(leader)["leader_epoch"]
    assert health(follower)["leader_epoch"] is None
    for replica, gauges in ((leader, (1, epoch)), (follower, (0, 0))):
        with replica.api() as api:
            samples = scrape(api)
        assert (value(samples, "edgefleet_server_leader"), value(samples, "edgefleet_server_leader_epoch")) == gauges
    killed = time.monotonic()
    leader.kill()
    wait_leader(follower, killed, "takeover after kill -9 of the leader")
    assert health(follower)["leader_epoch"] == epoch + 1


def test_leader_stopped_inside_a_rollout_step_commits_nothing_after_another_took_over(replicas):
    servers, url = replicas
    leader, follower = leader_and_follower(servers)
    api = follower.api()
    assert api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(module_files()))}).status_code == 201
    created = api.post("/api/rollouts", json={"module": "scaler", "selector": {"site": "lab"}, "allow_empty": True,
                                              "plan": {"canary": 1}})
    assert created.status_code == 201, created.text
    rollout_id = created.json()["id"]
    wait_for(lambda: "waiting" in history_kinds(api, rollout_id), timeout=BOUND_S, what="the rollout to wait")

    dbname = urlsplit(url).path.lstrip("/")
    with psycopg.connect(**postgres_params(url), dbname=dbname) as blocker, \
            psycopg.connect(**postgres_params(url), dbname=dbname, autocommit=True) as watcher:
        # the test holds the rollout's row: the leader's next step (the canary wave) blocks inside its fenced
        # transaction, after its lease check, on the UPDATE of that row
        blocker.execute("SELECT id FROM rollouts WHERE id = %s FOR UPDATE", (rollout_id,))
        registered = api.post("/api/devices", json={"id": "dev-1", "tags": {"site": "lab"}})
        assert registered.status_code == 201, registered.text
        wait_for(lambda: watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                                         (blocker.info.backend_pid,)).fetchone()[0], timeout=BOUND_S, interval=0.02,
                 what="the leader's rollout step to block on the rollout row")
        stopped = time.monotonic()
        os.kill(leader.popen.pid, signal.SIGSTOP)  # frozen mid-transaction, holding the lease row's lock
        blocker.rollback()  # its UPDATE completes; the session idles in its transaction until PostgreSQL ends it
        wait_leader(follower, stopped, "takeover from a leader stopped inside a fenced transaction")
        wait_for(lambda: api.get(f"/api/rollouts/{rollout_id}").json()["waves"] == [["dev-1"]], timeout=BOUND_S,
                 what="the new leader to start the canary wave")
    os.kill(leader.popen.pid, signal.SIGCONT)
    wait_for(lambda: "advancing rollouts failed" in leader.log.read_text(errors="replace"), timeout=BOUND_S,
             what="the resumed old leader's transaction to fail")
    wait_for(lambda: health(leader)["role"] == "follower", timeout=BOUND_S, what="the old leader to follow")

    history = api.get(f"/api/rollouts/{rollout_id}/history").json()
    assert [e["detail"]["wave"] for e in history if e["kind"] == "wave_started"] == [0], history
    assert [e["detail"]["devices"] for e in history if e["kind"] == "devices_admitted"] == [["dev-1"]], history
    assert health(follower)["leader_epoch"] == 2 and api.get(f"/api/rollouts/{rollout_id}").json()["waves"] == [["dev-1"]]


def history_kinds(api: httpx.Client, rollout_id: int) -> list[str]:
    return [e["kind"] for e in api.get(f"/api/rollouts/{rollout_id}/history").json()]


def postgres_params(url: str) -> dict:
    """psycopg's keywords for the test cluster's URL (``postgresql://user@/db?host=SOCKET_DIR&port=N``)."""
    parts = urlsplit(url)
    query = dict(item.split("=", 1) for item in parts.query.split("&"))
    return {"user": parts.username, "host": query["host"], "port": int(query["port"])}
