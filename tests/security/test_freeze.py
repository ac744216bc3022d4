"""Freeze: desired state expires; the server re-issues it in time, and a device that stops getting fresh ones
reports itself stale while it keeps serving what it has (real server thread, broker and enrolled agent)."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from fleet_protocol import messages, topics
from fleet_protocol.timestamps import from_iso, to_iso
from fleet_server.keys import new_signing_key
from fleet_server.runner import ServerThread
from tests.security.trust_fleet import DEVICE, MODULE, TrustFleet
from tests.support.fleet import ADMIN_TOKEN
from tests.support.mosquitto import start_mosquitto
from tests.support.net import wait_for

TTL_S = 4.0  # the server re-issues with half of it left, every quarter of it


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_ADMIN_TOKEN", ADMIN_TOKEN)
    broker = start_mosquitto(tmp_path / "mosquitto")
    fleet = TrustFleet(tmp_path, broker, desired_ttl_s=TTL_S)
    yield fleet
    fleet.close()
    broker.stop()


def test_desired_state_carries_an_expiry_and_the_server_reissues_it_under_a_newer_generation(fleet):
    fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    first = fleet.stored_desired()
    assert 0 < (from_iso(first["expires"]) - from_iso(first["issued"])).total_seconds() == TTL_S
    wait_for(lambda: fleet.stored_desired()["generation"] > first["generation"], what="the server to re-issue")
    again = fleet.stored_desired()
    assert again["modules"] == first["modules"] and again["expires"] > first["expires"]
    wait_for(lambda: fleet.reported().get("generation", 0) > first["generation"],
             what="the device to accept the re-issued desired state")


def test_device_reports_stale_when_the_server_stops_refreshing_and_keeps_serving(fleet):
    fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    fleet.fleet.desired.stop()  # the server publishes nothing new from here on
    wait_for(lambda: fleet.reported().get("stale") is True, timeout=30, what="the device to report stale")
    assert fleet.agent.models == {MODULE: 1} and fleet.predict() == 1
    fleet.fleet.desired.refresh()  # one fresh desired state
    wait_for(lambda: "stale" not in fleet.reported(), timeout=30, what="a fresh desired state to clear stale")
    assert fleet.predict() == 1


def test_unverified_desired_state_never_clears_stale(fleet):
    """A forged fresh-looking desired state (a later expiry under the next generation) is refused and counted; the
    device stays stale until the server signs a fresh one."""
    agent = fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    fleet.fleet.desired.stop()
    wait_for(lambda: fleet.reported().get("stale") is True, timeout=30, what="the device to report stale")
    forged = copy.deepcopy(fleet.stored_desired())
    forged["generation"] += 1
    forged["expires"] = to_iso(from_iso(forged["expires"]) + timedelta(days=365))
    fleet.publish_desired(forged, new_signing_key())
    fleet.publish(topics.device_topic(DEVICE, "desired"), messages.encode({"signed": forged, "signatures": []}))
    wait_for(lambda: agent.refusals.by_code.get("desired/bad_signature") == 2, what="the forgeries to be refused")
    assert agent.freshness.stale and fleet.reported().get("stale") is True
    fleet.fleet.desired.refresh()
    wait_for(lambda: "stale" not in fleet.reported(), timeout=30, what="a fresh signed desired state to clear stale")


def test_server_down_past_the_expiry_leaves_the_device_stale_until_it_is_back(fleet):
    fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    fleet.server.stop()
    wait_for(lambda: fleet.agent.reported_state().stale, timeout=30, what="the device to go stale")
    assert fleet.predict() == 1
    fleet.stop_agent()
    agent = fleet.start_agent()  # restarted while nothing fresh exists: stale from the start, serving
    assert agent.reported_state().stale and fleet.predict() == 1
    fleet.server = ServerThread(fleet.config).start()  # re-issues the expired states as it connects
    wait_for(lambda: not agent.reported_state().stale, timeout=30, what="the restarted server to clear stale")
    wait_for(lambda: "stale" not in fleet.reported(), what="the server to see the device fresh")
