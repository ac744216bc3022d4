"""A real nginx cache in front of the server's ``/content/``: one cached copy serves the next device (a HIT), and a
chunk damaged in the cache is refused by the device, which gets the good bytes from the next content URL.

One server replica behind nginx: two SQLite servers cannot share a bundle's content key, and the PostgreSQL
fixture that lets replicas share it is not in main yet (docs/content-cache.md shows two upstreams).
"""

from __future__ import annotations

import pytest

from tests.support.net import free_port
from tests.support.nginx import start_nginx

from .conftest import Fleet, running_fleet
from .test_content_http import build_with_weights, deploy


@pytest.fixture
def cached_fleet(tmp_path, mosquitto, monkeypatch):
    """Devices told to fetch from nginx first, then from the server itself."""
    port = free_port()
    nginx = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{port}"])

    class CachedFleet(Fleet):
        cache = nginx

        def start_server(self, **settings):
            super().start_server(port=port, content_urls=(nginx.url, f"http://127.0.0.1:{port}"), **settings)

    try:
        yield from running_fleet(CachedFleet, tmp_path, mosquitto.url, monkeypatch)
    finally:
        nginx.stop()


def content_requests(fleet, bundle: dict) -> list[tuple[str, str, int]]:
    return [r for r in fleet.cache.access() if r[0].startswith(f"/content/{bundle['digest']}/")]


def test_a_second_devices_fetch_is_served_from_the_cache(cached_fleet):
    first, second = cached_fleet.start_agents(2)
    bundle = build_with_weights(cached_fleet)
    deploy(cached_fleet, bundle, [first.device_id])
    cached_fleet.wait_models({"scaler": bundle["version"]}, [first])
    misses = content_requests(cached_fleet, bundle)
    assert misses and {(cache, status) for _, cache, status in misses} == {("MISS", 200)}

    deploy(cached_fleet, bundle, [first.device_id, second.device_id])
    cached_fleet.wait_models({"scaler": bundle["version"]}, [second])
    hits = content_requests(cached_fleet, bundle)[len(misses):]
    assert sorted(uri for uri, _, _ in hits) == sorted(uri for uri, _, _ in misses)
    assert {(cache, status) for _, cache, status in hits} == {("HIT", 200)}
    assert cached_fleet.server.fleet.handlers.chunk_sender.publishes == 0


def test_a_chunk_corrupted_in_the_cache_is_refused_and_fetched_again_from_the_next_url(cached_fleet):
    first, second = cached_fleet.start_agents(2)
    bundle = build_with_weights(cached_fleet)
    deploy(cached_fleet, bundle, [first.device_id])
    cached_fleet.wait_models({"scaler": bundle["version"]}, [first])
    victim = max(cached_fleet.cache.cached_files(), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF  # a flipped bit in the body (nginx keeps its own header in front of the body)
    victim.write_bytes(bytes(data))

    deploy(cached_fleet, bundle, [first.device_id, second.device_id])
    cached_fleet.wait_models({"scaler": bundle["version"]}, [second])
    assert second.fetcher.chunks_refused == 1, "the damaged chunk was refused, the others taken"
    assert first.fetcher.chunks_refused == 0
    installed = second.config.state_dir / "modules" / "scaler"
    assert installed.is_dir()


def test_server_and_agent_processes_move_content_through_the_cache_named_by_content_url(tmp_path, mosquitto):
    from tests.server.builders import module_files, tar_gz, tiny_onnx
    from tests.support.fleet import start_agent, start_server
    from tests.support.net import wait_for

    cache_port = free_port()
    server = start_server(tmp_path, mosquitto.url, "--content-url", f"http://127.0.0.1:{cache_port}")
    nginx = start_nginx(tmp_path / "nginx", [f"127.0.0.1:{server.port}"], port=cache_port)
    agent = start_agent(tmp_path, "cache-proc-1", broker_url=mosquitto.url, key_hex=server.signing_key_hex())
    try:
        with server.api() as api:
            bundle = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(
                module_files(model=tiny_onnx(3.0))))}).json()
            api.post("/api/deployments", json={"module": "scaler", "version": bundle["version"],
                                               "devices": [agent.device_id]}).raise_for_status()
            wait_for(lambda: any(m["name"] == "scaler" and m["state"] == "running" and
                                 m["version"] == bundle["version"]
                                 for m in api.get(f"/api/devices/{agent.device_id}").json()["modules"]),
                     timeout=60, what="the agent process to run the bundle")
        fetched = [r for r in nginx.access() if r[0].startswith(f"/content/{bundle['digest']}/")]
        assert fetched and {status for _, _, status in fetched} == {200}
    finally:
        agent.stop()
        nginx.stop()
        server.stop()
