"""An agent enrolled against a server whose broker is plain ``mqtt://`` (the embedded broker's default) connects:
the broker URL's scheme decides TLS, and the certificate enrollment wrote is presented only over ``mqtts://``."""

from __future__ import annotations

import logging

from tests.security.trust_fleet import DEVICE
from tests.support.net import wait_for


def test_enrolled_agent_on_a_plain_mqtt_broker_connects_without_its_certificate_and_says_so(trust_fleet, caplog):
    config = trust_fleet.agent_config
    assert config.broker_url.startswith("mqtt://") and config.tls_files is not None  # as enrollment wrote it
    with caplog.at_level(logging.WARNING, logger="edgefleet.agent.mqtt"):
        trust_fleet.start_agent()
    wait_for(lambda: trust_fleet.api.get(f"/api/devices/{DEVICE}").json()["status"] == "online", timeout=30,
             what="the enrolled agent to connect to the plain broker")
    assert any("mqtt:// (no TLS)" in r.getMessage() for r in caplog.records)
    version = trust_fleet.deploy(2.0)  # its key still opens the content keys the server wraps for it
    trust_fleet.wait_serving(version)
