"""A simulated device reports the messages it refuses as a real agent does: a ``refused_messages`` event with its
next heartbeat, stored by the real fleet server (Mosquitto, the agent's own reconciler and telemetry)."""

from __future__ import annotations

import paho.mqtt.client as mqtt

from edge_agent.clock import utc_now
from fleet_protocol import messages, topics
from fleet_protocol.messages import DesiredState
from fleet_protocol.signing import sign_envelope
from fleet_protocol.timestamps import to_iso
from fleet_server.keys import new_signing_key
from tests.simulator.test_fleet import make_fleet
from tests.support.net import wait_for

DEVICE = "sim-0"


def forged_desired_states() -> list[bytes]:
    """One unsigned desired state and one signed by a key the fleet does not trust."""
    signed = DesiredState(DEVICE, 2**40, to_iso(utc_now()), ()).to_dict()
    return [messages.encode({"signed": signed, "signatures": []}),
            messages.encode(sign_envelope(signed, new_signing_key()))]


def reported_refusals(api) -> dict[str, int]:
    rows = api.get("/api/telemetry", params={"device_id": DEVICE, "kind": "event", "limit": 1000})
    codes: dict[str, int] = {}
    for row in rows:
        if row["data"].get("event") == "refused_messages":
            for code, count in row["data"]["codes"].items():
                codes[code] = codes.get(code, 0) + count
    return codes


def test_simulated_devices_report_refused_messages_in_their_telemetry(server, api, mosquitto, tmp_path):
    fleet = make_fleet(server, tmp_path, 1)
    fleet.start()
    try:
        assert fleet.wait_connected(60) == 1
        vandal = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="vandal", protocol=mqtt.MQTTv311)
        vandal.connect(mosquitto.host, mosquitto.port)
        vandal.loop_start()
        try:
            for payload in forged_desired_states():
                vandal.publish(topics.device_topic(DEVICE, "desired"), payload, qos=1).wait_for_publish(10)
        finally:
            vandal.loop_stop()
            vandal.disconnect()
        wait_for(lambda: fleet.devices[DEVICE].reconciler.refusals.total == 2, timeout=30, what="the device to refuse both")
        wait_for(lambda: reported_refusals(api) == {"desired/bad_signature": 2}, timeout=30,
                 what="the refusals in the device's telemetry at the server")
    finally:
        fleet.stop()
