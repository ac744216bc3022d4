"""Where the local endpoint's p99 comes from: two agents' code, A/B, interleaved rounds of the same wrk load.

Each side is a real agent process (its own ``PYTHONPATH`` root: e.g. an
unpacked ``git archive main`` against this worktree) connected to a real
Mosquitto, serving the 50-tree forest of :mod:`benchmarks.models` from a
signed bundle installed in its state directory. Heartbeats and telemetry
flushes run every second (``--telemetry-interval``), so the background work
that shares the GIL with the endpoint happens during every round.

Inside each agent a probe records, on the system-wide monotonic clock, every
garbage collection (``gc.callbacks``: generation and pause) and every
telemetry heartbeat and flush (their span). After the wrk rounds a one-connection
Python client times each request on the same clock, so the slowest 1 % can be
matched against the pauses: the share of p99 outliers that overlap a
collection or a flush is what explains the tail, independent of machine load.

Measures only; it changes nothing and publishes no README row (``benchmarks/b2_serving.py`` is the published
row); ``--save NAME`` writes the result to ``benchmarks/results/NAME.json``. An A/A run (``--baseline-root`` an
unpacked copy of this worktree's own commit) gives the noise the A/B ratios must beat.

    python -m benchmarks.tail_ab --baseline-root /tmp/base [--rounds 5] [--duration 5] [--concurrency 1 8] [--save N]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from benchmarks.b2_serving import MODEL, _end, _free_ports, _wait_ready
from benchmarks.models import random_forest_onnx
from benchmarks.report import write_result
from benchmarks.wrk import run_wrk
from edge_agent.clock import utc_now
from edge_agent.standalone import install_bundle_file
from fleet_protocol import oip
from fleet_protocol.bundle_file import build_manifest, pack_bundle
from fleet_protocol.timestamps import to_iso
from fleet_server.keys import new_signing_key
from tests.support.mosquitto import start_mosquitto

ROOT = Path(__file__).resolve().parent.parent

# Runs in the agent's process: records GC pauses and telemetry work, writes them out when the agent stops.
_PROBE_MAIN = r"""
import gc, json, sys, time
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig
from edge_agent.telemetry import Telemetry
settings, out = json.loads(sys.argv[1]), sys.argv[2]
events, started = {"gc": [], "flush": [], "heartbeat": []}, {}
def on_gc(phase, info):
    if phase == "start":
        started["gc"] = time.monotonic()
    elif "gc" in started:
        events["gc"].append((started.pop("gc"), time.monotonic(), info["generation"]))
gc.callbacks.append(on_gc)
def timed(name, method):
    def wrapper(self, *args, **kwargs):
        t0 = time.monotonic()
        try:
            return method(self, *args, **kwargs)
        finally:
            events[name].append((t0, time.monotonic()))
    return wrapper
Telemetry.flush = timed("flush", Telemetry.flush)
Telemetry.heartbeat = timed("heartbeat", Telemetry.heartbeat)
agent = Agent(AgentConfig(**settings))
agent.run_forever()
with open(out, "w") as f:
    json.dump({**events, "gc_threshold": gc.get_threshold(), "gc_frozen": gc.get_freeze_count()}, f)
"""


def forest_bundle() -> tuple[bytes, str, dict]:
    """A signed bundle of the forest (bytes), the key that signed it (hex) and a request body's feed."""
    model, feed = random_forest_onnx()
    files = {"model.onnx": model}
    manifest = build_manifest(module=MODEL, version=1, runtime="onnx", model="model.onnx", files=files,
                              created=to_iso(utc_now()))
    key = new_signing_key()
    _, data = pack_bundle(manifest, files, key)
    return data, key.public_key.to_hex(), feed


@contextlib.contextmanager
def probed_agent(root: Path, workdir: Path, *, bundle: bytes, key_hex: str, broker_url: str,
                 interval_s: float) -> Iterator[tuple[str, Path]]:
    """An agent running ``root``'s code; yields its scoring URL and the path its probe writes on exit."""
    state = workdir / "state"
    install_bundle_file(bundle, trusted_key_hex=key_hex, state_dir=state)
    settings = {"device_id": f"tail-{workdir.name}", "state_dir": str(state), "broker_url": broker_url,
                "trusted_keys": [key_hex], "scoring_port": _free_ports(1)[0], "heartbeat_interval_s": interval_s,
                "telemetry_flush_interval_s": interval_s}
    probe, log_path = workdir / "probe.json", workdir / "agent.log"
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT}"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", _PROBE_MAIN, json.dumps(settings), str(probe)], cwd=root,
                                   env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{settings['scoring_port']}"
    try:
        _wait_ready(process, f"{url}/v2/models/{MODEL}/ready", log_path, f"the agent from {root}", 60)
        yield url, probe
    finally:
        _end(process)


def timed_requests(url: str, body: bytes, count: int) -> list[tuple[float, float]]:
    """``count`` POSTs on one keep-alive connection; each one's (start, end) on the monotonic clock."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port))
    spans = []
    for _ in range(count):
        t0 = time.monotonic()
        connection.request("POST", f"/v2/models/{MODEL}/infer", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        spans.append((t0, time.monotonic()))
        if response.status != 200:
            raise RuntimeError(f"{url} answered {response.status}")
    connection.close()
    return spans


def explain(spans: list[tuple[float, float]], probe: dict) -> dict:
    """Which of the slowest 1 % of ``spans`` overlap a collection, a flush or a heartbeat; GC totals."""
    latencies = sorted(t1 - t0 for t0, t1 in spans)
    p99 = latencies[int(len(latencies) * 0.99)]
    window = (spans[0][0], spans[-1][1])
    outliers = [(t0, t1) for t0, t1 in spans if t1 - t0 >= p99]

    def overlapping(intervals: list) -> int:
        return sum(any(a < t1 and b > t0 for a, b, *_ in intervals) for t0, t1 in outliers)

    collections = [e for e in probe["gc"] if window[0] <= e[0] <= window[1]]
    per_gen = {g: [b - a for a, b, gen in collections if gen == g] for g in (0, 1, 2)}
    scale = 10_000 / len(spans)
    return {"requests": len(spans), "p50_ms": statistics.median(latencies) * 1e3, "p99_ms": p99 * 1e3,
            "outliers": len(outliers),
            "outliers_with_gc": overlapping(collections),
            "outliers_with_flush": overlapping(probe["flush"]),
            "outliers_with_heartbeat": overlapping(probe["heartbeat"]),
            "gc_per_10k": {f"gen{g}": {"count": round(len(p) * scale, 1),
                                       "mean_ms": round(statistics.fmean(p) * 1e3, 3) if p else 0.0,
                                       "max_ms": round(max(p) * 1e3, 3) if p else 0.0} for g, p in per_gen.items()},
            "gc_whole_run": {f"gen{g}": sum(1 for e in probe["gc"] if e[2] == g) for g in (0, 1, 2)},
            "gc_whole_run_max_ms": round(max((b - a for a, b, _ in probe["gc"]), default=0) * 1e3, 3),
            "flush_ms_max": round(max((b - a for a, b in probe["flush"]), default=0) * 1e3, 3),
            "gc_threshold": probe["gc_threshold"], "gc_frozen": probe["gc_frozen"]}


def run(roots: dict[str, Path], *, rounds: int, duration_s: float, concurrency: tuple[int, ...],
        probe_requests: int, interval_s: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="tail-ab-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        bundle, key_hex, feed = forest_bundle()
        body = json.dumps(oip.encode_request(feed)).encode()
        broker = start_mosquitto(work / "broker")
        stack.callback(broker.stop)
        agents = stack.enter_context(contextlib.ExitStack())
        sides = {side: agents.enter_context(probed_agent(root, work / side, bundle=bundle, key_hex=key_hex,
                                                        broker_url=broker.url, interval_s=interval_s))
                 for side, root in roots.items()}
        for url, _ in sides.values():
            run_wrk(f"{url}/v2/models/{MODEL}/infer", body, workdir=work / "wrk", connections=max(concurrency),
                    duration_s=2)
        results: dict = {"rounds": rounds, "duration_s": duration_s, "telemetry_interval_s": interval_s,
                         "roots": {k: str(v) for k, v in roots.items()}}
        for c in concurrency:
            raw: dict[str, list] = {side: [] for side in sides}
            for r in range(rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))  # neither side always goes first
                for side in order:
                    raw[side].append(run_wrk(f"{sides[side][0]}/v2/models/{MODEL}/infer", body, workdir=work / "wrk",
                                             connections=c, duration_s=duration_s).as_dict())
            results[f"c{c}"] = {"load_average_1m": round(os.getloadavg()[0], 2)} | {side: {"p99_ms": statistics.median(x["p99_ms"] for x in rows),
                                       "requests_per_s": statistics.median(x["requests_per_s"] for x in rows),
                                       "failed": sum(x["failed"] for x in rows),
                                       "rounds_p99_ms": [round(x["p99_ms"], 3) for x in rows]}
                                for side, rows in raw.items()}
            results[f"c{c}"]["ratio_this_to_baseline"] = {
                k: round(results[f"c{c}"]["this"][k] / results[f"c{c}"]["baseline"][k], 3)
                for k in ("p99_ms", "requests_per_s")}
        spans = {side: timed_requests(url, body, probe_requests) for side, (url, _) in sides.items()}
        agents.close()  # each probe is written as its agent stops
        probes = {side: json.loads(probe_path.read_text()) for side, (_, probe_path) in sides.items()}
        results["explained"] = {side: explain(spans[side], probes[side]) for side in sides}
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-root", type=Path, required=True, help="a checkout of the code to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5, help="seconds of wrk load per round and side")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--probe-requests", type=int, default=20_000, help="timed requests per side for the outliers")
    parser.add_argument("--telemetry-interval", type=float, default=1.0, help="heartbeat and flush interval, s")
    parser.add_argument("--save", metavar="NAME", help="also write benchmarks/results/NAME.json")
    args = parser.parse_args()
    out = run({"baseline": args.baseline_root.resolve(), "this": ROOT}, rounds=args.rounds, duration_s=args.duration,
              concurrency=tuple(args.concurrency), probe_requests=args.probe_requests,
              interval_s=args.telemetry_interval)
    if args.save:
        write_result(args.save, out)
    print(json.dumps(out, indent=1))
