"""B6: how many simulated devices one machine holds with a heartbeat every 30 s, and what stops it holding more.

Server (``edgefleet server run``, its own process), Mosquitto and the
simulator processes (:class:`~simulators.fleet.SimulatedFleet`, real agent
parts, many devices per process on one selectors loop) all run on this
machine, on loopback only. The fleet is ramped up: first through ``steps``
(by default 1,000, 2,500, 5,000 and 10,000 devices), then by ``then_every``
more devices per step, until a step does not hold or a limit is reached; the
devices of earlier steps stay connected. The 10,000-device target is a line
in the table, not the end of the ramp.

Each step is held, once the server has every device online (it first works
through the step's connect burst: ``server_settled_s``), for
``hold_periods`` heartbeat periods and then checked on the server's database:

- every device is ``online``;
- every device's stored heartbeats have no gap: their count is what the
  uptime of its newest stored heartbeat implies (one at about 1 s, then one
  per period), and the newest arrived within one period (plus slack) of the
  check;
- heartbeat delay (stored ``received`` minus the device's ``ts``, whole
  seconds, over the heartbeats stored during the hold): its 99th percentile
  is at most ``delay_bound_s`` (the flush interval plus ``SLACK_S``).

A step holds when all are true. Before a step starts, the ramp stops if it
would not fit: the simulators' memory at the last step's cost per device in
80% of what is free, the broker's connections and the simulators' files
(about 4 per device) under their open-file limits, or the step's expected
duration within ``max_minutes``. Recorded per step: connect time of the
step's new devices, CPU % (of one core, over the hold) of the server, the
broker and the simulators together, RSS of each, open files. The result is
the ceiling (the largest step that held) and what bounded it (``stopped``).

    python -m benchmarks.b6_capacity [--steps 1000,2500,5000,10000] [--then-every 5000] [--max-devices 100000]
                                     [--max-minutes 30] [--period 30] [--hold-periods 2] [--fd-limit N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sqlite3
import statistics
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
FILES_PER_DEVICE = 4  # in a simulator: its socket and its SQLite outbox (database, WAL, shared memory)
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
        self.ps = psutil.Process(self.process.pid)

    def wait_connected(self, timeout_s: float) -> dict:
        if not self.conn.poll(timeout_s):
            return {"connected": False, "connect_s": None}
        return self.conn.recv()

    def stop(self) -> None:
        try:
            self.conn.send("stop")
            self.conn.poll(60)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()


class CpuMeter:
    """CPU % of one core, since the last :meth:`start`, summed over a group of processes."""

    def __init__(self, processes: list[psutil.Process]):
        self.processes = processes

    def start(self) -> None:
        self._start = (time.monotonic(), self._cpu())

    def percent(self) -> float:
        now, cpu = time.monotonic(), self._cpu()
        return 100 * (cpu - self._start[1]) / (now - self._start[0])

    def _cpu(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self.processes)


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


def check_server(db_path: Path, device_ids: list[str], period_s: float, *, since: str, delay_bound_s: float) -> dict:
    """Online devices, heartbeat continuity and delay, read from the server's database (WAL: beside the server)."""
    wanted = set(device_ids)
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        online = {row[0] for row in conn.execute("SELECT id FROM devices WHERE status = 'online'")} & wanted
        rows = conn.execute(
            "SELECT device_id, COUNT(*), MAX(CAST(json_extract(data, '$.uptime_s') AS INTEGER)), MAX(received) "
            "FROM telemetry WHERE kind = 'heartbeat' GROUP BY device_id").fetchall()
        delays = [row[0] for row in conn.execute(
            "SELECT ROUND((julianday(received) - julianday(ts)) * 86400) FROM telemetry "
            "WHERE kind = 'heartbeat' AND received >= ?", (since,))]
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
    delay = _percentiles(delays)
    failed = [name for name, bad in (("devices offline", len(online) < len(wanted)),
                                     ("devices without heartbeat", missing > 0), ("heartbeat gaps", gaps > 0),
                                     ("stale heartbeats", stale > 0),
                                     (f"heartbeat delay p99 over {delay_bound_s:g} s", delay["p99"] > delay_bound_s))
              if bad]
    return {"devices": len(wanted), "online": len(online), "heartbeats_stored": stored,
            "devices_without_heartbeat": missing, "devices_with_gaps": gaps, "devices_stale": stale,
            "heartbeat_delay_s": delay, "failed": failed, "held": not failed}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50": float("inf"), "p99": float("inf"), "max": float("inf")}
    ordered = sorted(values)
    return {"count": len(ordered), "p50": statistics.median(ordered),
            "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], "max": ordered[-1]}


def why_not(last: dict, step: int, *, elapsed_s: float, max_s: float, broker_files: int, broker_limit: int,
            sim_limit: int, per_process: int) -> str | None:
    """Why the ramp should not try ``step`` devices after ``last`` (None: try it)."""
    more = step - last["devices"]
    more_mb = last["simulator_rss_mb_per_1k"] / 1000 * more
    if more_mb * 2**20 > 0.8 * psutil.virtual_memory().available:
        return f"memory: {step:,} devices would not fit in 80% of this machine's free memory"
    if broker_files + more > broker_limit:
        return f"file descriptors: {step:,} connections would pass the broker's open-file limit of {broker_limit:,}"
    if min(per_process, step) * FILES_PER_DEVICE > sim_limit:
        return f"file descriptors: {per_process:,} devices per simulator pass its open-file limit of {sim_limit:,}"
    if elapsed_s + 1.5 * last["step_s"] * step / last["devices"] > max_s:
        return f"time: {step:,} devices would not finish within the run's {max_s / 60:g} minutes"
    return None


def _epoch(iso: str) -> float:
    from fleet_protocol.timestamps import from_iso

    return from_iso(iso).timestamp()


def _now_iso() -> str:
    from fleet_protocol.timestamps import to_iso
    from fleet_server.clock import utc_now

    return to_iso(utc_now())


def ramp(steps: tuple[int, ...], then_every: int, max_devices: int) -> list[int]:
    """The device counts to try: ``steps``, then ``then_every`` more each time, up to ``max_devices``."""
    counts = [s for s in steps if s <= max_devices]
    while then_every > 0 and counts and counts[-1] + then_every <= max_devices:
        counts.append(counts[-1] + then_every)
    return counts


def _set_fd_limit(limit: int | None) -> int:
    """Raise the open-file limit (hard too, which needs privilege) so children inherit it; return the soft limit."""
    if limit:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        except (ValueError, OSError) as exc:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            raise SystemExit(f"--fd-limit {limit}: cannot raise the open-file limit past its hard limit of {hard} "
                             f"here ({exc}; needs CAP_SYS_RESOURCE)") from None
    return raise_fd_limit()


def run(steps: tuple[int, ...] = (1000, 2500, 5000, 10000), *, then_every: int = 5000, max_devices: int = 100_000,
        max_minutes: float = 30.0, period_s: float = 30.0, hold_periods: float = 2.0,
        per_process: int = DEVICES_PER_PROCESS, fd_limit: int | None = None, workdir: Path | None = None,
        publish: bool = True) -> dict:
    fd_soft = _set_fd_limit(fd_limit)
    ctx = mp.get_context("spawn")
    # the agent's default flush interval (5 s), shortened only for periods below it (the smoke test)
    settings = {"heartbeat_interval_s": period_s, "telemetry_flush_interval_s": min(5.0, period_s / 2)}
    delay_bound_s = settings["telemetry_flush_interval_s"] + SLACK_S
    results: dict = {"period_s": period_s, "hold_periods": hold_periods, "steps": [], "held_devices": 0,
                     "target_devices": 10_000, "ramp": ramp(steps, then_every, max_devices),
                     "max_minutes": max_minutes, "open_file_limit": fd_soft, "delay_bound_s": delay_bound_s,
                     "stopped": "the ramp reached its last step"}
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        broker = start_mosquitto(root / "broker", extra_config=BROKER_CONFIG)
        server = start_server(root, broker.url)
        sims: list[SimProcess] = []
        try:
            keys = [server.signing_key_hex()]
            broker_ps, server_ps = psutil.Process(broker.process.pid), psutil.Process(server.popen.pid)
            device_ids: list[str] = []
            for step in results["ramp"]:
                if results["steps"]:
                    reason = why_not(results["steps"][-1], step, elapsed_s=time.monotonic() - began,
                                     max_s=max_minutes * 60, broker_files=broker_ps.num_fds(),
                                     broker_limit=broker_ps.rlimit(resource.RLIMIT_NOFILE)[0], sim_limit=fd_soft,
                                     per_process=per_process)
                    if reason:
                        results["stopped"] = f"before {step:,} devices: {reason}"
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
                meters = {"server": CpuMeter([server_ps]), "broker": CpuMeter([broker_ps]),
                          "simulators": CpuMeter([sim.ps for sim in sims])}
                for meter in meters.values():
                    meter.start()
                psutil.cpu_percent(None)
                since = _now_iso()
                time.sleep(period_s * hold_periods)
                cpu = {name: meter.percent() for name, meter in meters.items()}
                check = check_server(server.data_dir / "fleet.db", device_ids, period_s, since=since,
                                     delay_bound_s=delay_bound_s)
                if not all(r["connected"] for r in reports):
                    check["failed"].insert(0, "simulated devices did not all connect in 900 s")
                    check["held"] = False
                sim_rss = sum(sim.ps.memory_info().rss for sim in sims)
                row = {"devices": step, "new_devices": len(new), "connect_s": connect_s,
                       "server_settled_s": settle_s, "all_connected": all(r["connected"] for r in reports),
                       "cpu_percent": cpu, "machine_cpu_percent": psutil.cpu_percent(None),
                       "load_average_1m": psutil.getloadavg()[0],
                       "server_rss_mb": server_ps.memory_info().rss / 2**20,
                       "broker_rss_mb": broker_ps.memory_info().rss / 2**20,
                       "simulator_rss_mb_per_1k": sim_rss / 2**20 / (step / 1000),
                       "broker_open_files": broker_ps.num_fds(),
                       "simulator_open_files": sum(sim.ps.num_fds() for sim in sims),
                       "simulator_processes": len(sims), "step_s": time.perf_counter() - started, **check}
                results["steps"].append(row)
                print(f"{step} devices: held={row['held']} {row['failed']} online {row['online']} connect "
                      f"{connect_s:.1f}s, settled {settle_s if settle_s is None else round(settle_s, 1)}s, delay p99 "
                      f"{row['heartbeat_delay_s']['p99']}s, CPU server {cpu['server']:.0f}% broker "
                      f"{cpu['broker']:.0f}% simulators {cpu['simulators']:.0f}%, RSS server "
                      f"{row['server_rss_mb']:.0f} MB broker {row['broker_rss_mb']:.0f} MB, simulator "
                      f"{row['simulator_rss_mb_per_1k']:.0f} MB per 1k", flush=True)
                if not row["held"]:
                    results["stopped"] = f"at {step:,} devices: {', '.join(row['failed'])}"
                    break
                results["held_devices"] = step
        finally:
            for sim in sims:
                sim.stop()
            server.stop()
            broker.stop()
    results["minutes"] = (time.monotonic() - began) / 60
    if publish:
        write_result("B6", results)
        update_readme_rows({"B6": _row(results)})
    return results


def _row(r: dict) -> str:
    held = [s for s in r["steps"] if s["held"]]
    last = held[-1] if held else r["steps"][0]
    cpu, failed = last["cpu_percent"], r["steps"][-1]
    machine = ("" if failed["held"] else f", {failed['devices_with_gaps']:,} devices with gaps, machine CPU "
               f"{failed['machine_cpu_percent']:.0f}%, load average {failed['load_average_1m']:.0f}")
    return (f"| B6 | devices one 2-core machine holds, heartbeat every {r['period_s']:.0f} s (server + broker + "
            f"simulator on it), ramped until something gives | {r['held_devices']:,} devices held (stopped "
            f"{r['stopped']}{machine}); at {last['devices']:,}: heartbeat delay p99 "
            f"{last['heartbeat_delay_s']['p99']:.0f} s, "
            f"CPU server {cpu['server']:.0f}%, broker {cpu['broker']:.0f}%, simulators {cpu['simulators']:.0f}%; "
            f"RSS server {last['server_rss_mb']:.0f} MB, broker {last['broker_rss_mb']:.0f} MB, simulator "
            f"{last['simulator_rss_mb_per_1k']:.0f} MB/1k | target 10,000 devices | "
            f"{r['held_devices'] / r['target_devices']:.2f}x | ≥ 10,000 | "
            f"{'yes' if r['held_devices'] >= r['target_devices'] else 'no'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="1000,2500,5000,10000", help="device counts to ramp through first")
    parser.add_argument("--then-every", type=int, default=5000, help="devices added per step after --steps (0: stop)")
    parser.add_argument("--max-devices", type=int, default=100_000, help="the ramp's last possible step")
    parser.add_argument("--max-minutes", type=float, default=30.0, help="no step starts that would end after this")
    parser.add_argument("--period", type=float, default=30.0, help="heartbeat period in seconds")
    parser.add_argument("--hold-periods", type=float, default=2.0, help="heartbeat periods to hold each step")
    parser.add_argument("--per-process", type=int, default=DEVICES_PER_PROCESS, help="devices per simulator process")
    parser.add_argument("--fd-limit", type=int, default=None,
                        help="open-file limit (soft and hard; raising the hard one needs root) for broker and "
                             "simulators; default: the hard limit this shell has")
    args = parser.parse_args()
    out = run(tuple(int(s) for s in args.steps.split(",")), then_every=args.then_every,
              max_devices=args.max_devices, max_minutes=args.max_minutes, period_s=args.period,
              hold_periods=args.hold_periods, per_process=args.per_process, fd_limit=args.fd_limit)
    print(f"ceiling {out['held_devices']:,} devices; stopped {out['stopped']}; {out['minutes']:.1f} min")
