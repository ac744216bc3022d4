"""A staged rollout reaches the same end state while the server restarts and agents are killed under it.

A real server process (restarted on the same data dir and port) and real ``edgefleet agent run`` processes on a
real Mosquitto. Every device runs ``scaler`` v1; a rollout (canary of 1, then waves of 1, 2, 4, ... with a rate
limit inside each wave) takes them to v2. While it runs, a seeded schedule restarts the server (SIGTERM or
SIGKILL, seeded) and kills random agents with SIGKILL, restarting each after a seeded pause; one device of the
last wave stays down until the schedule is over, so every fault lands before the rollout can complete.
Afterwards:

* the rollout is ``completed`` and every device runs v2, by the API and by its own local OIP endpoint;
* the history starts each wave once, admits each device once, and records one success per wave;
* every telemetry record each agent's outbox issued is stored once by the server, none lost.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.fleet import AgentProcess, ServerProcess, start_agents, start_server

from .conftest import (MODULE, assert_every_record_arrived_once, assert_rollout_completed_once_everywhere,
                       infer_version, start_rollout_to_v2)

TAGS = {"site": "faults"}


@dataclass
class Faults:
    """What the schedule did, for the test's printout."""

    server_restarts: int = 0
    agent_kills: int = 0
    during_rollout: int = 0  # faults injected while the rollout was still running
    log: list[str] = field(default_factory=list)


def rollout_position(server: ServerProcess, rollout_id: int) -> str:
    """``running, wave 2`` and the like: where the rollout is when a fault hits."""
    with server.api() as api:
        rollout = api.get(f"/api/rollouts/{rollout_id}").json()
    return f"{rollout['state']}, wave {rollout['wave']}"


def restart_server(server: ServerProcess, rng: random.Random) -> str:
    how = rng.choice(("SIGTERM", "SIGKILL"))
    if how == "SIGKILL":
        server.kill()
    server.restart()  # stops it (no-op after a kill), starts it on the same data dir and port, waits healthy
    return how


def revive(agent: AgentProcess) -> None:
    agent.restart()
    agent.wait_ready()


def inject(server: ServerProcess, agents: list[AgentProcess], rollout_id: int, rng: random.Random, *,
           server_restarts: int, agent_kills: int) -> Faults:
    """Play the seeded schedule; every fault lands while the rollout runs.

    The first agent kill hits the straggler, the device sorted last (so it is in the last wave), and it
    stays down until every other fault was played: the rollout cannot complete without it. The other kills
    hit random agents, each restarted after a seeded pause. Faults come in a shuffled order, each after a
    seeded pause.
    """
    straggler, others = agents[-1], agents[:-1]
    done = Faults()
    position = rollout_position(server, rollout_id)
    straggler.kill()
    done.agent_kills += 1
    done.during_rollout += position.startswith("running")
    done.log.append(f"{straggler.device_id} SIGKILL, down until the end ({position})")
    schedule = ["server"] * server_restarts + ["agent"] * (agent_kills - 1)
    rng.shuffle(schedule)
    for kind in schedule:
        time.sleep(rng.uniform(0.2, 1.5))
        position = rollout_position(server, rollout_id)
        done.during_rollout += position.startswith("running")
        if kind == "server":
            done.log.append(f"server {restart_server(server, rng)} ({position})")
            done.server_restarts += 1
        else:
            agent = rng.choice(others)
            agent.kill()
            down_s = rng.uniform(0.2, 2.0)
            time.sleep(down_s)
            revive(agent)
            done.agent_kills += 1
            done.log.append(f"{agent.device_id} SIGKILL, down {down_s:.1f}s ({position})")
    revive(straggler)
    return done


def rollout_under_faults(tmp_path: Path, mosquitto, rng: random.Random, *, devices: int, server_restarts: int,
                         agent_kills: int, devices_per_minute: int) -> None:
    server = start_server(tmp_path, mosquitto.url)
    device_ids = [f"roll-{i:02d}" for i in range(devices)]
    agents: list[AgentProcess] = []
    try:
        agents = start_agents(tmp_path, device_ids, broker_url=mosquitto.url, key_hex=server.signing_key_hex(),
                              tags=TAGS, heartbeat_interval_s=0.3, telemetry_flush_interval_s=0.2, keepalive_s=5)
        with server.api() as api:
            rollout_id = start_rollout_to_v2(api, device_ids, TAGS, devices_per_minute=devices_per_minute)

        faults = inject(server, agents, rollout_id, rng, server_restarts=server_restarts, agent_kills=agent_kills)

        with server.api() as api:
            done, waves = assert_rollout_completed_once_everywhere(api, rollout_id, device_ids)
        for agent in agents:
            assert infer_version(agent.scoring_url, MODULE) == 2, f"{agent.device_id} does not serve v2"
        assert faults.during_rollout == server_restarts + agent_kills, "every fault lands while the rollout runs"
        records = {agent.device_id: assert_every_record_arrived_once(server, agent) for agent in agents}
        print(f"{faults.server_restarts} server restarts, {faults.agent_kills} agent kills "
              f"({faults.during_rollout} while the rollout ran), waves {[len(w) for w in done['waves']]} "
              f"({len(waves)} started once each); telemetry stored once each: {records}")
        print("\n".join(faults.log))
    finally:
        for agent in agents:
            agent.stop()
        server.stop()


def test_rollout_completes_on_every_device_through_two_server_restarts_and_two_agent_kills(tmp_path, mosquitto, rng):
    rollout_under_faults(tmp_path, mosquitto, rng, devices=4, server_restarts=2, agent_kills=2,
                         devices_per_minute=30)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rollout_completes_on_every_device_through_ten_server_restarts_and_ten_agent_kills(tmp_path, mosquitto, rng):
    rollout_under_faults(tmp_path, mosquitto, rng, devices=8, server_restarts=10, agent_kills=10,
                         devices_per_minute=12)
