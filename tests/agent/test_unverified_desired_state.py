"""Desired-state messages that fail the signature or device check change nothing but a counter and the reported
``error``: against a real Mosquitto and a real agent, they neither abort a download in progress nor drop a queued
verified document, however large the generation they claim."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

from edge_agent.agent import Agent
from fleet_protocol import messages, topics
from fleet_protocol.fields import MAX_INT
from fleet_protocol.messages import DesiredState
from fleet_protocol.root import make_root, sign_root
from edge_agent.clock import utc_now
from fleet_protocol.timestamps import to_iso
from fleet_server.keys import new_signing_key
from tests.agent.helpers import FakeServer, desired_envelope, make_bundle
from tests.support.net import wait_for

CLAIMED_GENERATION = 2**62

# init() says it started, then waits for the test: the reconciler's worker is busy loading v1 meanwhile.
GATED_INIT = (
    "import pathlib, time\n"
    "def init(context):\n"
    "    pathlib.Path(context.config['entered']).touch()\n"
    "    deadline = time.monotonic() + 60\n"
    "    while not pathlib.Path(context.config['gate']).exists() and time.monotonic() < deadline:\n"
    "        time.sleep(0.02)\n"
)


def forged_desired_states(server: FakeServer, device_id: str) -> list[bytes]:
    """Unsigned, signed by an unknown key, and signed by the fleet key for another device, each claiming 2**62;
    and one for another device claiming the largest generation a signed message may carry."""
    unsigned = {"signed": DesiredState(device_id, CLAIMED_GENERATION, to_iso(utc_now()), ()).to_dict(),
                "signatures": []}
    wrong_key = desired_envelope(new_signing_key(), device_id, CLAIMED_GENERATION, [])
    other_device = desired_envelope(server.key, "dev-other", CLAIMED_GENERATION, [])
    other_device_in_range = desired_envelope(server.key, "dev-other", MAX_INT, [])
    return [messages.encode(envelope) for envelope in (unsigned, wrong_key, other_device, other_device_in_range)]


def attack(server: FakeServer, agent: Agent) -> None:
    """Publish the forgeries and wait until the agent has refused (and counted) them."""
    before = agent.refusals.total
    for payload in forged_desired_states(server, agent.device_id):
        server.publish_raw(topics.device_topic(agent.device_id, "desired"), payload)
    wait_for(lambda: agent.refusals.total == before + 4, what="the four forged desired states to be refused")


def test_unsigned_desired_state_does_not_change_scheduling(server, make_agent, tmp_path: Path):
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    server.answer_fetches = False  # the download of v1 starts and stays in progress
    agent = make_agent(fetch_timeout_s=0.3)
    first = server.bundle(version=1, entry=GATED_INIT, config={"gate": str(gate), "entered": str(entered)})
    server.publish_desired(agent.device_id, 1, [first])
    wait_for(lambda: server.fetch_requests, what="the download of v1 to start")

    attack(server, agent)  # during the download: before the fix, this aborted it for good
    assert server.module_report(agent.device_id, "linear").target_version == 1
    server.answer_fetches = True
    wait_for(entered.exists, what="v1's download to complete and its load to start")

    second = server.bundle(version=2, seed=2)
    server.publish_desired(agent.device_id, 2, [second])  # queued behind v1's load
    attack(server, agent)  # with generation 2 queued: before the fix, this dropped it
    gate.touch()
    server.wait_running(agent.device_id, "linear", 2)

    assert agent.models == {"linear": 2}
    assert agent.reconciler.generation == agent.trust.last_generation == 2
    # 2**62 is out of range for a signed field: the signed one for another device is refused as malformed.
    assert agent.refusals.by_code == {"desired/bad_signature": 4, "desired/malformed_message": 2,
                                      "desired/wrong_device": 2}
    wait_for(lambda: sum(r.data.get("count", 0) for r in server.records("event")
                         if r.data.get("event") == "refused_messages") == 8,
             what="the eight refusals counted in the telemetry")


def test_unverified_desired_state_is_never_kept_and_a_new_root_fetches_the_retained_one_again(
        server, make_agent, tmp_path: Path):
    """A desired state signed by a key the device does not trust yet is refused, not held for later: when a
    rotation makes that key trusted, the agent asks the broker for the retained document again (so a forgery
    published in between cannot take the legitimate document's place)."""
    root_key, next_root_key, next_signing = new_signing_key(), new_signing_key(), new_signing_key()
    expires = utc_now() + timedelta(days=30)
    first_root = sign_root(make_root(version=1, expires=expires, root_keys=[root_key.public_key], root_threshold=1,
                                     signing_keys=[server.key.public_key]), [root_key])
    second_root = sign_root(make_root(version=2, expires=expires, root_keys=[next_root_key.public_key],
                                      root_threshold=1, signing_keys=[next_signing.public_key]),
                            [root_key, next_root_key])
    (tmp_path / "root.json").write_text(json.dumps(first_root))
    agent = make_agent(trusted_root=tmp_path / "root.json")  # its keys come from the root

    bundle = make_bundle(next_signing, version=1)
    server.add_bundle(bundle)
    server.publish_desired(agent.device_id, 1, [bundle], key=next_signing)  # retained, ahead of its root
    wait_for(lambda: (s := server.reported.get(agent.device_id)) and s.error and s.error["code"] == "bad_signature",
             what="the desired state signed by a not yet trusted key to be refused")
    for payload in forged_desired_states(server, agent.device_id):  # the last unverified document it saw
        server.publish_raw(topics.device_topic(agent.device_id, "desired"), payload)
    wait_for(lambda: agent.refusals.total == 5, what="the forgeries to be refused")

    server.publish_raw(topics.ROOT_TOPIC, messages.encode_root_chain([first_root, second_root]))
    server.wait_running(agent.device_id, "linear", 1)
    assert agent.root_keeper.version == 2 and server.reported[agent.device_id].error is None


def test_forged_desired_state_does_not_replace_the_reported_refusal(server, make_agent):
    """The first refusal since the last verified document stays the reported ``error`` (here: a real document
    that expired); forgeries after it are only counted, so they cannot hide why the real one was refused."""
    agent = make_agent()
    bundle = server.bundle(version=1)
    server.publish_desired(agent.device_id, 1, [bundle])
    server.wait_running(agent.device_id, "linear", 1)
    server.publish_desired(agent.device_id, 2, [bundle], expires="2001-01-01T00:00:00Z")
    wait_for(lambda: (s := server.reported.get(agent.device_id)) and s.error and s.error["code"] == "expired",
             what="the expired document to be refused")
    published = len(server.reported_history)
    attack(server, agent)
    time.sleep(0.5)  # a report published for the forgeries would have arrived by now
    assert server.reported[agent.device_id].error["code"] == "expired"
    assert agent.reconciler.doc_error["code"] == "expired"
    assert len(server.reported_history) == published  # nothing new to report
    assert [r for r in server.records("event") if r.data.get("event") == "desired_refused"
            and r.data.get("code") != "expired"] == []

    server.publish_desired(agent.device_id, 3, [bundle])  # verified: the refusal is cleared
    wait_for(lambda: server.reported[agent.device_id].error is None, what="the verified document to clear it")
    attack(server, agent)
    wait_for(lambda: (e := server.reported[agent.device_id].error) and e["code"] == "bad_signature",
             what="the next refusal to be reported")
