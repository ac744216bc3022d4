"""Item 5: a Docker build context that serves a signed bundle; its entry point run directly (no engine here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from benchmarks.models import random_forest_onnx
from fleet_server.container import BASE_IMAGE, EngineUnavailable, build_image, write_build_context
from fleet_server.keys import new_signing_key
from tests.support.net import free_port, wait_port

from .conftest import register

EDGEFLEET = str(Path(sys.executable).with_name("edgefleet"))


@pytest.fixture
def signed_bundle(api) -> tuple[bytes, str]:
    data, _ = random_forest_onnx(trees=5)
    register(api, "forest", data)
    bundle = api.post("/api/bundles/from-model", json={"model": "forest"}).json()
    key = api.get("/api/keys").json()["signing_keys"][0]["public_key"]
    return api.get(f"/api/bundles/{bundle['digest']}/file").content, key


def test_build_context_holds_dockerfile_bundle_and_entrypoint(tmp_path, signed_bundle):
    bundle, key = signed_bundle
    context = write_build_context(tmp_path / "ctx", bundle=bundle, key_hex=key)
    assert sorted(p.name for p in context.iterdir()) == ["Dockerfile", "bundle.efb", "entrypoint.sh"]
    assert (context / "bundle.efb").read_bytes() == bundle
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.startswith(f"FROM {BASE_IMAGE}\n")
    assert "pip install --no-cache-dir 'edgefleet[agent]'" in dockerfile
    assert f"EDGEFLEET_BUNDLE_KEY={key}" in dockerfile and 'ENTRYPOINT ["/bin/sh", "/app/entrypoint.sh"]' in dockerfile
    assert "USER edgefleet" in dockerfile
    assert "agent serve-bundle" in (context / "entrypoint.sh").read_text()


def test_build_context_can_install_edgefleet_from_a_wheel(tmp_path, signed_bundle):
    wheel = tmp_path / "edgefleet-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel")
    context = write_build_context(tmp_path / "ctx", bundle=signed_bundle[0], key_hex=signed_bundle[1], wheel=wheel)
    dockerfile = (context / "Dockerfile").read_text()
    assert f"COPY {wheel.name} /tmp/{wheel.name}" in dockerfile
    assert f"'/tmp/{wheel.name}[agent]'" in dockerfile


def run_entrypoint(context: Path, tmp_path: Path, key: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "EDGEFLEET": EDGEFLEET, "EDGEFLEET_BUNDLE_KEY": key, "EDGEFLEET_PORT": str(port),
           "EDGEFLEET_HOST": "127.0.0.1", "EDGEFLEET_STATE_DIR": str(tmp_path / "state")}
    return subprocess.Popen(["/bin/sh", str(context / "entrypoint.sh")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_entrypoint_verifies_installs_and_serves_the_bundle(tmp_path, signed_bundle):
    bundle, key = signed_bundle
    context = write_build_context(tmp_path / "ctx", bundle=bundle, key_hex=key)
    port = free_port()
    process = run_entrypoint(context, tmp_path, key, port)
    try:
        wait_port(port, timeout=60)
        response = httpx.post(f"http://127.0.0.1:{port}/v2/models/forest/infer", json={"inputs": [
            {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}, timeout=30)
        assert response.status_code == 200, response.text
        assert {o["name"] for o in response.json()["outputs"]} >= {"label"}
        assert (tmp_path / "state" / "modules" / "forest" / "active.json").is_file()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    assert process.returncode == 0


def test_entrypoint_refuses_a_bundle_signed_by_another_key(tmp_path, signed_bundle):
    bundle, _ = signed_bundle
    other = new_signing_key().public_key.to_hex()
    context = write_build_context(tmp_path / "ctx", bundle=bundle, key_hex=other)
    process = run_entrypoint(context, tmp_path, other, free_port())
    output, _ = process.communicate(timeout=60)
    assert process.returncode != 0 and "cannot serve" in output
    assert not (tmp_path / "state" / "modules" / "forest").exists()


def test_docker_build_needs_an_engine(tmp_path, signed_bundle):
    context = write_build_context(tmp_path / "ctx", bundle=signed_bundle[0], key_hex=signed_bundle[1])
    try:
        image_id = build_image(context, tag="edgefleet-test/forest:1")
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine reachable here: {exc}")
    assert image_id.startswith("sha256:")
