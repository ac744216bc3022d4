"""Bundle content over HTTP: ``GET /content/<bundle>/<chunk id>`` is immutable, cacheable and identical to what
MQTT carries; devices fetch over HTTP from the content URLs of their signed desired state, resume a partial chunk
with ``Range``, and fall back to MQTT when no content URL answers.

The server runs in threads on a real socket, with a real Mosquitto and in-process agents (tests/deployments/).
"""

from __future__ import annotations

import os

import httpx
import pytest

from edge_agent.content_http import HttpContent
from fleet_protocol import bundle_crypto
from fleet_protocol.manifest import BundleManifest
from fleet_server.api.routes.content import CACHE_CONTROL
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.net import free_port

from .conftest import Fleet, running_fleet

WEIGHTS_BYTES = 700_000  # three 256 KiB chunks and a bit


def build_with_weights(fleet: Fleet, seed: int = 1) -> dict:
    files = {**module_files(files=["model.onnx", "main.py", "sample.json", "weights.bin"], model=tiny_onnx(2.0)),
             "weights.bin": os.urandom(WEIGHTS_BYTES)}
    response = fleet.api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))})
    assert response.status_code == 201, response.text
    return response.json()


def deploy(fleet: Fleet, bundle: dict, device_ids: list[str]) -> None:
    fleet.post("/api/deployments", {"module": "scaler", "version": bundle["version"], "devices": device_ids},
               expect=201)


def chunk_urls(fleet: Fleet, bundle: dict) -> dict[str, tuple[str, bytes]]:
    """Plaintext chunk digest -> (its /content/ path, the encrypted payload the chunk sender would publish)."""
    server = fleet.server.fleet
    key = server.desired.content_keys.bundle_key(bundle["digest"])
    manifest = BundleManifest.from_dict(bundle_envelope(fleet, bundle)["signed"])
    return {sha: (f"/content/{bundle['digest']}/{bundle_crypto.chunk_id(key, sha).hex()}",
                  bundle_crypto.encrypt_chunk(key, bundle["digest"], server.chunks.get(sha)))
            for sha in manifest.chunk_sizes()}


def bundle_envelope(fleet: Fleet, bundle: dict) -> dict:
    from fleet_server.store import bundles as bundle_store

    return bundle_store.get_bundle(db=fleet.server.fleet.db, digest=bundle["digest"])["envelope"]


@pytest.fixture
def http_fleet(tmp_path, mosquitto, monkeypatch):
    """A fleet whose server names its own URL as the one content URL."""
    port = free_port()

    class HttpFleet(Fleet):
        def start_server(self, **settings):
            super().start_server(port=port, content_urls=(f"http://127.0.0.1:{port}",), **settings)

    yield from running_fleet(HttpFleet, tmp_path, mosquitto.url, monkeypatch)


@pytest.fixture
def dead_url_fleet(tmp_path, mosquitto, monkeypatch):
    """A fleet whose one content URL has nobody listening: devices must get their chunks over MQTT."""
    dead = f"http://127.0.0.1:{free_port()}"

    class DeadUrlFleet(Fleet):
        def start_server(self, **settings):
            super().start_server(content_urls=(dead,), **settings)

    yield from running_fleet(DeadUrlFleet, tmp_path, mosquitto.url, monkeypatch)


def test_content_is_immutable_cacheable_ranged_and_the_same_bytes_mqtt_carries(http_fleet):
    bundle = build_with_weights(http_fleet)
    chunks = chunk_urls(http_fleet, bundle)
    assert len(chunks) >= 3
    path, payload = max(chunks.values(), key=lambda c: len(c[1]))
    with httpx.Client(base_url=http_fleet.server.url, timeout=10) as client:  # no token: public by design
        whole = client.get(path)
        assert whole.status_code == 200 and whole.content == payload
        assert client.get(path).content == whole.content, "deterministic: every replica and every call agree"
        etag = f'"{path.rsplit("/", 1)[1]}"'
        assert whole.headers["etag"] == etag and whole.headers["cache-control"] == CACHE_CONTROL
        part = client.get(path, headers={"Range": "bytes=100-"})
        assert part.status_code == 206 and part.content == payload[100:]
        assert part.headers["content-range"] == f"bytes 100-{len(payload) - 1}/{len(payload)}"
        assert client.get(path, headers={"Range": "bytes=-10"}).content == payload[-10:]
        assert client.get(path, headers={"Range": f"bytes={len(payload)}-"}).status_code == 416
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
        assert client.head(path).headers["content-length"] == str(len(payload))
        unknown = path[:-64] + "0" * 64
        assert client.get(unknown).status_code == 404
        plaintext_named = f"/content/{bundle['digest']}/{next(iter(chunks))}"
        assert client.get(plaintext_named).status_code == 404, "a chunk is named by its keyed id only"


def test_a_device_fetches_its_chunks_over_http_when_the_desired_state_names_content_urls(http_fleet):
    (agent,) = http_fleet.start_agents(1)
    bundle = build_with_weights(http_fleet)
    deploy(http_fleet, bundle, [agent.device_id])
    http_fleet.wait_models({"scaler": bundle["version"]})
    assert http_fleet.server.fleet.handlers.chunk_sender.publishes == 0, "no chunk went over MQTT"
    assert agent.fetcher.http.bytes_received >= WEIGHTS_BYTES


def test_a_device_falls_back_to_mqtt_when_no_content_url_answers(dead_url_fleet):
    (agent,) = dead_url_fleet.start_agents(1)
    bundle = build_with_weights(dead_url_fleet)
    deploy(dead_url_fleet, bundle, [agent.device_id])
    dead_url_fleet.wait_models({"scaler": bundle["version"]})
    assert agent.fetcher.content_urls, "the desired state named the (dead) content URL"
    assert agent.fetcher.http.bytes_received == 0
    assert dead_url_fleet.server.fleet.handlers.chunk_sender.publishes >= len(chunk_urls(dead_url_fleet, bundle))


def test_a_partial_chunk_resumes_with_a_range_request_for_the_rest_only(http_fleet, tmp_path):
    bundle = build_with_weights(http_fleet)
    path, payload = max(chunk_urls(http_fleet, bundle).values(), key=lambda c: len(c[1]))
    bundle_digest, cid = path.split("/")[2:]
    part = tmp_path / f".{cid}.part"
    half = len(payload) // 2
    part.write_bytes(payload[:half])  # what a broken-off first try left
    content, taken = HttpContent(timeout_s=10), []
    assert content.fetch_chunk((http_fleet.server.url,), bundle_digest, cid, part,
                               lambda got: taken.append(got) or True)
    assert taken == [payload]
    assert content.bytes_received == len(payload) - half, "only the rest crossed the network"
    assert not part.exists()
    content.close()
