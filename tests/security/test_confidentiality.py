"""A device reads only the bundles in its own desired state.

Real fleet server, real Mosquitto run with the production TLS config and ACL, devices enrolled through the
agent's own enrollment. The ACL lets every device read every bundle's chunk topic (the broker fans one
publish out to all listeners), so what keeps a model from a device it is not assigned to is (1) the server
refusing fetch requests for bundles outside the asker's desired state and (2) chunks sealed with a per-bundle
key that reaches only assigned devices, wrapped for their certificate keys.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import update

from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, load_config
from edge_agent.enroll import enroll
from edge_agent.identity import new_device_key_and_csr
from fleet_protocol import bundle_crypto, messages, renewal, topics
from fleet_protocol.bundle_crypto import ContentKeyError
from fleet_protocol.signing import sign_envelope
from fleet_server.renewal import handle_renew
from fleet_server.store import devices as device_store
from fleet_server.store.schema import device_certificates
from tests.security.tls_mqtt import Identity
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.net import wait_for
from tests.support.sealed import open_chunks

MODULE = "scaler"


def enrolled(tls_fleet, tmp_path, device_id: str) -> AgentConfig:
    path = enroll(server_url=tls_fleet.server.url, token=tls_fleet.enrollment_token(device_id),
                  state_dir=tmp_path / device_id, config_out=tmp_path / f"{device_id}.toml")
    return dataclasses.replace(load_config(path), scoring_port=0, heartbeat_interval_s=0.3,
                               telemetry_flush_interval_s=0.1, keepalive_s=5)


def identity(config: AgentConfig) -> Identity:
    return Identity(config.device_id, config.tls_cert, config.tls_key)


def build(tls_fleet, weights: bytes, scale: float) -> dict:
    """A signed bundle of the module with ``weights`` inside; its detail (digest, version, signed manifest)."""
    files = {**module_files(files=["model.onnx", "main.py", "sample.json", "weights.bin"], model=tiny_onnx(scale)),
             "weights.bin": weights}
    with tls_fleet.api() as api:
        created = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))})
        assert created.status_code == 201, created.text
        return api.get(f"/api/bundles/{created.json()['digest']}").json()


def chunk_digests(bundle: dict) -> list[str]:
    return list(dict.fromkeys(c["sha256"] for f in bundle["manifest"]["signed"]["files"] for c in f["chunks"]))


def leaked(plaintext: bytes, received: list[bytes]) -> list[int]:
    """Offsets of 32-byte samples of ``plaintext`` (one every 2 KB) found anywhere in ``received``."""
    seen = b"".join(received)
    return [i for i in range(0, len(plaintext) - 32, 2048) if plaintext[i:i + 32] in seen]


def test_fetch_for_a_bundle_not_in_the_devices_desired_state_is_refused_and_answers_nothing(
        tls_fleet, tmp_path, connect):
    intruder = enrolled(tls_fleet, tmp_path, "cam-b")
    undeployed = build(tls_fleet, os.urandom(300_000), 2.0)
    probe = connect(tls_fleet.broker, identity(intruder))
    probe.subscribe(topics.bundle_chunks_topic(undeployed["digest"]))
    request = messages.FetchRequest("cam-b", undeployed["digest"], tuple(chunk_digests(undeployed)[:16]))
    probe.publish(topics.device_topic("cam-b", "fetch"), messages.encode(request.to_dict()))  # its own topic: allowed
    handlers = tls_fleet.server.fleet.handlers
    wait_for(lambda: handlers.malformed.by_kind().get("fetch_refused") == 1, what="the server to refuse the fetch")
    time.sleep(1.0)  # far longer than a chunk takes to go out: anything published would have arrived
    assert probe.messages == [] and handlers.chunk_sender.publishes == 0


def test_device_listening_on_another_devices_bundle_gets_only_ciphertext_it_cannot_open(
        tls_fleet, tmp_path, connect):
    owner, intruder = enrolled(tls_fleet, tmp_path, "cam-a"), enrolled(tls_fleet, tmp_path, "cam-b")
    weights = os.urandom(400_000)
    bundle = build(tls_fleet, weights, 3.0)
    chunks_topic = topics.bundle_chunks_topic(bundle["digest"])
    probe = connect(tls_fleet.broker, identity(intruder))
    probe.subscribe(chunks_topic)  # the ACL allows it: the chunk topic is shared
    agent = Agent(owner)
    agent.start()
    try:
        with tls_fleet.api() as api:
            api.post("/api/deployments", json={"module": MODULE, "version": bundle["version"],
                                               "devices": ["cam-a"]}).raise_for_status()
        wait_for(lambda: agent.models.get(MODULE) == bundle["version"], timeout=60,
                 what="the assigned device to install and serve the bundle")
        answer = agent.infer(MODULE, {"x": np.ones((1, 4), dtype=np.float32)})
        assert answer.model_version == bundle["version"]
    finally:
        agent.stop()

    probe.wait_for_message(chunks_topic)
    received = [payload for topic, payload in probe.messages if topic == chunks_topic]
    assert received and all(p[:4] == bundle_crypto.CHUNK_MAGIC for p in received)
    assert leaked(weights, received) == [], "plaintext model bytes reached a device the bundle is not assigned to"

    desired = device_store.get_device(db=tls_fleet.server.fleet.db, device_id="cam-a")["desired_envelope"]
    content_key = desired["signed"]["modules"][0]["content_key"]
    assert content_key["alg"] == bundle_crypto.WRAP_ALG, "an enrolled device's key travels wrapped"
    intruder_key = load_pem_private_key(intruder.tls_key.read_bytes(), password=None)
    for claimed in ("cam-a", "cam-b"):  # even a copy of the owner's desired state does not open for the intruder
        try:
            bundle_crypto.open_content_key(content_key, device_id=claimed, bundle_digest=bundle["digest"],
                                           private_key=intruder_key)
            raise AssertionError("the intruder opened another device's content key")
        except ContentKeyError as refused:
            assert refused.code == "content_key_not_for_device"
    opened = open_chunks(received, content_key, device_id="cam-a", bundle_digest=bundle["digest"],
                         private_key=load_pem_private_key(owner.tls_key.read_bytes(), password=None))
    assert leaked(weights, list(opened.values())), "what the intruder received is the bundle itself, sealed"


def test_content_key_that_does_not_open_on_the_device_is_refused_with_a_clear_code_and_nothing_fetched(
        tls_fleet, tmp_path):
    owner, other = enrolled(tls_fleet, tmp_path, "cam-a"), enrolled(tls_fleet, tmp_path, "cam-b")
    bundle = build(tls_fleet, os.urandom(100_000), 4.0)
    agent = Agent(owner)
    agent.start()
    agent.fetcher.key_file = other.tls_key  # the key it holds is not the one its content key was wrapped for
    try:
        with tls_fleet.api() as api:
            api.post("/api/deployments", json={"module": MODULE, "version": bundle["version"],
                                               "devices": ["cam-a"]}).raise_for_status()
            module = wait_for(lambda: next((m for m in api.get("/api/devices/cam-a").json()["modules"]
                                            if m["name"] == MODULE and m.get("error")), None), timeout=60,
                              what="the device to report the refused content key")
            assert module["state"] == "failed" and module["error"]["code"] == "content_key_not_for_device"
            key = tls_fleet.server.fleet.desired.content_keys.bundle_key(bundle["digest"]).hex()
            for route in ("/api/devices/cam-a", f"/api/bundles/{bundle['digest']}", "/api/deployments"):
                assert key not in api.get(route).text, f"{route} shows the bundle's content key"
        assert MODULE not in agent.models
        assert tls_fleet.server.fleet.handlers.chunk_sender.publishes == 0
    finally:
        agent.stop()


def test_a_renewed_certificate_gets_the_content_keys_wrapped_for_the_new_key_and_the_old_one(tls_fleet, tmp_path):
    owner = enrolled(tls_fleet, tmp_path, "cam-a")
    bundle = build(tls_fleet, os.urandom(50_000), 5.0)
    with tls_fleet.api() as api:
        api.post("/api/deployments", json={"module": MODULE, "version": bundle["version"],
                                           "devices": ["cam-a"]}).raise_for_status()
    fleet = tls_fleet.server.fleet
    new_key_pem, csr_pem = new_device_key_and_csr("cam-a")
    handle_renew(fleet, "cam-a", renewal.encode_renew_request(csr_pem))  # what the broker delivers from the device
    content_key = device_store.get_device(db=fleet.db, device_id="cam-a")["desired_envelope"]["signed"][
        "modules"][0]["content_key"]
    for key_pem in (owner.tls_key.read_bytes(), new_key_pem):  # before and after the device switches keys
        private_key = load_pem_private_key(key_pem, password=None)
        assert bundle_crypto.open_content_key(content_key, device_id="cam-a", bundle_digest=bundle["digest"],
                                              private_key=private_key) == \
            fleet.desired.content_keys.bundle_key(bundle["digest"])


def test_a_stored_desired_state_without_content_keys_is_reissued_with_them(tls_fleet, tmp_path):
    enrolled(tls_fleet, tmp_path, "cam-a")
    bundle = build(tls_fleet, os.urandom(50_000), 6.0)
    with tls_fleet.api() as api:
        api.post("/api/deployments", json={"module": MODULE, "version": bundle["version"],
                                           "devices": ["cam-a"]}).raise_for_status()
    fleet = tls_fleet.server.fleet
    device = device_store.get_device(db=fleet.db, device_id="cam-a")
    old = device["desired_envelope"]["signed"]  # as a server from before content keys wrote it: fresh, no keys
    for module in old["modules"]:
        del module["content_key"]
    device_store.set_desired(db=fleet.db, device_id="cam-a", generation=old["generation"], key=device["desired_key"],
                             envelope=sign_envelope(old, fleet.signing_key))
    assert fleet.desired.refresh() == ["cam-a"]  # not yet due by its expiry, re-issued for its missing keys
    again = device_store.get_device(db=fleet.db, device_id="cam-a")["desired_envelope"]["signed"]
    assert again["generation"] == old["generation"] + 1
    assert again["modules"][0]["content_key"]["alg"] == bundle_crypto.WRAP_ALG


def test_an_enrolled_device_whose_certificate_key_the_server_lacks_never_gets_a_plain_content_key(
        tls_fleet, tmp_path):
    """Certificates recorded before the server kept their keys (``public_key`` NULL after the upgrade): the device
    is enrolled, so no bundle key goes to it in the clear; a new bundle is held back (its document keeps what it
    had) with ``content_key_unavailable`` per device until its certificate is renewed."""
    enrolled(tls_fleet, tmp_path, "cam-a")
    fleet = tls_fleet.server.fleet
    old = build(tls_fleet, os.urandom(50_000), 7.0)
    with tls_fleet.api() as api:
        api.post("/api/deployments", json={"module": MODULE, "version": old["version"],
                                           "devices": ["cam-a"]}).raise_for_status()
    with fleet.db.transaction() as tx:  # as the migration leaves a certificate row from before the upgrade
        tx.execute(update(device_certificates).where(device_certificates.c.device_id == "cam-a")
                   .values(public_key=None))
    new = build(tls_fleet, os.urandom(50_000), 8.0)
    with tls_fleet.api() as api:
        api.post("/api/deployments", json={"module": MODULE, "version": new["version"],
                                           "devices": ["cam-a"]}).raise_for_status()
        explained = api.get("/api/devices/cam-a/explain").json()
    fleet.desired.refresh()
    fleet.desired.rotate()  # every re-issue path too
    modules = device_store.get_device(db=fleet.db, device_id="cam-a")["desired_envelope"]["signed"]["modules"]
    assert [(m["bundle_digest"], m["content_key"]["alg"]) for m in modules] == [
        (old["digest"], bundle_crypto.WRAP_ALG)]  # the new bundle held back; nothing in the clear
    assert explained["content_key_error"]["code"] == "content_key_unavailable"
    assert "renew the device's certificate" in explained["content_key_error"]["message"]

    new_key_pem, csr_pem = new_device_key_and_csr("cam-a")
    handle_renew(fleet, "cam-a", renewal.encode_renew_request(csr_pem))  # the renewed certificate has its key
    modules = device_store.get_device(db=fleet.db, device_id="cam-a")["desired_envelope"]["signed"]["modules"]
    assert [(m["bundle_digest"], m["content_key"]["alg"]) for m in modules] == [(new["digest"], bundle_crypto.WRAP_ALG)]
    with tls_fleet.api() as api:
        assert api.get("/api/devices/cam-a/explain").json()["content_key_error"] is None
