"""Key rotation end to end: `edgefleet keys rotate` on the real server, the root chain over a real broker, and an
enrolled agent that moves its root of trust forward and refuses the rotated-out key from then on."""

from __future__ import annotations

import copy
import json
import stat
from datetime import timedelta

from fleet_protocol.root import make_root, sign_root
from fleet_protocol.signing import sign_envelope
from fleet_server.clock import utc_now
from fleet_server.keys import KeyFiles, KeyRing, signing_key_path
from fleet_server.keys import new_signing_key
from tests.security.trust_fleet import MODULE, TrustFleet
from tests.support.fleet import run_cli
from tests.support.net import wait_for


def rotate(fleet: TrustFleet) -> dict:
    """`edgefleet keys rotate`, then wait until the device holds the new root and runs its re-signed state."""
    rotated = json.loads(run_cli("keys", "rotate", "--json", server=fleet.server.url).stdout)
    wait_for(lambda: fleet.agent.root_keeper.version == rotated["version"], what="the device to hold the new root")
    generation = fleet.stored_desired()["generation"]
    wait_for(lambda: fleet.reported().get("generation") == generation and fleet.reported().get("error") is None,
             what="the device to run the desired state re-signed with the new key")
    return rotated


def forged_update(fleet: TrustFleet, bundle: dict) -> dict:
    """The device's current desired state moved to ``bundle``, under the next generation (unsigned)."""
    signed = copy.deepcopy(fleet.stored_desired())
    signed["generation"] += 1
    signed["modules"] = [{"name": MODULE, "version": bundle["version"], "bundle_digest": bundle["digest"],
                          "manifest": bundle["manifest"]}]
    return signed


def test_bundle_signed_by_rotated_out_key_is_refused(trust_fleet):
    fleet = trust_fleet
    fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    old_key = fleet.signing_key()
    rotated = rotate(fleet)
    assert rotated["version"] == 2 and rotated["signing_keyids"] != [old_key.public_key.keyid]
    new_key = fleet.signing_key()

    bundle = fleet.bundle(3.0)
    v2 = bundle["version"]
    # A desired state signed with the old key: refused as a whole.
    fleet.publish_desired(forged_update(fleet, bundle), old_key)
    wait_for(lambda: (fleet.reported().get("error") or {}).get("code") == "bad_signature",
             what="the device to report the desired state signed by the old key")
    assert "untrusted key" in fleet.reported()["error"]["message"]
    assert fleet.predict() == 1 and fleet.agent.models == {MODULE: 1}

    # A bundle whose manifest the old key signed, in a desired state the new key signed: the install is refused.
    signed = forged_update(fleet, bundle)
    signed["modules"][0]["manifest"] = sign_envelope(signed["modules"][0]["manifest"]["signed"], old_key)
    fleet.publish_desired(signed, new_key)

    def module_error() -> dict | None:
        modules = {m["name"]: m for m in fleet.reported().get("modules", [])}
        return (modules.get(MODULE) or {}).get("error")

    wait_for(lambda: (module_error() or {}).get("code") == "bad_signature",
             what="the device to refuse the bundle signed by the old key")
    assert fleet.predict() == 1 and fleet.agent.models == {MODULE: 1}

    # A deployment the server signs now (with the new key) installs.
    fleet.api.post("/api/deployments", json={"module": MODULE, "version": v2, "devices": [fleet.agent.device_id]}
                   ).raise_for_status()
    fleet.wait_serving(v2)
    assert fleet.predict() == v2
    wait_for(lambda: module_error() is None and fleet.reported().get("error") is None,
             what="the device to report the new version without errors")


def test_root_not_signed_by_the_root_key_threshold_is_refused(trust_fleet):
    fleet = trust_fleet
    fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    attacker = new_signing_key()
    forged = sign_root(make_root(version=2, expires=utc_now() + timedelta(days=30), root_keys=[attacker.public_key],
                                 root_threshold=1, signing_keys=[attacker.public_key]), [attacker])
    fleet.publish_roots([fleet.fleet.keys.root, forged])
    wait_for(lambda: (fleet.reported().get("root_error") or {}).get("code") == "bad_signature",
             what="the device to report the forged root")
    assert fleet.reported()["root_version"] == 1
    fleet.publish_desired(forged_update(fleet, fleet.bundle(3.0)), attacker)  # what the forged root would let in
    wait_for(lambda: (fleet.reported().get("error") or {}).get("code") == "bad_signature",
             what="the device to refuse a desired state signed by the forged root's key")
    assert fleet.predict() == 1


def test_root_with_a_lower_version_is_refused(trust_fleet):
    fleet = trust_fleet
    fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    rotate(fleet)
    fleet.publish_roots(fleet.fleet.keys.roots[:1])  # a replay of the chain as it was before the rotation
    wait_for(lambda: (fleet.reported().get("root_error") or {}).get("code") == "rollback",
             what="the device to refuse the older root")
    assert fleet.reported()["root_version"] == 2
    assert fleet.agent.trust.keys.keys() == {fleet.signing_key().public_key.keyid}
    assert fleet.predict() == 1


def test_device_offline_through_two_rotations_walks_the_root_chain_and_keeps_it_after_a_restart(trust_fleet):
    fleet = trust_fleet
    fleet.start_agent()
    fleet.wait_serving(fleet.deploy(2.0))
    fleet.stop_agent()
    for _ in range(2):
        run_cli("keys", "rotate", server=fleet.server.url)
    v2 = fleet.deploy(3.0)
    fleet.start_agent()
    fleet.wait_serving(v2)  # signed with the key of root 3: reachable only through roots 2 and 3
    assert fleet.agent.root_keeper.version == 3
    fleet.stop_agent()
    agent = fleet.start_agent()  # the persisted root, not the enrollment one, is trusted after a restart
    assert agent.root_keeper.version == 3
    assert agent.trust.keys.keys() == {fleet.signing_key().public_key.keyid}


def test_keys_show_and_rotate_need_an_admin_token_and_rotation_is_audited(trust_fleet):
    fleet = trust_fleet
    shown = json.loads(run_cli("keys", "show", "--json", server=fleet.server.url).stdout)
    assert shown["version"] == 1 and shown["chain_length"] == 1
    assert "PRIVATE" not in json.dumps(shown)
    operator = fleet.api.post("/api/tokens", json={"name": "ops", "role": "operator"}).json()["token"]
    refused = fleet.api.post("/api/keys/rotate", headers={"Authorization": f"Bearer {operator}"})
    assert refused.status_code == 403
    assert fleet.api.post("/api/keys/rotate").json()["version"] == 2
    actions = [(e["actor"], e["action"], e["status"]) for e in fleet.api.get("/api/audit").json()]
    assert ("admin", "POST /api/keys/rotate", 200) in actions
    assert ("ops", "POST /api/keys/rotate", 403) in actions


def test_root_and_signing_keys_are_private_and_a_crash_mid_rotation_is_finished_at_restart(tmp_path):
    ring = KeyRing(KeyFiles(tmp_path))
    keys_dir = tmp_path / "keys"
    for path in [signing_key_path(tmp_path), *keys_dir.glob("root-*.pem")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    ring.rotate()
    new_key = signing_key_path(tmp_path).read_bytes()
    # Crash after root 2 was written but before its key replaced signing.pem: the restart finishes the switch.
    (keys_dir / "signing.next.pem").write_bytes(new_key)
    signing_key_path(tmp_path).write_bytes(new_signing_key().to_pem())
    again = KeyRing(KeyFiles(tmp_path))
    assert again.version == 2 and signing_key_path(tmp_path).read_bytes() == new_key
    assert not (keys_dir / "signing.next.pem").exists()
    # Crash before the root was written: the half-made key is dropped, the current one stays.
    (keys_dir / "signing.next.pem").write_bytes(new_signing_key().to_pem())
    assert KeyRing(KeyFiles(tmp_path)).signing_key.public_key == again.signing_key.public_key
    assert not (keys_dir / "signing.next.pem").exists()
