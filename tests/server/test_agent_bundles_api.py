"""``POST /api/bundles/agent``: agent bundles are built from wheels only, signed like module bundles."""

from __future__ import annotations

from fleet_protocol import bundle_file
from fleet_protocol.signing import PublicKey

from .builders import module_files, tar_gz

WHEEL = "edgefleet-0.2.0-py3-none-any.whl"


def build_agent(api, files: dict[str, bytes]):
    return api.post("/api/bundles/agent", files={"file": ("wheels.tar.gz", tar_gz(files))})


def test_agent_bundle_is_signed_and_verifies_like_a_module_bundle(api):
    response = build_agent(api, {WHEEL: b"agent wheel", "numpy-2.0-cp311-cp311-linux_x86_64.whl": b"numpy"})
    assert response.status_code == 201, response.text
    bundle = response.json()
    assert (bundle["module"], bundle["version"], bundle["model_ref"]) == ("edgefleet-agent", 1, None)
    keys = [PublicKey.from_hex(k["public_key"]) for k in api.get("/api/keys").json()["signing_keys"]]
    _, manifest, files = bundle_file.read_bundle(api.get(f"/api/bundles/{bundle['digest']}/file").content, keys)
    assert (manifest.kind, manifest.agent_version) == ("agent", "0.2.0")
    assert files[f"wheels/{WHEEL}"] == b"agent wheel"
    assert build_agent(api, {WHEEL.replace("0.2.0", "0.2.1"): b"next"}).json()["version"] == 2


def test_agent_upload_without_exactly_one_edgefleet_wheel_is_refused(api):
    response = build_agent(api, {"numpy-2.0-cp311-cp311-linux_x86_64.whl": b"numpy"})
    assert response.status_code == 400 and "exactly one edgefleet-*.whl" in response.text, response.text
    two = build_agent(api, {WHEEL: b"a", WHEEL.replace("0.2.0", "0.3.0"): b"b"})
    assert two.status_code == 400 and "not 2" in two.text, two.text
    assert api.get("/api/bundles", params={"module": "edgefleet-agent"}).json() == []


def test_agent_upload_with_anything_but_wheels_is_refused(api):
    response = build_agent(api, {WHEEL: b"agent", "install.sh": b"#!/bin/sh\nrm -rf /\n"})
    assert response.status_code == 400 and "only .whl files" in response.text, response.text


def test_module_cannot_take_the_agent_bundles_name(api):
    response = api.post("/api/bundles/from-module",
                        files={"file": ("m.tar.gz", tar_gz(module_files("edgefleet-agent")))})
    assert response.status_code == 400 and "reserved for agent bundles" in response.text, response.text
