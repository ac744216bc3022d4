"""Hypothesis-generated malformed MQTT payloads on every topic the agent and the server subscribe to.

A real server and a real agent process; a vandal client publishes seeded, generated payloads (random bytes,
random JSON, and near-valid documents of every message type with wrong or missing fields) on the agent's
``desired`` topic and on each of the server's device topics for that agent. Neither process may crash, each
message must be counted (server ``/api/health`` ``malformed_messages``, the agent's heartbeat
``malformed_messages``), the logs must not grow by a line per message, and the agent must still serve.
"""

from __future__ import annotations

import json

import httpx
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from fleet_protocol import messages, topics
from fleet_protocol.errors import MessageError
from tests.support.fleet import AgentProcess, ServerProcess, start_agent, start_server
from tests.support.net import wait_for

from .conftest import SEED

DEVICE = "fuzz-1"
SERVER_KINDS = ("reported", "status", "telemetry", "fetch", "renew")
MESSAGE_TYPES = ("desired-state", "reported-state", "device-status", "telemetry-batch", "fetch-request",
                 "renew-request", "certificate")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
near_valid = st.fixed_dictionaries(
    {"type": st.sampled_from(MESSAGE_TYPES), "device_id": st.sampled_from([DEVICE, "someone-else", "", 7])},
    optional={"generation": json_values, "records": st.lists(json_values, max_size=3), "modules": json_values,
              "signed": json_values, "signatures": json_values, "outbox_id": json_values, "chunks": json_values,
              "state": json_values, "bundle_digest": st.text(max_size=70), "ts": st.text(max_size=30)})
payloads = (st.binary(max_size=300)
            | json_values.map(lambda v: json.dumps(v).encode())
            | near_valid.map(lambda v: json.dumps(v).encode()))


def agent_malformed(server: ServerProcess) -> int:
    """The agent's own count, from its newest heartbeat as stored on the server."""
    with server.api() as api:
        beats = api.get(f"/api/devices/{DEVICE}/telemetry", params={"kind": "heartbeat", "limit": 1}).json()
    return beats[0]["data"]["malformed_messages"] if beats else -1


def server_malformed(server: ServerProcess) -> int:
    return httpx.get(f"{server.url}/api/health", timeout=5).json()["malformed_messages"]


def parses_as_envelope(payload: bytes) -> bool:
    try:
        messages.parse_desired_envelope(payload)
    except MessageError:
        return False
    return True


def log_lines(process) -> int:
    return process.log.read_text(errors="replace").count("\n")


@pytest.fixture
def pair(tmp_path, mosquitto):
    server = start_server(tmp_path, mosquitto.url)
    agent = start_agent(tmp_path, DEVICE, broker_url=mosquitto.url, key_hex=server.signing_key_hex())
    wait_for(lambda: agent_malformed(server) >= 0, timeout=30, what="the first heartbeat")
    yield server, agent, mosquitto
    agent.stop()
    server.stop()


def vandalise(server: ServerProcess, agent: AgentProcess, broker, examples: int) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="vandal", protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port)
    client.loop_start()
    sent = {"agent": 0, "server": 0, "agent_empty": 0, "agent_parsed": 0}
    server_before, agent_before = server_malformed(server), agent_malformed(server)
    server_log, agent_log = log_lines(server), log_lines(agent)
    topic_choices = [("agent", topics.device_topic(DEVICE, "desired"))] + [
        ("server", topics.device_topic(DEVICE, kind)) for kind in SERVER_KINDS]

    @seed(SEED)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(target=st.sampled_from(topic_choices), payload=payloads)
    def publish(target: tuple[str, str], payload: bytes) -> None:
        who, topic = target
        client.publish(topic, payload, qos=1).wait_for_publish(10)
        if who == "agent" and not payload:
            who = "agent_empty"  # what a cleared retained desired state looks like: ignored, not counted
        elif who == "agent" and parses_as_envelope(payload):
            who = "agent_parsed"  # well-formed but unsigned: refused by the reconciler, reported as an event
        sent[who] += 1

    try:
        publish()
    finally:
        client.loop_stop()
        client.disconnect()
    print(f"sent {sent}")
    wait_for(lambda: server_malformed(server) - server_before >= sent["server"], timeout=60,
             what=f"the server to count {sent['server']} malformed messages")
    wait_for(lambda: agent_malformed(server) - agent_before >= sent["agent"], timeout=60,
             what=f"the agent to count {sent['agent']} malformed messages")
    assert server_malformed(server) - server_before == sent["server"]
    assert agent_malformed(server) - agent_before == sent["agent"]
    assert server.popen.poll() is None and agent.popen.poll() is None
    assert httpx.get(f"{agent.scoring_url}/v2/health/live", timeout=5).status_code == 200
    grown = {"server": log_lines(server) - server_log, "agent": log_lines(agent) - agent_log}
    print(f"log lines added: {grown}")
    assert grown["server"] < 100 and grown["agent"] < 100, f"logs grew by a line per message: {grown}"


def test_a_thousand_malformed_payloads_are_counted_survived_and_logged_sparingly(pair):
    vandalise(*pair, examples=1000)


@pytest.mark.slow
def test_ten_thousand_malformed_payloads_are_counted_survived_and_logged_sparingly(pair):
    vandalise(*pair, examples=10_000)

