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
