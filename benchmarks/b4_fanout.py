"""B4: rollout fan-out of a 10 MB bundle to 1,000 simulated devices vs a bare paho fan-out of the same bytes.

Both sides go through one Mosquitto (same binary, config and port; started
afresh for each phase, so one phase's memory does not burden the next), and
both sides' device clients run on :class:`~simulators.mqtt_loop.MqttLoop`
(one selectors thread per process). The order is bare, edgefleet, bare; the
faster bare run counts.

- **edgefleet**: the server (external broker) builds a signed bundle from a
  module holding a 10 MB file; :class:`~simulators.fleet.SimulatedFleet` runs
  the devices with the real agent parts. The clock starts at
  ``POST /api/deployments`` and stops when every device's fetch has returned
  (every chunk stored and checked against the signed manifest). The server's
  :class:`~fleet_server.chunk_sender.ChunkSender` counts its chunk publishes:
  ``publishes_per_chunk`` is 1.0 when the broker did all the fanning out.
- **bare**: the same number of paho clients subscribe (QoS 1, SUBACK awaited)
  to one topic; one paho publisher publishes the bundle's chunk payloads,
  byte for byte what the server sends, at QoS 1. The clock starts at the first
  publish and stops when every client holds every payload.
- **verification** (reported separately: on one machine every device's
  hashing is serialised on the same cores, on a real fleet it is not), median
  ms/MB of interleaved rounds. **B4-verify**: one device's work on the bundle
  it received (manifest signature, then
  :func:`~fleet_protocol.bundle_crypto.decrypt_chunk` and
  :func:`~fleet_protocol.trust.check_chunk` of every chunk) vs bare
  ``hashlib.sha256`` over the same plaintext bytes, target ≥ 0.9x.
  **B4-decrypt**: the encryption's own cost, that work vs plain digest
  verification (signature plus ``check_chunk``, no decryption); no target.
  ``--verify-only`` runs just this and writes ``results/B4-verify.json``.

    python -m benchmarks.b4_fanout [--devices 1000] [--mb 10] [--verify-only]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import psutil

from benchmarks.report import update_readme_rows, write_result
from fleet_protocol import bundle_crypto, topics
from fleet_protocol.manifest import BundleManifest
from fleet_protocol.signing import PublicKey, verify_envelope
from fleet_protocol.trust import TrustedState, check_chunk
from fleet_server.store import BlobStore
from simulators.mqtt_loop import MqttLoop, raise_fd_limit
from tests.server.builders import module_files, tar_gz, tiny_onnx
from tests.support.fleet import start_server
from tests.support.mosquitto import start_mosquitto

# Mosquitto builds a PUBLISH packet per subscriber for each in-flight message: with 1,000 subscribers
# the default 100 in flight per client costs gigabytes. memory_limit makes a runaway broker fail the
# run instead of pushing the shared machine into the OOM killer.
BROKER_CONFIG = "max_connections -1\nmax_inflight_messages 10\nmemory_limit 6442450944\n"
MODULE = "fanout"
VERIFY_TARGET = 0.9  # a device's decrypt + verify at least 0.9x as fast as bare hashlib.sha256 over the same bytes


class PeakRss:
    """Samples a process's RSS in the background; ``peak_mb`` is the largest seen since ``reset``."""

    def __init__(self, pid: int, interval_s: float = 0.05):
        self._process = psutil.Process(pid)
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval_s,), daemon=True)
        self._thread.start()

    def _sample(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self._peak = max(self._peak, self._process.memory_info().rss)
            except psutil.Error:
                return

    @property
    def peak_mb(self) -> float:
        return self._peak / 2**20

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _phase(broker, server, fn, *args) -> dict:
    """Run one phase on a freshly started broker (same config and port), reporting the broker's peak RSS."""
    broker.restart()
    _wait(lambda: _server_connected(server), 60, "the server to reconnect to the broker", interval_s=0.2)
    rss = PeakRss(broker.process.pid)
    try:
        result = fn(*args)
    finally:
        rss.stop()
    return {**result, "broker_peak_rss_mb": rss.peak_mb}


def _server_connected(server) -> bool:
    try:
        return httpx.get(f"{server.url}/api/health", timeout=2).json().get("broker") == "connected"
    except httpx.HTTPError:
        return False


def _wait(check, timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


# --- bare paho -----------------------------------------------------------------------------------

def bare_fanout(broker, payloads: list[bytes], devices: int, *, timeout_s: float = 600) -> dict:
    """``devices`` paho clients on one MqttLoop receive ``payloads`` published once each at QoS 1."""
    topic = "bench/b4/bare"
    want = len(payloads)
    counts = [0] * devices
    complete = [0]
    subscribed = [0]
    done = threading.Event()
    finished_at = [0.0]
    loop = MqttLoop("b4-bare")
    loop.start()
    clients = []
    for i in range(devices):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"b4-bare-{i}", protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(64)

        def on_connect(c, userdata, flags, reason_code, properties):
            c.subscribe(topic, qos=1)

        def on_subscribe(c, userdata, mid, reason_codes, properties):
            subscribed[0] += 1

        def on_message(c, userdata, message, i=i):
            counts[i] += 1
            if counts[i] == want:
                complete[0] += 1
                if complete[0] == devices:
                    finished_at[0] = time.perf_counter()
                    done.set()

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        loop.connect(client, broker.host, broker.port, keepalive=60)
        clients.append(client)
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="b4-bare-publisher", protocol=mqtt.MQTTv311)
    publisher.max_inflight_messages_set(100)  # as the server's link
    try:
        _wait(lambda: subscribed[0] >= devices, 120, f"{devices} bare subscriptions")
        publisher.connect(broker.host, broker.port)
        publisher.loop_start()
        started = time.perf_counter()
        for payload in payloads:
            publisher.publish(topic, payload, qos=1)
        if not done.wait(timeout_s):
            raise RuntimeError(f"bare fan-out incomplete: {complete[0]} of {devices} clients done")
        seconds = finished_at[0] - started
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        for client in clients:
            loop.detach(client)
        loop.stop()
    delivered = sum(len(p) for p in payloads) * devices
    return {"seconds": seconds, "delivered_bytes": delivered, "delivered_gb_per_s": delivered / seconds / 1e9}



# --- edgefleet -----------------------------------------------------------------------------------

def build_bundle(api: httpx.Client, mb: float) -> dict:
    """A signed bundle of a module whose ``payload.bin`` holds ``mb`` MB of random bytes (plus a tiny model)."""
    files = {**module_files(name=MODULE, files=["model.onnx", "main.py", "sample.json", "payload.bin"],
                            model=tiny_onnx()), "payload.bin": os.urandom(int(mb * 2**20))}
    response = api.post("/api/bundles/from-module", files={"file": ("m.tar.gz", tar_gz(files))})
    response.raise_for_status()
    bundle = response.json()
    bundle["envelope"] = api.get(f"/api/bundles/{bundle['digest']}").json()["manifest"]
    return bundle


def edgefleet_fanout(server, broker, bundle: dict, chunks: dict[str, bytes], root: Path, devices: int,
                     window: int, *, timeout_s: float = 600) -> dict:
    """Deploy ``bundle`` to ``devices`` simulated devices; seconds until every one's fetch has returned."""
    from simulators.fleet import SimulatedFleet

    ids = [f"b4-{i:05d}" for i in range(devices)]
    fleet = SimulatedFleet(broker.url, [server.signing_key_hex()], root, ids, settings={"fetch_window_chunks": window})
    begun: dict[str, float] = {}
    done: dict[str, float] = {}
    lock = threading.Lock()
    counter = ChunkCounter(broker, topics.bundle_chunks_topic(bundle["digest"]))
    api = server.api()
    try:
        fleet.start()
        if fleet.wait_connected(300) != devices:
            raise RuntimeError("not every simulated device connected")
        _wait(lambda: sum(d["status"] == "online" for d in api.get("/api/devices").json()) >= devices, 120,
              "the server to see every device online")
        for device in fleet.devices.values():
            device.fetcher.fetch = _timed(device.fetcher.fetch, device.device_id, bundle["digest"], begun, done, lock)
        started = time.perf_counter()
        api.post("/api/deployments", json={"module": MODULE, "version": bundle["version"], "devices": ids},
                 timeout=120).raise_for_status()
        _wait(lambda: len(done) >= devices, timeout_s, f"{devices} devices to hold the bundle", interval_s=0.02)
        seconds = max(done.values()) - started
        time.sleep(1.0)  # publishes still on their way to the counter
        publishes = sum(counter.counts.values())
    finally:
        counter.stop()
        api.close()
        fleet.stop()
    delivered = sum(len(c) for c in chunks.values()) * devices
    return {"seconds": seconds, "first_fetch_started_s": min(begun.values()) - started,
            "last_fetch_started_s": max(begun.values()) - started, "first_device_s": min(done.values()) - started,
            "median_device_s": sorted(done.values())[devices // 2] - started,
            "chunk_publishes": publishes, "publishes_per_chunk": publishes / len(chunks),
            "most_publishes_of_one_chunk": max(counter.counts.values(), default=0),
            "delivered_gb_per_s": delivered / seconds / 1e9}


def _timed(fetch, device_id: str, digest: str, begun: dict[str, float], done: dict[str, float],
           lock: threading.Lock):
    """``Fetcher.fetch`` noting when it began (the manifest was verified) and returned for ``digest`` (the
    device then holds every chunk, checked)."""
    def timed(manifest, **kwargs):
        with lock:
            begun.setdefault(device_id, time.perf_counter())
        fetch(manifest, **kwargs)
        if manifest.digest == digest:
            with lock:
                done.setdefault(device_id, time.perf_counter())
    return timed


class ChunkCounter:
    """A bare subscriber to a bundle's chunk topic: how often the server published each chunk."""

    def __init__(self, broker, topic: str):
        self.counts: dict[str, int] = {}
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="b4-chunk-counter",
                                   protocol=mqtt.MQTTv311)
        self._client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *a: self._subscribed.set()
        self._client.on_message = self._count
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(30):
            raise RuntimeError("the chunk counter could not subscribe")

    def _count(self, client, userdata, message) -> None:
        sha = message.payload[4:36].hex()
        self.counts[sha] = self.counts.get(sha, 0) + 1

    def stop(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


# --- verification ----------------------------------------------------------------------------------

def verification(envelope: dict, key_hex: str, chunks: dict[str, bytes], *, rounds: int = 7) -> dict:
    """One device's signature check plus decrypt and ``check_chunk`` of every chunk, vs ``hashlib.sha256`` alone
    (``ratio``) and vs the same without decrypting (``decrypt_cost``); ms per MB, the median of ``rounds`` (the
    best is kept in the result too, but the rows report medians)."""
    trust = TrustedState("b4-verify", [PublicKey.from_hex(key_hex)])
    digest = BundleManifest.from_dict(envelope["signed"]).digest
    content_key = os.urandom(32)
    items = list(chunks.items())
    sealed = [(sha, bundle_crypto.split_chunk(bundle_crypto.encrypt_chunk(content_key, digest, data)))
              for sha, data in items]
    total = sum(len(data) for _, data in items)

    def decrypt_and_verify() -> None:
        manifest = BundleManifest.from_dict(verify_envelope(envelope, trust.keys, what="manifest"))
        ids = {bundle_crypto.chunk_id(content_key, sha): sha for sha in manifest.chunk_sizes()}  # as the agent maps
        for _, (cid, ciphertext) in sealed:
            check_chunk(manifest, ids[cid], bundle_crypto.decrypt_chunk(content_key, digest, cid, ciphertext))

    def plain_verify() -> None:
        manifest = BundleManifest.from_dict(verify_envelope(envelope, trust.keys, what="manifest"))
        for sha, data in items:
            check_chunk(manifest, sha, data)

    def bare() -> None:
        for _, data in items:
            hashlib.sha256(data).digest()

    samples: dict[str, list[float]] = {"decrypt_verify": [], "plain_verify": [], "sha256": []}
    for _ in range(rounds):  # interleaved: drift and other load hit every side alike
        for name, fn in (("sha256", bare), ("plain_verify", plain_verify), ("decrypt_verify", decrypt_and_verify)):
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s) * 1e3 / (total / 1e6) for name, s in samples.items()}
    return {"bytes": total, "chunks": len(items), "rounds": rounds,
            **{f"{name}_median_ms_per_mb": v for name, v in median.items()},
            **{f"{name}_best_ms_per_mb": min(s) * 1e3 / (total / 1e6) for name, s in samples.items()},
            "ratio": median["sha256"] / median["decrypt_verify"],
            "decrypt_cost": median["decrypt_verify"] / median["plain_verify"],
            "decrypt_cost_ms_per_mb": median["decrypt_verify"] - median["plain_verify"]}


# --- the benchmark -------------------------------------------------------------------------------

def run(devices: int = 1000, mb: float = 10.0, *, window: int = 16, workdir: Path | None = None,
        publish: bool = True) -> dict:
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        broker = start_mosquitto(root / "broker", extra_config=BROKER_CONFIG)
        server = start_server(root, broker.url)
        try:
            with server.api() as api:
                bundle = build_bundle(api, mb)
            manifest = BundleManifest.from_dict(bundle["envelope"]["signed"])
            store = BlobStore(server.data_dir / "chunks")
            chunks = {sha: store.get(sha) for sha in manifest.chunk_sizes()}
            sealing_key = os.urandom(32)  # byte for byte what the server sends: the same size, encrypted
            payloads = [bundle_crypto.encrypt_chunk(sealing_key, bundle["digest"], data) for data in chunks.values()]
            bare = [_phase(broker, server, bare_fanout, broker, payloads, devices)]
            edge = _phase(broker, server, edgefleet_fanout, server, broker, bundle, chunks, root / "devices", devices,
                          window)
            bare.append(_phase(broker, server, bare_fanout, broker, payloads, devices))  # the faster one counts
            verify = verification(bundle["envelope"], server.signing_key_hex(), chunks)
        finally:
            server.stop()
            broker.stop()
    best = min(bare, key=lambda r: r["seconds"])
    results = {"devices": devices, "bundle_bytes": bundle["size"], "chunks": len(chunks), "fetch_window": window,
               "edgefleet": edge,
               "bare": best, "bare_runs_s": [r["seconds"] for r in bare], "ratio": edge["seconds"] / best["seconds"],
               "verification": verify, "targets": {"ratio": 1.2, "verification_ratio": VERIFY_TARGET}}
    if publish:
        write_result("B4", results)
        update_readme_rows({"B4": _row(results), "B4-verify": _verify_row(results),
                            "B4-decrypt": _decrypt_row(results)})
    return results


def _row(r: dict) -> str:
    e, b = r["edgefleet"], r["bare"]
    return (f"| B4 | rollout fan-out of a {r['bundle_bytes'] / 2**20:.0f} MB bundle to {r['devices']:,} simulated "
            f"devices, until every device holds it checked ({e['publishes_per_chunk']:.2f} publishes per chunk) | "
            f"{e['seconds']:.2f} s | {b['seconds']:.2f} s bare paho fan-out, same broker | {r['ratio']:.2f}x | "
            f"≤ 1.2x | {'yes' if r['ratio'] <= 1.2 else 'no'} |")


def verify_only(mb: float = 10.0) -> dict:
    """Just the verification part, on a bundle the real server builds; writes ``results/B4-verify.json``."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = start_mosquitto(Path(tmp) / "broker")
        server = start_server(Path(tmp), broker.url)
        try:
            with server.api() as api:
                bundle = build_bundle(api, mb)
            store = BlobStore(server.data_dir / "chunks")
            manifest = BundleManifest.from_dict(bundle["envelope"]["signed"])
            chunks = {sha: store.get(sha) for sha in manifest.chunk_sizes()}
            verify = verification(bundle["envelope"], server.signing_key_hex(), chunks, rounds=15)
        finally:
            server.stop()
            broker.stop()
    result = {"bundle_bytes": bundle["size"], "verification": verify, "targets": {"verification_ratio": VERIFY_TARGET}}
    write_result("B4-verify", result)
    return result


def _verify_row(r: dict) -> str:
    v = r["verification"]
    return (f"| B4-verify | one device decrypting (AES-256-GCM) and verifying the {v['bytes'] / 2**20:.0f} MB "
            f"bundle it received: manifest signature, then each chunk decrypted and checked (median of "
            f"{v['rounds']} rounds) | {v['decrypt_verify_median_ms_per_mb']:.2f} ms/MB | "
            f"{v['sha256_median_ms_per_mb']:.2f} ms/MB bare `hashlib.sha256` over the same bytes | "
            f"{v['ratio']:.2f}x | ≥ {VERIFY_TARGET}x | {'yes' if v['ratio'] >= VERIFY_TARGET else 'no'} |")


def _decrypt_row(r: dict) -> str:
    v = r["verification"]
    return (f"| B4-decrypt | what chunk encryption costs that device: decrypt + verify against plain digest "
            f"verification of the same bundle (median of {v['rounds']} rounds; "
            f"+{v['decrypt_cost_ms_per_mb']:.2f} ms/MB) | {v['decrypt_verify_median_ms_per_mb']:.2f} ms/MB | "
            f"{v['plain_verify_median_ms_per_mb']:.2f} ms/MB plain verification, no decryption | "
            f"{v['decrypt_cost']:.2f}x the time | cost, no target | n/a |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="simulated devices (and bare clients)")
    parser.add_argument("--mb", type=float, default=10.0, help="size of the bundle's payload file in MB")
    parser.add_argument("--window", type=int, default=16, help="the devices' fetch_window_chunks (agent default 16)")
    parser.add_argument("--verify-only", action="store_true", help="only the decrypt + verify cost (B4-verify)")
    args = parser.parse_args()
    if args.verify_only:
        v = verify_only(args.mb)
        print(_verify_row(v))
        print(_decrypt_row(v))
        raise SystemExit(0)
    out = run(args.devices, args.mb, window=args.window)
    e, b, v = out["edgefleet"], out["bare"], out["verification"]
    print(f"edgefleet {e['seconds']:.2f} s ({e['publishes_per_chunk']:.2f} publishes per chunk) | bare "
          f"{b['seconds']:.2f} s | ratio {out['ratio']:.2f} | verification {v['decrypt_verify_median_ms_per_mb']:.2f} "
          f"ms/MB vs sha256 {v['sha256_median_ms_per_mb']:.2f} ms/MB ({v['ratio']:.2f}x; decryption "
          f"{v['decrypt_cost']:.2f}x plain verification)")
