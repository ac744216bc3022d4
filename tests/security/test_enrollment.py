"""Device enrollment and revocation against the real server, connected over mutual TLS to a real Mosquitto."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.config import load_config
from fleet_protocol import topics
from fleet_protocol.errors import BadDataError
from edge_agent.identity import new_device_key_and_csr
from fleet_protocol.root import load_certificate
from fleet_protocol.timestamps import to_iso
from fleet_server.clock import utc_now
from fleet_server.enrollment import MAX_REQUEST_BYTES, EnrollmentRequest, parse_enrollment_request
from fleet_server.store import devices as device_store
from fleet_server.store import enrollments as enrollment_store
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.security.tls_mqtt import Identity
from simulators.devices import spawn_agent
from tests.support.net import free_port, wait_for


def enroll(fleet, token: str, device_id: str) -> httpx.Response:
    key_pem, csr_pem = new_device_key_and_csr(device_id)
    response = httpx.post(f"{fleet.server.url}/api/enroll", json={"token": token, "csr": csr_pem.decode()},
                          timeout=30)
    response.key_pem = key_pem  # the device's key, which the request never carried
    return response


def identity(tmp_path, device_id: str, response: httpx.Response) -> Identity:
    cert, key = tmp_path / f"{device_id}.crt", tmp_path / f"{device_id}.key"
    cert.write_text(response.json()["certificate_pem"])
    key.write_bytes(response.key_pem)
    return Identity(device_id, cert, key)


def test_server_connects_to_the_broker_over_mutual_tls(tls_fleet):
    assert httpx.get(f"{tls_fleet.server.url}/api/health").json()["broker"] == "connected"


def test_enrollment_returns_a_certificate_for_the_device_and_the_trust_anchors(tls_fleet):
    response = enroll(tls_fleet, tls_fleet.enrollment_token("cam-1", tags={"site": "berlin"}), "cam-1")
    assert response.status_code == 200, response.text
    body = response.json()
    cert = load_certificate(body["certificate_pem"].encode())
    assert cert.subject.rfc4514_string() == "CN=cam-1"
    assert timedelta(days=89) < cert.not_valid_after_utc - utc_now() <= timedelta(days=90)
    assert body["ca_certificate_pem"] == tls_fleet.broker.files.ca_cert.read_text()
    assert body["broker_url"].startswith("mqtts://")
    assert body["trusted_keys"] == [tls_fleet.server.signing_public_key_hex]
    assert "PRIVATE KEY" not in response.text
    with tls_fleet.api() as api:
        assert api.get("/api/devices/cam-1").json()["tags"] == {"site": "berlin"}


def test_enrolled_certificate_reaches_only_its_own_topics_over_mutual_tls(tls_fleet, tmp_path, connect):
    device = identity(tmp_path, "cam-1", enroll(tls_fleet, tls_fleet.enrollment_token("cam-1"), "cam-1"))
    probe = connect(tls_fleet.broker, device)
    probe.publish(topics.device_topic("cam-1", "status"), b"{}")


def test_two_agents_enrolled_on_one_host_with_their_own_options_both_run(tls_fleet, tmp_path):
    """--scoring-port, --profile, --cloud-url and --tags go into each agent.toml; the tags reach the server too."""
    devices = {"cam-1": (free_port(), "raspberry-pi-5", {"site": "berlin"}), "cam-2": (free_port(), "generic-cpu", {})}
    agents = []
    try:
        for device_id, (port, profile, operator_tags) in devices.items():
            config = tmp_path / device_id / "agent.toml"
            result = subprocess.run(
                [sys.executable, "-m", "edgefleet_cli.main", "agent", "enroll", "--server", tls_fleet.server.url,
                 "--token", tls_fleet.enrollment_token(device_id, tags=operator_tags), "--state-dir",
                 str(tmp_path / device_id / "state"), "--config", str(config), "--scoring-port", str(port),
                 "--profile", profile, "--cloud-url", tls_fleet.server.url, "--tags", "site=lab,rack=r7",
                 "--tags", f"name={device_id}"], capture_output=True, text=True, timeout=120)
            assert result.returncode == 0, result.stderr
            loaded = load_config(config)
            assert (loaded.scoring_port, loaded.profile, loaded.cloud_url) == (port, profile, tls_fleet.server.url)
            assert loaded.tags == {"site": "lab", "rack": "r7", "name": device_id}
            with tls_fleet.api() as api:  # tagged at enrollment, before the agent first connects
                assert api.get(f"/api/devices/{device_id}").json()["tags"] == {**loaded.tags, **operator_tags}
            agents.append(spawn_agent(config, tmp_path / device_id / "agent.log"))
        with tls_fleet.api() as api:
            for device_id, (port, _, operator_tags) in devices.items():
                wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5).status_code == 200,
                         what=f"{device_id} to serve on its own port {port}", timeout=60)
                wait_for(lambda: api.get(f"/api/devices/{device_id}").json()["status"] == "online",
                         what=f"{device_id} online")
                tags = api.get(f"/api/devices/{device_id}").json()["tags"]
                assert tags == {"site": "lab", "rack": "r7", "name": device_id, **operator_tags}  # the operator's win
    finally:
        for agent in agents:
            agent.terminate()
            agent.wait(timeout=15)


def test_enroll_option_typo_leaves_the_token_unused(tls_fleet, tmp_path):
    token = tls_fleet.enrollment_token("cam-1")
    result = subprocess.run([sys.executable, "-m", "edgefleet_cli.main", "agent", "enroll", "--server",
                             tls_fleet.server.url, "--token", token, "--state-dir", str(tmp_path / "state"),
                             "--profile", "raspbery-pi-5"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "did you mean 'raspberry-pi-5'" in result.stderr and "token is still good" in result.stderr
    assert enroll(tls_fleet, token, "cam-1").status_code == 200


def test_used_enrollment_token_is_refused(tls_fleet):
    token = tls_fleet.enrollment_token("cam-1")
    assert enroll(tls_fleet, token, "cam-1").status_code == 200
    again = enroll(tls_fleet, token, "cam-1")
    assert again.status_code == 401
    assert "already used" in again.json()["detail"]


def test_expired_enrollment_token_is_refused(tls_fleet):
    past = utc_now() - timedelta(hours=1)
    enrollment_store.add_enrollment(db=tls_fleet.server.fleet.db, token="expired-token", device_id="cam-1", tags={},
                                    created=to_iso(past - timedelta(days=1)), expires=to_iso(past))
    response = enroll(tls_fleet, "expired-token", "cam-1")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_unknown_enrollment_token_is_refused(tls_fleet):
    response = enroll(tls_fleet, "made-up", "cam-1")
    assert response.status_code == 401
    assert "unknown" in response.json()["detail"]


def test_csr_for_another_device_is_refused_and_keeps_the_token(tls_fleet):
    token = tls_fleet.enrollment_token("cam-1")
    wrong = enroll(tls_fleet, token, "cam-2")
    assert wrong.status_code == 400
    assert "cam-1" in wrong.json()["detail"]
    assert enroll(tls_fleet, token, "cam-1").status_code == 200


def test_viewer_token_cannot_create_enrollments(tls_fleet):
    with tls_fleet.api() as admin:
        viewer = admin.post("/api/tokens", json={"name": "dash", "role": "viewer"}).json()["token"]
    with tls_fleet.api(viewer) as api:
        assert api.post("/api/enrollments", json={"device_id": "cam-1"}).status_code == 403


def test_enrollment_is_audited_without_the_token(tls_fleet):
    token = tls_fleet.enrollment_token("cam-1")
    enroll(tls_fleet, token, "cam-1")
    with tls_fleet.api() as api:
        audit = api.get("/api/audit")
    actions = [(e["actor"], e["action"]) for e in audit.json()]
    assert ("admin", "POST /api/enrollments") in actions and ("enrollment:cam-1", "POST /api/enroll") in actions
    assert token not in audit.text


def test_revoked_device_is_refused_at_next_connect(tls_fleet, tmp_path, connect):
    device = identity(tmp_path, "cam-1", enroll(tls_fleet, tls_fleet.enrollment_token("cam-1"), "cam-1"))
    connect(tls_fleet.broker, device).close()
    reloads = tls_fleet.broker.reloads()
    with tls_fleet.api() as api:
        result = api.post("/api/devices/cam-1/revoke").json()
        assert result["broker_reloaded"] is True
        assert api.get("/api/devices/cam-1").json()["revoked"]
    wait_for(lambda: tls_fleet.broker.reloads() > reloads, what="Mosquitto to reload its CRL")
    probe = tls_fleet.broker.probe(device)
    try:
        assert probe.connect() != "connected"
    finally:
        probe.close()


def test_revoked_device_is_given_no_modules(tls_fleet):
    enroll(tls_fleet, tls_fleet.enrollment_token("cam-1"), "cam-1")
    archive = tar_gz(module_files("scaler", model=tiny_onnx(2.0)))
    with tls_fleet.api() as api:
        bundle = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", archive)}).json()
        assert api.post("/api/deployments", json={"module": "scaler", "version": bundle["version"],
                                                  "devices": ["cam-1"]}).status_code == 201
        assert [m["name"] for m in desired_modules(tls_fleet, "cam-1")] == ["scaler"]
        api.post("/api/devices/cam-1/revoke")
    assert desired_modules(tls_fleet, "cam-1") == []


def desired_modules(fleet, device_id: str) -> list[dict]:
    device = device_store.get_device(db=fleet.server.fleet.db, device_id=device_id)
    return device["desired_envelope"]["signed"]["modules"]


def test_revoked_device_returns_only_with_a_new_enrollment_token(tls_fleet, tmp_path, connect):
    first = enroll(tls_fleet, tls_fleet.enrollment_token("cam-1"), "cam-1")
    with tls_fleet.api() as api:
        api.post("/api/devices/cam-1/revoke")
    second = enroll(tls_fleet, tls_fleet.enrollment_token("cam-1"), "cam-1")
    assert second.status_code == 200
    connect(tls_fleet.broker, identity(tmp_path, "cam-1", second))
    with tls_fleet.api() as api:
        assert api.get("/api/devices/cam-1").json()["revoked"] is None
    assert first.json()["certificate_pem"] != second.json()["certificate_pem"]


# --- the request body parser -------------------------------------------------------------------

_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=MAX_REQUEST_BYTES + 10) | st.builds(lambda v: json.dumps(v).encode(), _json_values))
def test_enrollment_request_parser_accepts_only_well_formed_bodies(raw):
    try:
        parsed = parse_enrollment_request(raw)
    except BadDataError:
        return
    assert isinstance(parsed, EnrollmentRequest) and parsed.token and b"CERTIFICATE REQUEST" in parsed.csr_pem


@settings(max_examples=100, deadline=None)
@given(token=st.text(min_size=1, max_size=256), extra=st.dictionaries(st.sampled_from(["x", "role", "device_id"]),
                                                                      st.integers(), max_size=2))
def test_enrollment_request_parser_round_trips_and_refuses_extra_fields(token, extra):
    csr = new_device_key_and_csr("cam-1")[1].decode()
    raw = json.dumps({"token": token, "csr": csr, **extra}).encode()
    if extra:
        try:
            parse_enrollment_request(raw)
        except BadDataError as exc:
            assert "unknown field" in str(exc)
        else:
            raise AssertionError("extra fields were accepted")
    else:
        assert parse_enrollment_request(raw) == EnrollmentRequest(token, csr.encode())


def test_broker_gets_the_new_crl_when_the_ca_reissues_it(tls_fleet):
    fleet = tls_fleet.server.fleet
    assert fleet.revocation.publish_crl() is False  # unchanged: the broker is left alone
    (fleet.config.data_dir / "ca" / "crl.pem").unlink()  # as past half its life: the CA issues a new one
    reloads = tls_fleet.broker.reloads()
    assert fleet.revocation.publish_crl() is True
    wait_for(lambda: tls_fleet.broker.reloads() > reloads, what="Mosquitto to reload its CRL")
    assert tls_fleet.broker.files.crl.read_bytes() == fleet.ca.crl_pem()
