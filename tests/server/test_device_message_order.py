"""A device's first messages may reach the server in any order across topics, and its own tags still count.

Mosquitto delivers one client's messages in the order they were sent, whatever their topics. A broker
cluster need not: NATS keeps each MQTT subscription of a persistent session in its own JetStream consumer,
so a device's ``reported`` state or a heartbeat can arrive before the ``status`` it sent first (seen in
tests/faults/test_broker_cluster_failover.py: deployments then missed devices whose tags were dropped).
"""

from __future__ import annotations

from fleet_protocol import topics
from fleet_protocol.messages import ModuleReport

from . import messages as msg


def test_device_tags_count_when_its_reported_state_arrives_before_its_first_status(fleet):
    fleet.handlers.handle(topics.device_topic("cam-1", "reported"), msg.reported("cam-1", [ModuleReport("x", "absent")]),
                          False)
    fleet.handlers.handle(topics.device_topic("cam-1", "status"), msg.status("cam-1", tags={"site": "lab"}), False)
    assert fleet.devices.get("cam-1")["tags"] == {"site": "lab"}


def test_server_tags_stay_the_truth_after_the_first_status(fleet):
    fleet.handlers.handle(topics.device_topic("cam-1", "status"), msg.status("cam-1", tags={"site": "lab"}), False)
    fleet.handlers.handle(topics.device_topic("cam-1", "status"), msg.status("cam-1", tags={"site": "moved"}), False)
    assert fleet.devices.get("cam-1")["tags"] == {"site": "lab"}
