"""Replicas on shared subscriptions handle one device's messages out of order: nothing goes back in time.

Pure store and handler logic on one real SQLite store (no broker): a second
:class:`DesiredStates` on the same database stands in for another replica.
"""

from __future__ import annotations

from datetime import timedelta

from fleet_protocol import topics
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from fleet_server.desired import DesiredStates
from fleet_server.store import deployments as deployment_store
from fleet_server.store import devices as device_store

from . import messages as msg
from .test_devices_and_deployments import build, deploy, feed


def _device(fleet, device_id: str = "dev-1") -> dict:
    return device_store.get_device(db=fleet.db, device_id=device_id)


def test_last_seen_never_moves_back(fleet):
    feed(fleet, "dev-1", "telemetry", msg.telemetry("dev-1", [1]))
    feed(fleet, "dev-1", "status", msg.status("dev-1"))
    seen = _device(fleet)["last_seen"]
    an_hour_ago = to_iso(utc_now() - timedelta(hours=1))
    device_store.touch(db=fleet.db, device_id="dev-1", seen=an_hour_ago)  # a replica whose clock is behind
    old_status = msg.messages.encode(msg.DeviceStatus("dev-1", "online", ts=an_hour_ago).to_dict())
    fleet.handlers.handle(topics.device_topic("dev-1", "status"), old_status, True)  # retained: seen = its ts
    assert _device(fleet)["last_seen"] == seen


def _reported(device_id: str, generation: int, ts: str) -> bytes:
    return msg.messages.encode(msg.ReportedState(device_id, generation, ts, (), agent_version="0.1.0",
                                                 profile="generic-cpu").to_dict())


def test_an_older_reported_state_does_not_replace_a_newer_one(fleet):
    now = utc_now()
    feed(fleet, "dev-1", "reported", _reported("dev-1", 2, to_iso(now)))
    feed(fleet, "dev-1", "reported", _reported("dev-1", 1, to_iso(now - timedelta(seconds=5))))  # handled late
    assert _device(fleet)["reported"]["generation"] == 2


def test_a_reported_state_with_a_lower_generation_but_a_later_time_is_stored(fleet):
    """A wiped device starts again at generation 0: its reports are newer by time and must be heard."""
    now = utc_now()
    feed(fleet, "dev-1", "reported", _reported("dev-1", 7, to_iso(now - timedelta(minutes=5))))
    feed(fleet, "dev-1", "reported", _reported("dev-1", 0, to_iso(now)))
    assert _device(fleet)["reported"]["generation"] == 0


def test_two_replicas_never_store_two_documents_under_one_generation(fleet, api):
    published: list[tuple[str, bytes]] = []
    other = DesiredStates(db=fleet.db, signing_key=lambda: fleet.signing_key, leadership=fleet.leadership,
                          publish=lambda topic, payload, **kw: published.append((topic, payload)) or True)
    feed(fleet, "dev-1", "status", msg.status("dev-1"))
    seen_by_other = _device(fleet)  # the other replica read the device (no desired state yet) ...
    bundle = build(api)
    deploy(api, module="scaler", version=bundle["version"], devices=["dev-1"])  # ... this one stored generation 1
    stored = _device(fleet)["desired_envelope"]
    assert stored["signed"]["generation"] == 1
    changed = other._update(seen_by_other, deployment_store.list_deployments(db=fleet.db))
    assert (changed, published) == (False, [])  # it re-read the device: the stored document is already right
    assert _device(fleet)["desired_envelope"] == stored
