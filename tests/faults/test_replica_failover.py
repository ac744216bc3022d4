"""A staged rollout completes while the leading replica is ``kill -9``-ed twice and a follower is restarted.

Three real ``edgefleet server run --database-url`` processes, each with its own empty data dir, on one real
PostgreSQL and one real Mosquitto (shared subscriptions), behind a real HAProxy; in-process agents (the real
agent code, each with its own state dir and local OIP endpoint) on the broker. Every device runs ``scaler`` v1;
a rollout takes them to v2. While it runs, a seeded schedule kills the leader (found through ``GET /api/health``:
``role``) with SIGKILL twice, restarting each after a seeded pause, and restarts one follower (SIGTERM); the
device sorted last is stopped until the schedule is over, so every fault lands before the rollout can complete.
Meanwhile a thread runs the CLI against HAProxy in a loop (``device list --json``, ``model list --json``,
``deploy rollout status --json``). Afterwards:

* the rollout is ``completed``, its history starts each wave once and records one success per wave, and every
  device runs v2, by the API and by its own local OIP endpoint;
* every telemetry record each agent's outbox issued is stored once in PostgreSQL, none lost;
* no CLI command failed. Every call in the loop is a GET: idempotent (:func:`fleet_protocol.retry.is_idempotent`),
  so the CLI retries one whose answer was lost or was a 502/503/504 (:mod:`edgefleet_cli.client`), and HAProxy
  re-dispatches one whose connection a dead replica refused. The CLI's POSTs (``model register``, ``deploy``,
  ``rollout pause``...) are retried only when the request never left; none runs in the loop.

Printed for the closing note (``pytest -s``): the seed, each takeover (kill -> another replica reports itself
leader at a new epoch, polled every 50 ms), CLI calls made/failed, telemetry records sent/stored/duplicated.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from tests.support.fleet import ADMIN_TOKEN, ServerProcess, run_cli, start_replicas
from tests.support.haproxy import HAProxy, haproxy_binary, start_haproxy
from tests.support.net import wait_for
from tests.support.redelivery import telemetry_counts

from .conftest import (SEED, assert_rollout_completed_once_everywhere, assert_seqs_stored_once, infer_version,
                       start_rollout_to_v2, wait_outbox_drained)

TAGS = {"site": "failover"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
LEASE_S, RENEW_S = 2.0, 0.5  # a short lease so two takeovers fit the CI budget (the default is 5 s / 1.5 s)
PAUSE_BETWEEN_CLI_CALLS_S = 0.3  # each call is a new Python process: leave the replicas some CPU on 2 cores
AGENT_SETTINGS = {"heartbeat_interval_s": 0.3, "telemetry_flush_interval_s": 0.2, "fetch_timeout_s": 1.0,
                  "keepalive_s": 5}


@dataclass
class Faults:
    """What the schedule did, for the test's printout."""

    takeovers_s: list[float] = field(default_factory=list)
    during_rollout: int = 0  # faults injected while the rollout was still running
    log: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        """Log a fault, printed at once (``pytest -s``) so a failing run shows what happened before it."""
        print(line)
        self.log.append(line)


def role_of(replica: ServerProcess) -> tuple[str, int | None] | None:
    """``(role, leader_epoch)`` the replica reports; None when it does not answer (dead or starting)."""
    try:
        body = httpx.get(f"{replica.url}/api/health", timeout=2).json()
    except httpx.HTTPError:
        return None
    return body["role"], body["leader_epoch"]


def the_leader(replicas: list[ServerProcess]) -> tuple[ServerProcess, int]:
    """The one replica that reports itself leader, and its epoch (waits while none or several do)."""
    def one() -> tuple[ServerProcess, int] | None:
        leaders = [(r, answer[1]) for r in replicas if (answer := role_of(r)) and answer[0] == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    return wait_for(one, timeout=30, interval=0.05, what="exactly one replica to lead")


def kill_leader(replicas: list[ServerProcess]) -> tuple[ServerProcess, float, int]:
    """SIGKILL the leader; wait until another replica leads at a newer epoch. ``(killed, takeover s, epoch)``."""
    leader, epoch = the_leader(replicas)
    others = [r for r in replicas if r is not leader]
    leader.kill()
    killed_at = time.monotonic()

    def successor() -> int | None:
        answers = [role_of(r) for r in others]
        return next((e for a in answers if a and a[0] == "leader" and (e := a[1]) > epoch), None)

    new_epoch = wait_for(successor, timeout=30, interval=0.05, what=f"a replica to take over from {leader.name}")
    return leader, time.monotonic() - killed_at, new_epoch


def rollout_position(proxy: HAProxy, rollout_id: int) -> str:
    """``running, wave 2`` and the like: where the rollout is when a fault hits (asked through HAProxy)."""
    rollout = httpx.get(f"{proxy.url}/api/rollouts/{rollout_id}", headers=ADMIN, timeout=30).json()
    return f"{rollout['state']}, wave {rollout['wave']}"


class Straggler:
    """The device sorted last, stopped while the faults are played so the rollout cannot complete before."""

    def __init__(self, agents: list[Agent]):
        self.agents, self.index = agents, len(agents) - 1

    def stop(self) -> None:
        self.agents[self.index].stop()

    def revive(self) -> None:
        again = Agent(self.agents[self.index].config)  # same state dir: same outbox, same installed versions
        again.start()
        self.agents[self.index] = again


def inject(replicas: list[ServerProcess], proxy: HAProxy, agents: list[Agent], rollout_id: int,
           rng: random.Random) -> Faults:
    """Play the seeded schedule: the leader SIGKILLed twice (restarted after a seeded pause, once another replica
    took over) and one follower restarted, in a shuffled order, each after a seeded pause."""
    done = Faults()
    straggler = Straggler(agents)
    straggler.stop()
    done.note(f"{agents[-1].device_id} stopped until the end ({rollout_position(proxy, rollout_id)})")
    schedule = ["leader", "leader", "follower"]
    rng.shuffle(schedule)
    for kind in schedule:
        time.sleep(rng.uniform(0.2, 1.5))
        position = rollout_position(proxy, rollout_id)
        done.during_rollout += position.startswith("running")
        if kind == "leader":
            killed, takeover_s, epoch = kill_leader(replicas)
            down_s = rng.uniform(0.2, 2.0)
            time.sleep(down_s)
            killed.restart()
            done.takeovers_s.append(takeover_s)
            done.note(f"leader {killed.name} SIGKILL ({position}): another replica led at epoch {epoch} "
                            f"{takeover_s:.2f} s later; {killed.name} restarted after {down_s:.1f} s")
        else:
            leader, _ = the_leader(replicas)
            follower = rng.choice([r for r in replicas if r is not leader])
            follower.restart()  # SIGTERM, then the same data dir and port
            done.note(f"follower {follower.name} restarted ({position})")
    straggler.revive()
    return done


@dataclass
class CliLoop:
    """The CLI pointed at HAProxy, run in a loop on a thread: every command's outcome."""

    proxy_url: str
    rollout_id: int
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def commands(self) -> list[tuple[str, ...]]:
        return [("device", "list", "--json"), ("model", "list", "--json"),
                ("deploy", "rollout", "status", str(self.rollout_id), "--json")]

    def start(self) -> CliLoop:
        self._thread = threading.Thread(target=self._run, name="cli-loop", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            for command in self.commands():
                result = run_cli(*command, server=self.proxy_url, check=False)
                self.calls += 1
                try:
                    json.loads(result.stdout)
                    ok = result.returncode == 0
                except ValueError:
                    ok = False
                if not ok:
                    self.failures.append(f"edgefleet {' '.join(command)} -> {result.returncode}: "
                                         f"{result.stdout[-300:]}{result.stderr[-300:]}")
                self._stop.wait(PAUSE_BETWEEN_CLI_CALLS_S)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=150)


def stored_seqs(database_url: str, device_id: str) -> list[int]:
    """Every telemetry seq of the device stored in the replicas' PostgreSQL database, one per row."""
    with psycopg.connect(database_url) as conn:
        return [row[0] for row in conn.execute("SELECT seq FROM telemetry WHERE device_id = %s", (device_id,))]


def failover_under_faults(tmp_path: Path, mosquitto, postgres, rng: random.Random, *, devices: int,
                          devices_per_minute: int) -> None:
    if haproxy_binary() is None:
        pytest.fail("haproxy is not installed: run `make system-deps`")
    database_url = postgres.create_database(migrated=True)
    replicas = start_replicas(tmp_path, "--leader-lease-s", str(LEASE_S), "--leader-renew-s", str(RENEW_S),
                              count=3, broker_url=mosquitto.url, database_url=database_url)
    proxy = start_haproxy(tmp_path / "haproxy", {r.name: f"127.0.0.1:{r.port}" for r in replicas})
    agents: list[Agent] = []
    cli = None
    try:
        wait_for(lambda: set(proxy.server_states().values()) == {"UP"}, what="three replicas in rotation")
        api = httpx.Client(base_url=proxy.url, headers=ADMIN, timeout=30)
        key = api.get("/api/keys").json()["signing_keys"][0]["public_key"]
        device_ids = [f"fail-{i:02d}" for i in range(devices)]
        for device_id in device_ids:
            agents.append(Agent(AgentConfig(device_id=device_id, state_dir=tmp_path / device_id,
                                            broker_url=mosquitto.url, trusted_keys=[key], scoring_port=0,
                                            tags=TAGS, **AGENT_SETTINGS)))
            agents[-1].start()
        rollout_id = start_rollout_to_v2(api, device_ids, TAGS, devices_per_minute=devices_per_minute)
        cli = CliLoop(proxy.url, rollout_id).start()

        faults = inject(replicas, proxy, agents, rollout_id, rng)

        done, waves = assert_rollout_completed_once_everywhere(api, rollout_id, device_ids)
        for agent in agents:
            assert infer_version(agent.scoring_url, "scaler") == 2, f"{agent.device_id} does not serve v2"
        cli.stop()
        assert faults.during_rollout == 3, f"every fault lands while the rollout runs: {faults.log}"
        assert cli.calls > 0 and not cli.failures, f"{len(cli.failures)} of {cli.calls} CLI calls failed:\n" \
            + "\n".join(cli.failures)

        sent = stored = duplicated = 0
        for agent in agents:
            last = wait_outbox_drained(agent.device_id, agent.config.state_dir)
            seqs = assert_seqs_stored_once(agent.device_id, last, lambda: stored_seqs(database_url, agent.device_id))
            sent, stored = sent + last, stored + len(set(seqs))
            duplicated += len(seqs) - len(set(seqs))
        received, refused = map(sum, zip(*(telemetry_counts(r.url) for r in replicas)))
        api.close()
        print(f"fault seed: EDGEFLEET_FAULT_SEED={SEED}; 3 replicas, {devices} devices, lease {LEASE_S} s "
              f"(renewed every {RENEW_S} s)")
        print("takeovers (kill -> a new leader at a newer epoch): "
              + ", ".join(f"{t:.2f} s" for t in faults.takeovers_s))
        print(f"CLI through HAProxy: {cli.calls} calls, {len(cli.failures)} failed")
        print(f"telemetry: {sent} records sent, {stored} stored, {duplicated} stored twice; the replicas (since "
              f"their last start) received {received}, {refused} of them already stored")
        print(f"waves {[len(w) for w in done['waves']]} ({len(waves)} started once each)")
    finally:
        if cli is not None:
            cli.stop()
        for agent in agents:
            agent.stop()
        proxy.stop()
        for replica in replicas:
            replica.stop()


@pytest.mark.timeout(600)  # three server starts and three restarts: minutes on a loaded 2-core machine
def test_rollout_completes_through_two_leader_kills_and_a_follower_restart_behind_haproxy(
        tmp_path, mosquitto, postgres, rng):
    failover_under_faults(tmp_path, mosquitto, postgres, rng, devices=4, devices_per_minute=30)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rollout_of_ten_devices_completes_through_two_leader_kills_and_a_follower_restart_behind_haproxy(
        tmp_path, mosquitto, postgres, rng):
    failover_under_faults(tmp_path, mosquitto, postgres, rng, devices=10, devices_per_minute=12)
