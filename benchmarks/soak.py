"""Soak: many simulated devices against a real server and Mosquitto for a long while; memory must stay flat.

``--devices`` simulated devices (default 200, all in one child process running
:class:`simulators.fleet.SimulatedFleet`: the real agent parts on one shared MQTT loop) connect to Mosquitto,
send a heartbeat (with per-module stats) every ``--heartbeat-s`` seconds and flush their outbox every
``--flush-s``. The fleet server runs as its own ``edgefleet server run`` process. One real ``edgefleet agent
run`` process with the same settings runs next to them, for comparison. Every device, real or simulated, runs
the ``iris-classifier`` sample module; every ``--score-every-s`` seconds a seeded ``--score-fraction`` of the
simulated devices score a request in process, and the driver scores on the server (cloud OIP) and on the real
agent's local endpoint.

Every ``--sample-s`` seconds it samples the RSS, and its anonymous part, of the server, the simulated-fleet
process, the real agent and Mosquitto. After the warm-up (``--warmup-minutes``, default a quarter of the run, at
most 5 min) it fits a least-squares line to each series and reports its slope in MB/hour. Memory counts as flat
when the anonymous-memory slope would add at most 10% of the process's RSS over 24 hours (see :class:`Series`
for why not the RSS itself). Run it alone on the machine: other processes' memory pressure moves RSS.

    python -m benchmarks.soak [--devices 200] [--minutes 30] [--no-publish]
    python -m benchmarks.soak --minutes 2 --devices 20 --no-publish     # a quick check

With publishing on, it writes ``benchmarks/results/soak.json`` and the ``soak`` row of the README's table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

from benchmarks.report import ROOT, update_readme_rows, write_result
from simulators.devices import DeviceSpec, spawn_agent, write_agent_config
from tests.support.fleet import ADMIN_TOKEN, ServerProcess, start_server
from tests.support.mosquitto import start_mosquitto
from tests.support.net import free_port, wait_for

MB = 1024 * 1024
MODULE = "iris-classifier"
FLAT_FRACTION_PER_DAY = 0.10  # "flat": at most +10% of the RSS over 24 h at the measured slope
REAL_AGENT = "soak-agent"
TAGS = {"soak": "1"}


@dataclass
class SoakSettings:
    devices: int = 200
    minutes: float = 30.0
    sample_s: float = 5.0
    warmup_minutes: float | None = None  # None: a quarter of the run, at most 5 minutes
    heartbeat_s: float = 5.0
    flush_s: float = 5.0  # how often each device publishes what its outbox holds
    score_every_s: float = 10.0
    score_fraction: float = 0.1  # share of the simulated devices that score a request each round
    seed: int = 0

    @property
    def warmup_s(self) -> float:
        if self.warmup_minutes is not None:
            return self.warmup_minutes * 60
        return min(300.0, self.minutes * 60 / 4)


@dataclass
class Series:
    """Memory samples of one process: seconds since the start, RSS and its anonymous part, in megabytes.

    RSS also counts file-backed pages (the interpreter, shared libraries, mapped models), which the kernel
    drops and reloads under memory pressure from other processes; anonymous memory (``rss - shared``: the
    heap, stacks, arenas) is what a leak grows and, without swap, what nothing else moves. Both are fitted;
    the verdict on flatness is taken on the anonymous part.
    """

    name: str
    pid: int
    times_s: list[float] = field(default_factory=list)
    rss_mb: list[float] = field(default_factory=list)
    anon_mb: list[float] = field(default_factory=list)

    def sample(self, now_s: float) -> None:
        try:
            memory = psutil.Process(self.pid).memory_info()
        except psutil.NoSuchProcess:
            raise RuntimeError(f"the {self.name} process ({self.pid}) died during the soak") from None
        self.times_s.append(round(now_s, 2))
        self.rss_mb.append(round(memory.rss / MB, 2))
        self.anon_mb.append(round((memory.rss - getattr(memory, "shared", 0)) / MB, 2))

    def summary(self, warmup_s: float) -> dict:
        kept = [i for i, t in enumerate(self.times_s) if t >= warmup_s]
        if len(kept) < 2:
            raise RuntimeError(f"only {len(kept)} sample(s) of {self.name} after the warm-up: run longer")
        times = [self.times_s[i] for i in kept]
        rss, anon = [self.rss_mb[i] for i in kept], [self.anon_mb[i] for i in kept]
        rss_slope, anon_slope = slope_mb_per_hour(times, rss), slope_mb_per_hour(times, anon)
        return {"pid": self.pid, "samples_after_warmup": len(kept), "rss_after_warmup_mb": rss[0],
                "rss_end_mb": rss[-1], "rss_max_mb": max(rss), "slope_mb_per_hour": round(rss_slope, 3),
                "anon_after_warmup_mb": anon[0], "anon_end_mb": anon[-1],
                "anon_slope_mb_per_hour": round(anon_slope, 3),
                "flat": anon_slope * 24 <= FLAT_FRACTION_PER_DAY * rss[0]}


def slope_mb_per_hour(times_s: list[float], values_mb: list[float]) -> float:
    """Least-squares slope of ``values_mb`` over ``times_s``, in MB per hour."""
    n = len(times_s)
    if n < 2:
        raise ValueError("a slope needs at least two samples")
    mean_t, mean_v = sum(times_s) / n, sum(values_mb) / n
    spread = sum((t - mean_t) ** 2 for t in times_s)
    if spread == 0:
        raise ValueError("a slope needs samples at different times")
    per_second = sum((t - mean_t) * (v - mean_v) for t, v in zip(times_s, values_mb)) / spread
    return per_second * 3600


# --- the simulated devices, in a process of their own ----------------------------------------------------------

def _fleet_process(conn, broker_url: str, keys: list[str], root_dir: str, device_ids: list[str], tags: dict,
                   settings: dict, seed: int, score_every_s: float, score_fraction: float) -> None:
    """Run a :class:`SimulatedFleet`; score on a seeded share of its devices every ``score_every_s``.

    Scoring starts when the parent sends ``"score"`` (once the module is installed everywhere). Every command
    (``"score"``, ``"stats"`` or ``"stop"``) is answered with the fleet's stats and the scoring counts;
    ``"stop"`` then stops the fleet.
    """
    import numpy as np

    from simulators.fleet import SimulatedFleet

    sample = _sample_request()["inputs"][0]
    inputs = {sample["name"]: np.asarray(sample["data"], dtype=np.float32).reshape(sample["shape"])}
    rng = random.Random(f"{seed}:scoring")
    scoring: dict = {"ok": 0, "failed": 0, "errors": {}}
    fleet = SimulatedFleet(broker_url, keys, Path(root_dir), device_ids, profiles=[("generic-cpu", 1)], tags=tags,
                           settings=settings, seed=seed)
    try:
        fleet.start()
        conn.send(fleet.wait_connected(300))
        next_score: float | None = None  # None: not scoring yet
        while True:
            if conn.poll(None if next_score is None else max(0.0, next_score - time.monotonic())):
                command = conn.recv()
                if command == "score" and next_score is None:
                    next_score = time.monotonic()
                conn.send({**fleet.stats(), "scoring": {**scoring, "errors": dict(scoring["errors"])}})
                if command == "stop":
                    return
                continue
            devices = list(fleet.devices.values())
            for device in rng.sample(devices, max(1, round(len(devices) * score_fraction))):
                try:
                    device.infer(MODULE, inputs)
                    scoring["ok"] += 1
                except Exception as exc:  # noqa: BLE001 - counted by kind; the first of each kind is kept
                    scoring["failed"] += 1
                    scoring["errors"].setdefault(type(exc).__name__, f"{device.device_id}: {exc}"[:300])
            next_score += score_every_s
    finally:
        fleet.stop()


class FleetProcess:
    """The simulated devices in a spawned child process, so their RSS is measured apart from the driver's."""

    def __init__(self, broker_url: str, keys: list[str], root_dir: Path, device_ids: list[str], tags: dict,
                 settings: dict, seed: int, score_every_s: float, score_fraction: float):
        self.devices = len(device_ids)
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(target=_fleet_process, name="soak-fleet", daemon=True,
                                       args=(child, broker_url, keys, str(root_dir), device_ids, tags, settings,
                                             seed, score_every_s, score_fraction))
        self.process.start()

    def wait_connected(self, timeout_s: float) -> None:
        if not self._conn.poll(timeout_s):
            raise RuntimeError(f"the simulated fleet did not start within {timeout_s:g}s")
        connected = self._conn.recv()
        if connected != self.devices:
            raise RuntimeError(f"only {connected} of {self.devices} simulated devices connected")

    def stats(self, command: str = "stats") -> dict:
        """The fleet's stats; ``command="score"`` also starts the periodic scoring."""
        self._conn.send(command)
        if not self._conn.poll(60):
            raise RuntimeError("the simulated fleet did not answer")
        return self._conn.recv()

    def stop(self) -> dict:
        stats: dict = {}
        if self.process.is_alive():
            self._conn.send("stop")
            if self._conn.poll(120):
                stats = self._conn.recv()
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        return stats


# --- load and checks ---------------------------------------------------------------------------------------------

def _sample_request() -> dict:
    return json.loads((ROOT / "modules" / MODULE / "sample.json").read_text())


def _score(url: str, body: dict, headers: dict[str, str] | None = None) -> bool:
    try:
        response = httpx.post(f"{url}/v2/models/{MODULE}/infer", json=body, headers=headers, timeout=10)
    except httpx.TransportError:
        return False
    return response.status_code == 200


def _telemetry_rows(server: ServerProcess) -> tuple[int, int]:
    """``(telemetry rows stored, devices they came from)``, read from the server's database."""
    with sqlite3.connect(f"file:{server.data_dir / 'fleet.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute("SELECT COUNT(*), COUNT(DISTINCT device_id) FROM telemetry").fetchone()


def _deploy_module(server: ServerProcess) -> int:
    """Build the sample module and deploy it to every device tagged ``soak``; return its version."""
    from edgefleet_cli.client import ApiClient
    from edgefleet_cli.commands.module import build_module

    client = ApiClient(server.url, ADMIN_TOKEN)
    version = build_module(client, ROOT / "modules" / MODULE)["version"]
    client.post("/api/deployments", json={"module": MODULE, "version": version, "selector": TAGS})
    return version


def _start_real_agent(workdir: Path, broker_url: str, key: str, settings: SoakSettings):
    """``(Popen, scoring URL)`` of one ``edgefleet agent run`` with the simulated devices' settings."""
    port = free_port()
    spec = DeviceSpec(REAL_AGENT, broker_url, [key], port, "generic-cpu", TAGS, _agent_settings(settings))
    device_dir = workdir / REAL_AGENT
    agent = spawn_agent(write_agent_config(device_dir, spec), device_dir / "agent.log")
    return agent, f"http://127.0.0.1:{port}"


def _agent_settings(settings: SoakSettings) -> dict:
    return {"heartbeat_interval_s": settings.heartbeat_s, "telemetry_flush_interval_s": settings.flush_s}


def run(settings: SoakSettings | None = None, *, workdir: Path | None = None, publish: bool = True,
        progress: bool = False) -> dict:
    """Run the soak and return its result (written to ``benchmarks/results/soak.json`` when ``publish``)."""
    settings = settings or SoakSettings()
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="edgefleet-soak-") as tmp:
            return run(settings, workdir=Path(tmp), publish=publish, progress=progress)
    broker = start_mosquitto(workdir / "mosquitto")
    server = agent = fleet = None
    try:
        server = start_server(workdir, broker.url)
        key = server.signing_key_hex()
        agent, agent_url = _start_real_agent(workdir, broker.url, key, settings)
        device_ids = [f"sim-{i:04d}" for i in range(settings.devices)]
        fleet = FleetProcess(broker.url, [key], workdir / "fleet", device_ids, TAGS, _agent_settings(settings),
                             settings.seed, settings.score_every_s, settings.score_fraction)
        fleet.wait_connected(300)
        version = _deploy_module(server)
        wait_for(lambda: fleet.stats()["modules"].get(f"{MODULE}@{version}") == settings.devices, timeout=600,
                 interval=2, what=f"every simulated device to run {MODULE} v{version}")
        body = _sample_request()
        wait_for(lambda: _score(agent_url, body), timeout=120, interval=0.5,
                 what=f"the real agent to serve {MODULE}")
        fleet.stats("score")
        result = _soak(settings, server, broker, agent, agent_url, fleet, body, progress)
        result["fleet"] = fleet.stop()
        fleet = None
        result["scoring"]["simulated_ok"] = result["fleet"]["scoring"]["ok"]
        result["scoring"]["simulated_failed"] = result["fleet"]["scoring"]["failed"]
        result["scoring"]["simulated_errors"] = result["fleet"]["scoring"]["errors"]
        result["telemetry_rows_stored"], result["telemetry_devices"] = _telemetry_rows(server)
    finally:
        if fleet is not None:
            fleet.stop()
        if agent is not None:
            agent.terminate()
            agent.wait(15)
        if server is not None:
            server.stop()
        broker.stop()
    if publish:
        write_result("soak", result)
        update_readme_rows({"soak": readme_row(result)})
    return result


def _soak(settings: SoakSettings, server: ServerProcess, broker, agent, agent_url: str, fleet: FleetProcess,
          body: dict, progress: bool) -> dict:
    series = [Series("server", server.popen.pid), Series("simulated fleet", fleet.process.pid),
              Series("real agent", agent.pid), Series("mosquitto", broker.process.pid)]
    scores = {"server_ok": 0, "server_failed": 0, "agent_ok": 0, "agent_failed": 0}
    token = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    started = time.monotonic()
    end = started + settings.minutes * 60
    next_sample = next_score = started
    while (now := time.monotonic()) < end:
        if now >= next_score:
            for where, url, headers in (("server", server.url, token), ("agent", agent_url, None)):
                scores[f"{where}_{'ok' if _score(url, body, headers) else 'failed'}"] += 1
            next_score += settings.score_every_s
        if now >= next_sample:
            for s in series:
                s.sample(now - started)
            if progress:
                print(f"{now - started:7.0f}s  " + "  ".join(f"{s.name} {s.rss_mb[-1]:.1f} MB "
                                                             f"(anon {s.anon_mb[-1]:.1f})" for s in series), flush=True)
            next_sample += settings.sample_s
        time.sleep(max(0.0, min(next_sample, next_score, end) - time.monotonic()))
    return {"settings": {**asdict(settings), "warmup_s": settings.warmup_s},
            "flat_rule": f"anonymous-memory slope x 24 h <= {FLAT_FRACTION_PER_DAY:.0%} of the RSS after warm-up",
            "processes": {s.name: s.summary(settings.warmup_s) for s in series},
            "series": {s.name: {"t_s": s.times_s, "rss_mb": s.rss_mb, "anon_mb": s.anon_mb} for s in series},
            "scoring": scores}


def readme_row(result: dict) -> str:
    s, p = result["settings"], result["processes"]

    def figure(name: str) -> str:
        return (f"{name} {p[name]['anon_slope_mb_per_hour']:+.2f} MB/h anon, {p[name]['slope_mb_per_hour']:+.2f} "
                f"MB/h RSS ({p[name]['rss_after_warmup_mb']:.0f} MB)")

    flat = all(p[name]["flat"] for name in ("server", "simulated fleet", "real agent"))
    return (f"| soak | memory slope after a {s['warmup_s'] / 60:g}-min warm-up: {s['devices']} simulated devices "
            f"+ 1 real agent, {s['minutes']:g} min, heartbeat {s['heartbeat_s']:g} s | {figure('server')}; "
            f"{figure('simulated fleet')}; {figure('real agent')} | {figure('mosquitto')} | — | "
            f"anon slope ≤ +10% of the RSS per 24 h | {'yes' if flat else 'no'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = SoakSettings()
    parser.add_argument("--devices", type=int, default=defaults.devices)
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--sample-s", type=float, default=defaults.sample_s)
    parser.add_argument("--warmup-minutes", type=float, default=None)
    parser.add_argument("--heartbeat-s", type=float, default=defaults.heartbeat_s)
    parser.add_argument("--flush-s", type=float, default=defaults.flush_s)
    parser.add_argument("--score-every-s", type=float, default=defaults.score_every_s)
    parser.add_argument("--score-fraction", type=float, default=defaults.score_fraction)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-publish", action="store_true", help="print only; write no JSON and no README row")
    args = parser.parse_args()
    settings = SoakSettings(devices=args.devices, minutes=args.minutes, sample_s=args.sample_s,
                            warmup_minutes=args.warmup_minutes, heartbeat_s=args.heartbeat_s, flush_s=args.flush_s,
                            score_every_s=args.score_every_s, score_fraction=args.score_fraction, seed=args.seed)
    result = run(settings, publish=not args.no_publish, progress=True)
    for name, summary in result["processes"].items():
        print(f"{name:16} RSS {summary['rss_after_warmup_mb']:7.1f} → {summary['rss_end_mb']:7.1f} MB "
              f"({summary['slope_mb_per_hour']:+7.2f} MB/h)  anon {summary['anon_after_warmup_mb']:7.1f} → "
              f"{summary['anon_end_mb']:7.1f} MB ({summary['anon_slope_mb_per_hour']:+7.2f} MB/h)  "
              f"{'flat' if summary['flat'] else 'GROWING'}")
    print(f"scoring {result['scoring']}; {result['telemetry_rows_stored']} telemetry rows stored from "
          f"{result['telemetry_devices']} devices")
    if settings.minutes - settings.warmup_s / 60 < 15:
        print("note: under 15 minutes after the warm-up the slope is a smoke check, not a verdict on flatness")


if __name__ == "__main__":
    main()
