"""B4 over HTTP: a 10 MB bundle to 1,000 simulated devices through an nginx cache vs bare HTTP clients doing the same.

One Mosquitto (the control plane only), one server process naming the cache
(``--content-url``; the MQTT fallback behind it), one nginx (``proxy_cache`` keyed
on the URI, ``tests/support/nginx.py``) in front of it.

- **edgefleet**: a new signed bundle per round (a cold cache each time: the
  first devices' misses are collapsed by ``proxy_cache_lock``);
  :class:`~simulators.fleet.SimulatedFleet` runs the devices with the real
  agent parts, whose fetchers get every chunk over HTTP from the cache,
  decrypt it and check it against the signed manifest, and store it. The
  clock starts at ``POST /api/deployments`` and stops when every device's
  fetch has returned. Mosquitto's RSS is sampled through the phase
  (``broker_rss_mb`` before, peak during): content no longer flows through it.
- **bare**: as many threads as devices, each a plain HTTP client
  (:class:`edge_agent.http_pool.HttpPool`, keep-alive) fetching the same chunk
  URLs from the same (by then warm) cache, hashing each body with SHA-256 and
  writing it to its own file. No MQTT, no signature, no decryption.

Rounds alternate edgefleet, bare; the medians are compared (target ≤ 1.2x).
The load average of the shared machine is recorded at each phase.

    python -m benchmarks.b4_http [--devices 1000] [--mb 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.b4_fanout import MODULE, PeakRss, _timed, _wait, build_bundle
from benchmarks.report import write_result
from edge_agent.http_pool import HttpPool
from fleet_protocol.manifest import BundleManifest
from simulators.mqtt_loop import raise_fd_limit
from tests.support.fleet import start_server
from tests.support.mosquitto import start_mosquitto
from tests.support.net import free_port
from tests.support.nginx import start_nginx

BROKER_CONFIG = "max_connections -1\nmax_inflight_messages 10\nmemory_limit 6442450944\n"
TARGET = 1.2


def chunk_paths(cache, bundle: dict) -> list[str]:
    """Every chunk's ``/content/`` path, as the devices asked the cache for them (a device computes them from the
    bundle key in its desired state)."""
    prefix = f"/content/{bundle['digest']}/"
    return sorted({uri for uri, _, status in cache.access() if uri.startswith(prefix) and status == 200})


def edgefleet_round(server, broker, bundle: dict, root: Path, ids: list[str], timeout_s: float) -> dict:
    from simulators.fleet import SimulatedFleet

    fleet = SimulatedFleet(broker.url, [server.signing_key_hex()], root, ids, settings={"fetch_timeout_s": 30})
    begun: dict[str, float] = {}
    done: dict[str, float] = {}
    lock = threading.Lock()
    api = server.api()
    try:
        fleet.start()
        if fleet.wait_connected(300) != len(ids):
            raise RuntimeError("not every simulated device connected")
        _wait(lambda: sum(d["status"] == "online" for d in api.get("/api/devices").json()) >= len(ids), 120,
              "the server to see every device online")
        for device in fleet.devices.values():
            device.fetcher.fetch = _timed(device.fetcher.fetch, device.device_id, bundle["digest"], begun, done, lock)
        load = os.getloadavg()[0]
        rss_before = psutil.Process(broker.process.pid).memory_info().rss / 2**20
        rss = PeakRss(broker.process.pid)
        started = time.perf_counter()
        api.post("/api/deployments", json={"module": MODULE, "version": bundle["version"], "devices": ids},
                 timeout=120).raise_for_status()
        _wait(lambda: len(done) >= len(ids), timeout_s, f"{len(ids)} devices to hold the bundle", interval_s=0.02)
        seconds = max(done.values()) - started
        rss.stop()
        http_bytes = sum(d.fetcher.http.bytes_received for d in fleet.devices.values())
        refused = sum(d.fetcher.chunks_refused for d in fleet.devices.values())
    finally:
        api.close()
        fleet.stop()
    return {"seconds": seconds, "first_device_s": min(done.values()) - started,
            "median_device_s": sorted(done.values())[len(ids) // 2] - started,
            "http_bytes": http_bytes, "chunks_refused": refused, "delivered_gb_per_s": http_bytes / seconds / 1e9,
            "broker_rss_before_mb": rss_before, "broker_peak_rss_mb": rss.peak_mb, "load_average_1m": load}


def bare_round(cache_port: int, paths: list[str], root: Path, clients: int, timeout_s: float) -> dict:
    """``clients`` threads, each fetching every path with keep-alive, hashing and writing each body."""
    root.mkdir(parents=True, exist_ok=True)
    received = [0] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        pool = HttpPool("127.0.0.1", cache_port, ssl_context=None, timeout_s=timeout_s)
        folder = root / str(i)
        folder.mkdir()
        try:
            barrier.wait()
            for n, path in enumerate(paths):
                response = pool.request("GET", path, None, {}, idempotent=True)
                if response.status != 200:
                    raise RuntimeError(f"GET {path}: {response.status}")
                hashlib.sha256(response.body).digest()
                tmp = folder / f".{n}.tmp"
                tmp.write_bytes(response.body)
                os.replace(tmp, folder / str(n))
                received[i] += len(response.body)
        except BaseException as exc:  # noqa: BLE001 - reported after the round
            errors.append(exc)
        finally:
            pool.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    load = os.getloadavg()[0]
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join(timeout_s)
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} bare clients failed, first: {errors[0]!r}")
    total = sum(received)
    shutil.rmtree(root, ignore_errors=True)
    return {"seconds": seconds, "http_bytes": total, "delivered_gb_per_s": total / seconds / 1e9,
            "load_average_1m": load}


def run(devices: int = 1000, mb: float = 10.0, rounds: int = 1, timeout_s: float = 1800) -> dict:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(dir=os.environ.get("B4_HTTP_DIR")) as tmp:
        root = Path(tmp)
        broker = start_mosquitto(root / "broker", extra_config=BROKER_CONFIG)
        cache_port = free_port()
        server = start_server(root, broker.url, "--content-url", f"http://127.0.0.1:{cache_port}")
        cache = None
        try:
            cache = start_nginx(root / "nginx", [f"127.0.0.1:{server.port}"], port=cache_port, workers=2)
            edge, bare = [], []
            for r in range(rounds):
                with server.api() as api:
                    bundle = build_bundle(api, mb)
                ids = [f"b4h-{r}-{i:05d}" for i in range(devices)]
                edge.append(edgefleet_round(server, broker, bundle, root / f"devices-{r}", ids, timeout_s))
                print(f"round {r}: edgefleet {edge[-1]['seconds']:.2f} s", flush=True)
                shutil.rmtree(root / f"devices-{r}", ignore_errors=True)
                paths = chunk_paths(cache, bundle)
                chunks = len(BundleManifest.from_dict(bundle["envelope"]["signed"]).chunk_sizes())
                if len(paths) != chunks:
                    raise RuntimeError(f"the devices fetched {len(paths)} distinct chunks of {chunks}")
                bare.append(bare_round(cache.port, paths, root / "bare", devices, timeout_s))
                print(f"round {r}: bare {bare[-1]['seconds']:.2f} s", flush=True)
            statuses = {}
            for _, status, _ in cache.access():
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            server.stop()
            if cache is not None:
                cache.stop()
            broker.stop()
    edge_s, bare_s = statistics.median(e["seconds"] for e in edge), statistics.median(b["seconds"] for b in bare)
    return {"devices": devices, "bundle_bytes": bundle["size"], "rounds": rounds, "edgefleet": edge, "bare": bare,
            "edgefleet_median_s": edge_s, "bare_median_s": bare_s, "ratio": edge_s / bare_s,
            "cache_statuses": statuses, "targets": {"ratio": TARGET}}


def row(r: dict) -> str:
    peak = max(e["broker_peak_rss_mb"] for e in r["edgefleet"])
    before = min(e["broker_rss_before_mb"] for e in r["edgefleet"])
    return (f"| B4-http | rollout of a {r['bundle_bytes'] / 2**20:.0f} MB bundle to {r['devices']:,} simulated devices "
            f"over HTTP through an nginx cache, until every device holds it checked (median of {r['rounds']}; "
            f"Mosquitto {before:.0f} → {peak:.0f} MB RSS) | {r['edgefleet_median_s']:.2f} s | "
            f"{r['bare_median_s']:.2f} s: as many plain HTTP clients fetching, hashing and writing the same chunks "
            f"from the same cache | {r['ratio']:.2f}x | ≤ {TARGET}x | {'yes' if r['ratio'] <= TARGET else 'no'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices (and bare clients)")
    parser.add_argument("--mb", type=float, default=10.0, help="size of the bundle's payload file in MB")
    parser.add_argument("--rounds", type=int, default=1, help="edgefleet/bare pairs (medians compared)")
    parser.add_argument("--out", default="B4-http", help="results/<OUT>.json")
    args = parser.parse_args()
    result = run(args.devices, args.mb, args.rounds)
    write_result(args.out, result)
    print(row(result))
