"""B6: how many simulated devices one machine holds with a heartbeat every 30 s, with server CPU and memory.

Server (``edgefleet server run``, its own process), Mosquitto and the
simulator processes (:class:`~simulators.fleet.SimulatedFleet`, real agent
parts, many devices per process on one selectors loop) all run on this
machine. The fleet is ramped up in steps (by default 1,000, 2,500, 5,000 and
10,000 devices); the devices of earlier steps stay connected. Each step is
held, once the server has every device online (it first works through the
step's connect burst: ``server_settled_s``), for ``hold_periods`` heartbeat
periods and then checked on the server's database:

- every device is ``online``;
- every device's stored heartbeats have no gap: their count is what the
  uptime of its newest stored heartbeat implies (one at about 1 s, then one
  per period), and the newest arrived within one period (plus slack) of the
  check.

A step holds when both are true. Recorded per step: connect time of the
step's new devices, server CPU % (of one core, over the hold) and RSS,
broker RSS, simulator RSS per 1,000 devices. The result is the largest step
that held.

    python -m benchmarks.b6_capacity [--steps 1000,2500,5000,10000] [--period 30] [--hold-periods 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.report import update_readme_rows, write_result
from simulators.mqtt_loop import raise_fd_limit
from tests.support.fleet import start_server
from tests.support.mosquitto import start_mosquitto

BROKER_CONFIG = "max_connections -1\n"
DEVICES_PER_PROCESS = 2500
FIRST_BEAT_S = 1  # the telemetry thread writes the first heartbeat about a second after start
SLACK_S = 15.0  # flush interval, queueing and clock granularity on a busy machine
SETTLE_TIMEOUT_S = 300.0


def _simulate(conn, broker_url: str, keys: list[str], root: str, device_ids: list[str], settings: dict,
              seed: int) -> None:
    """Child process: run ``device_ids`` until told to stop; report the connect time first."""
    from simulators.fleet import SimulatedFleet

    raise_fd_limit()
    fleet = SimulatedFleet(broker_url, keys, Path(root), device_ids, settings=settings, seed=seed)
    started = time.perf_counter()
    fleet.start()
    connected = fleet.wait_connected(600)
    conn.send({"connected": bool(connected), "connect_s": time.perf_counter() - started})
    try:
        while (command := conn.recv()) != "stop":
            if command == "stats":
                conn.send(fleet.stats())
    finally:
        fleet.stop()
        conn.send("stopped")


class SimProcess:
    def __init__(self, ctx, broker_url: str, keys: list[str], root: Path, device_ids: list[str], settings: dict,
                 seed: int):
        self.devices = len(device_ids)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_simulate, args=(child, broker_url, keys, str(root), device_ids, settings,
                                                           seed), daemon=True)
        self.process.start()

    def wait_connected(self, timeout_s: float) -> dict:
        if not self.conn.poll(timeout_s):
            raise RuntimeError(f"{self.devices} simulated devices did not connect in {timeout_s:.0f}s")
        return self.conn.recv()

    def rss(self) -> int:
        return psutil.Process(self.process.pid).memory_info().rss

    def stop(self) -> None:
        try:
            self.conn.send("stop")
            self.conn.poll(60)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


def _settle(db_path: Path, device_ids: list[str], timeout_s: float) -> float | None:
    """Seconds until the server has every device online (it works through the connect burst); None if never."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
        try:
            online = conn.execute("SELECT COUNT(*) FROM devices WHERE status = 'online'").fetchone()[0]
        finally:
            conn.close()
        if online >= len(device_ids):
            return time.perf_counter() - started
        time.sleep(1.0)
    return None


def check_server(db_path: Path, device_ids: list[str], period_s: float) -> dict:
    """Online devices and heartbeat continuity, read from the server's database (WAL: beside the server)."""
    wanted = set(device_ids)
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        online = {row[0] for row in conn.execute("SELECT id FROM devices WHERE status = 'online'")} & wanted
        rows = conn.execute(
            "SELECT device_id, COUNT(*), MAX(CAST(json_extract(data, '$.uptime_s') AS INTEGER)), MAX(received) "
            "FROM telemetry WHERE kind = 'heartbeat' GROUP BY device_id").fetchall()
    finally:
        conn.close()
    now = time.time()
    gaps, stale, missing = 0, 0, len(wanted)
    stored = 0
    for device_id, count, uptime, received in rows:
        if device_id not in wanted:
            continue
        missing -= 1
        stored += count
        if count < 1 + max(0, uptime - FIRST_BEAT_S) // int(period_s):
            gaps += 1
        if now - _epoch(received) > period_s + SLACK_S:
            stale += 1
    return {"devices": len(wanted), "online": len(online), "heartbeats_stored": stored,
            "devices_without_heartbeat": missing, "devices_with_gaps": gaps, "devices_stale": stale,
            "held": len(online) == len(wanted) and missing == 0 and gaps == 0 and stale == 0}


def _fits(last: dict, step: int) -> bool:
    """Whether ``step`` devices should fit, at the last step's simulator memory per device, in 80% of what is free."""
    more_mb = last["simulator_rss_mb_per_1k"] / 1000 * (step - last["devices"])
    return more_mb * 2**20 < 0.8 * psutil.virtual_memory().available


def _epoch(iso: str) -> float:
    from fleet_protocol.timestamps import from_iso

    return from_iso(iso).timestamp()


def run(steps: tuple[int, ...] = (1000, 2500, 5000, 10000), *, period_s: float = 30.0, hold_periods: float = 2.0,
        per_process: int = DEVICES_PER_PROCESS, workdir: Path | None = None, publish: bool = True) -> dict:
    raise_fd_limit()
    ctx = mp.get_context("spawn")
    # the agent's default flush interval (5 s), shortened only for periods below it (the smoke test)
    settings = {"heartbeat_interval_s": period_s, "telemetry_flush_interval_s": min(5.0, period_s / 2)}
    results: dict = {"period_s": period_s, "hold_periods": hold_periods, "steps": [], "held_devices": 0,
                     "target_devices": 10_000}
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        broker = start_mosquitto(root / "broker", extra_config=BROKER_CONFIG)
        server = start_server(root, broker.url)
        sims: list[SimProcess] = []
        try:
            keys = [server.signing_key_hex()]
            broker_ps, server_ps = psutil.Process(broker.process.pid), psutil.Process(server.popen.pid)
            device_ids: list[str] = []
            for step in steps:
                if results["steps"] and not _fits(results["steps"][-1], step):
                    results["stopped"] = f"{step} devices would not fit in this machine's free memory"
                    print(results["stopped"], flush=True)
                    break
                new = [f"b6-{i:05d}" for i in range(len(device_ids), step)]
                started = time.perf_counter()
                batch = [SimProcess(ctx, broker.url, keys, root / "devices", new[i:i + per_process], settings,
                                    seed=len(sims) + n) for n, i in enumerate(range(0, len(new), per_process))]
                sims += batch
                reports = [sim.wait_connected(900) for sim in batch]
                connect_s = time.perf_counter() - started
                device_ids += new
                settle_s = _settle(server.data_dir / "fleet.db", device_ids, SETTLE_TIMEOUT_S)
                server_ps.cpu_percent(None)
                time.sleep(period_s * hold_periods)
                server_cpu = server_ps.cpu_percent(None)
                check = check_server(server.data_dir / "fleet.db", device_ids, period_s)
                sim_rss = sum(sim.rss() for sim in sims)
                row = {"devices": step, "new_devices": len(new), "connect_s": connect_s,
                       "server_settled_s": settle_s,
                       "all_connected": all(r["connected"] for r in reports),
                       "server_cpu_percent": server_cpu, "server_rss_mb": server_ps.memory_info().rss / 2**20,
                       "broker_rss_mb": broker_ps.memory_info().rss / 2**20,
                       "simulator_rss_mb_per_1k": sim_rss / 2**20 / (step / 1000),
                       "simulator_processes": len(sims), "machine_cpu_percent": psutil.cpu_percent(None), **check}
                results["steps"].append(row)
                print(f"{step} devices: held={row['held']} online {row['online']} connect {connect_s:.1f}s, settled "
                      f"{settle_s if settle_s is None else round(settle_s, 1)}s, server "
                      f"CPU {server_cpu:.0f}% RSS {row['server_rss_mb']:.0f} MB, broker RSS "
                      f"{row['broker_rss_mb']:.0f} MB, simulator {row['simulator_rss_mb_per_1k']:.0f} MB per 1k",
                      flush=True)
                if not row["held"]:
                    break
                results["held_devices"] = step
        finally:
            for sim in sims:
                sim.stop()
            server.stop()
            broker.stop()
    if publish:
        write_result("B6", results)
        update_readme_rows({"B6": _row(results)})
    return results


def _row(r: dict) -> str:
    held = [s for s in r["steps"] if s["held"]]
    last = held[-1] if held else r["steps"][0]
    return (f"| B6 | devices one 2-core machine holds, heartbeat every {r['period_s']:.0f} s (server + broker + "
            f"simulator on it) | {r['held_devices']:,} devices; server {last['server_cpu_percent']:.0f}% CPU, "
            f"{last['server_rss_mb']:.0f} MB; broker {last['broker_rss_mb']:.0f} MB; simulator "
            f"{last['simulator_rss_mb_per_1k']:.0f} MB/1k | target 10,000 devices | "
            f"{r['held_devices'] / r['target_devices']:.2f}x | ≥ 10,000 | "
            f"{'yes' if r['held_devices'] >= r['target_devices'] else 'no'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="1000,2500,5000,10000", help="device counts to ramp through")
    parser.add_argument("--period", type=float, default=30.0, help="heartbeat period in seconds")
    parser.add_argument("--hold-periods", type=float, default=2.0, help="heartbeat periods to hold each step")
    parser.add_argument("--per-process", type=int, default=DEVICES_PER_PROCESS, help="devices per simulator process")
    args = parser.parse_args()
    run(tuple(int(s) for s in args.steps.split(",")), period_s=args.period, hold_periods=args.hold_periods,
        per_process=args.per_process)
