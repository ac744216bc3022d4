"""Telemetry produced through broker restarts and a network partition is delivered at least once and stored
exactly once: none lost, none stored twice.

A real server and a real agent process; the agent reaches Mosquitto through a :class:`~simulators.faults.LinkProxy`
so the test can cut its link. The agent writes a heartbeat every 0.2 s while the broker is restarted (seeded
random up-times) and while the proxy is cut. The agent's outbox numbers records 1, 2, 3, ... (``AUTOINCREMENT``);
once its outbox is empty, the server must hold every seq from 1 to the last one exactly once. MQTT QoS 1 and the
outbox resend what was not acknowledged, so a record may reach the server more than once; the server counts every
delivery and stores a record once. Since a run is not sure to redeliver anything, the check also redelivers stored
records itself and requires them counted as duplicates and not stored again
(:func:`tests.faults.conftest.assert_every_record_arrived_once`).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from simulators.faults import LinkProxy
from tests.support.fleet import start_agent, start_server
from tests.support.net import wait_for

from .conftest import assert_every_record_arrived_once, outbox_state, stored_seqs


@pytest.fixture
def linked(tmp_path: Path, mosquitto):
    """Server on the broker directly; agent on the broker through a cuttable proxy."""
    server = start_server(tmp_path, mosquitto.url)
    proxy = LinkProxy((mosquitto.host, mosquitto.port))
    agent = start_agent(tmp_path, "link-1", broker_url=proxy.url, key_hex=server.signing_key_hex(),
                        heartbeat_interval_s=0.2, telemetry_flush_interval_s=0.1, keepalive_s=5)
    wait_for(lambda: stored_seqs(server, agent.device_id), timeout=30, what="the first heartbeat")
    yield server, agent, proxy
    agent.stop()
    proxy.close()
    server.stop()


def restart_broker(mosquitto, rng: random.Random, times: int) -> None:
    for _ in range(times):
        time.sleep(rng.uniform(0.5, 2.0))
        mosquitto.stop()
        time.sleep(rng.uniform(0.5, 2.0))
        mosquitto.start()


def test_telemetry_written_across_three_broker_restarts_is_stored_exactly_once(linked, mosquitto, rng):
    server, agent, _ = linked
    restart_broker(mosquitto, rng, 3)
    last = assert_every_record_arrived_once(server, agent)
    assert last > 10


def test_telemetry_written_during_a_partition_is_stored_exactly_once(linked, rng):
    server, agent, proxy = linked
    proxy.cut()
    time.sleep(rng.uniform(3.0, 5.0))
    _, issued_during_cut = outbox_state(agent.state_dir)
    proxy.restore()
    last = assert_every_record_arrived_once(server, agent)
    assert last >= issued_during_cut


def test_telemetry_written_during_a_silent_partition_is_stored_exactly_once(linked, rng):
    server, agent, proxy = linked
    proxy.blackhole()
    time.sleep(rng.uniform(3.0, 5.0))
    proxy.restore()
    assert_every_record_arrived_once(server, agent)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_telemetry_written_across_ten_broker_restarts_and_a_five_minute_partition_is_stored_exactly_once(
        linked, mosquitto, rng):
    server, agent, proxy = linked
    restart_broker(mosquitto, rng, 10)
    proxy.cut()
    time.sleep(300)
    proxy.restore()
    assert_every_record_arrived_once(server, agent)
