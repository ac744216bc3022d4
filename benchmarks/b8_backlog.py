"""B8: backlog drain after a broker outage vs the server's ingest capacity (B3's measure); zero loss.

Simulated devices made of the agent's telemetry parts (see
:mod:`benchmarks.telemetry_rig`: Outbox, Telemetry, MqttLink on one MqttLoop,
in a child process) write ``rate`` records per second each into their
outboxes and flush them every ``telemetry_flush_interval_s`` (the agent's
default, 5 s) through a real Mosquitto to a real server. The run:

0. the reference: the server's ingest capacity, measured as B3 measures it
   (bare publishers of 500-record batches → the real server → SQLite, the
   ``server_only`` side of :mod:`benchmarks.b3_telemetry`), ``capacity_rounds``
   times on the same broker in the same invocation, median; with
   ``capacity_rounds=0`` the median of the latest ``results/B3.json`` instead
   (its date is recorded);
1. warm-up, then the steady ingest rate: rows the server stored per second
   over a whole number of flush intervals (the rate records are written at:
   recorded, not the reference, since any drain at all beats it);
2. Mosquitto stopped for ``outage_min`` minutes; the devices keep writing;
3. Mosquitto restarted on the same port (its persistence keeps the server's
   session); the drain rate is the backlog (every record written before the
   restart and not yet stored) over the time from the restart until each
   device's part of it is stored, reconnect back-off included (the device
   loop waits up to 30 s times a jitter of up to 1.5 between attempts, so
   the last device is often back only 30-45 s after the restart); recorded
   with it: restart → first row, → last device back, → drained, and the
   peak drain rate over one flush interval (the pace once connected);
4. the devices stop as the agent does (a last heartbeat and flush), and every
   record any outbox ever held must be a row exactly once.

The ratio is the drain rate over the capacity (target 0.8x): how close the
fleet comes to the server's own speed after an outage.

What bounds the drain: first the reconnect back-off; then a device has at
most ``MAX_INFLIGHT_BATCHES`` batches of ``MAX_TELEMETRY_RECORDS`` in flight,
and each PUBACK wakes the next flush while a backlog remains, so the broker's
and the server's speed set the pace, not the flush interval.

    python -m benchmarks.b8_backlog [--outage-min 10] [--devices 20] [--rate 20] [--steady-s 60]
                                    [--capacity-rounds 3]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.b3_telemetry import measure_edgefleet
from benchmarks.report import RESULTS, update_readme_rows, write_result
from benchmarks.telemetry_rig import DeviceProcess, DeviceSettings, RowCounter, loss_check, start_server
from tests.support.mosquitto import start_mosquitto
from tests.support.redelivery import telemetry_counts


class Timeline:
    """Rows stored over time, sampled from the server's database."""

    def __init__(self, counter: RowCounter, origin: float):
        self.counter, self.origin = counter, origin
        self.samples: list[tuple[float, int]] = []

    def sample(self) -> tuple[float, int]:
        now, rows = time.monotonic(), self.counter.stored()
        self.samples.append((round(now - self.origin, 3), rows))
        return now, rows

    def watch(self, seconds: float, every_s: float = 1.0) -> tuple[float, int]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(every_s, max(0.0, end - time.monotonic())))
            self.sample()
        return self.sample()

    def until(self, last_seq: dict[str, int], *, timeout_s: float,
              every_s: float = 0.05) -> tuple[tuple[float, int], float | None]:
        """Sample until every device's records up to ``last_seq[device]`` are stored.

        Returns that sample and when the first new row was seen. The exact per-device
        count runs only once the cheap total says it can be reached.
        """
        target = sum(last_seq.values())
        start_rows, first_new = self.counter.stored(), None
        deadline = time.monotonic() + timeout_s
        while True:
            now, stored = self.sample()
            if first_new is None and stored > start_rows:
                first_new = now
            if stored >= target and self.counter.stored_upto(last_seq) >= target:
                return (now, stored), first_new
            if now > deadline:
                raise RuntimeError(f"not drained: {self.counter.stored_upto(last_seq)} of {target} records stored "
                                   f"after {timeout_s}s")
            time.sleep(every_s)

    def peak_rate(self, start: float, end: float, window_s: float) -> float:
        """Highest rows/s over any ``window_s`` between two monotonic times (one flush interval: the capacity)."""
        points = [(t + self.origin, rows) for t, rows in self.samples if start <= t + self.origin <= end]
        best, j = 0.0, 0
        for i, (t_end, rows_end) in enumerate(points):
            while points[j][0] < t_end - window_s:
                j += 1
            if t_end - points[j][0] >= window_s / 2:
                best = max(best, (rows_end - points[j][1]) / (t_end - points[j][0]))
        return best

    def thinned(self, step_s: float = 1.0) -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        for t, rows in self.samples:
            if not out or t - out[-1][0] >= step_s:
                out.append((t, rows))
        return out


def _written(proc: DeviceProcess) -> dict[str, int]:
    """Each device's highest seq so far: every record it has written."""
    return {device: r["last_seq"] for device, r in proc.command("report", "report").items()}


def ingest_capacity(broker, root: Path, rounds: int, *, devices: int = 20, records: int = 2000) -> dict:
    """The server's ingest capacity in records/s: B3's server-only side, median of ``rounds``; 0: B3's results."""
    if rounds > 0:
        rates = [measure_edgefleet(broker, root / f"capacity-{n}", devices, records, agents=False)["records_per_s"]
                 for n in range(rounds)]
        return {"records_per_s": statistics.median(rates), "rounds": rates, "source": "measured in this run",
                "devices": devices, "records_per_device": records}
    b3 = json.loads((RESULTS / "B3.json").read_text())
    return {"records_per_s": b3["median_records_per_s"]["server_only"], "source": "results/B3.json",
            "measured": b3["measured"], "devices": b3["devices"], "records_per_device": b3["records_per_device"]}


def run(devices: int = 20, rate: float = 20.0, steady_s: float = 60.0, outage_min: float = 10.0,
        flush_interval_s: float = 5.0, *, capacity_rounds: int = 3, workdir: Path | None = None,
        publish: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = workdir or Path(tmp)
        broker = start_mosquitto(root / "broker")
        capacity = ingest_capacity(broker, root, capacity_rounds)
        server = start_server(root / "server", broker)
        counter = RowCounter(root / "server" / "fleet.db")
        proc = None
        try:
            proc = DeviceProcess(DeviceSettings("edgefleet", broker.host, broker.port, str(root / "devices"), devices,
                                                0, rate_per_s=rate, flush_interval_s=flush_interval_s))
            timeline = Timeline(counter, proc.command("go", "started"))
            timeline.watch(2 * flush_interval_s + 1)  # warm-up: every device flushed twice
            window = max(1, round(steady_s / flush_interval_s)) * flush_interval_s  # whole flush intervals
            t0, rows0 = timeline.sample()
            t1, rows1 = timeline.watch(window)
            steady = (rows1 - rows0) / (t1 - t0)

            broker.stop()
            timeline.watch(outage_min * 60)
            backlog_end = _written(proc)  # every record written before the restart
            broker.start()
            up, rows_up = timeline.sample()
            (drained, _), first_row = timeline.until(backlog_end, timeout_s=max(600.0, outage_min * 60))
            backlog = sum(backlog_end.values()) - rows_up
            reconnected = max(r["last_connect"] for r in proc.command("report", "report").values())
            drain = backlog / (drained - up)
            peak = timeline.peak_rate(up, drained, flush_interval_s)

            proc.command("halt", "halted")
            report = proc.command("report", "report")
            try:
                timeline.until({device: r["last_seq"] for device, r in report.items()}, timeout_s=120)
            except RuntimeError:
                pass  # shows up as missing below
            checks = loss_check(counter, report, functools.partial(telemetry_counts, server.url))
        finally:
            if proc is not None:
                proc.close()
            counter.close()
            server.stop()
            broker.stop()
    reference = capacity["records_per_s"]
    result = {"devices": devices, "rate_per_device_per_s": rate, "flush_interval_s": flush_interval_s,
              "outage_min": outage_min, "steady_window_s": window, "load_average_1m": os.getloadavg()[0],
              "capacity": capacity, "steady_records_per_s": steady, "backlog_records": backlog,
              "restart_to_first_row_s": (first_row or up) - up, "restart_to_last_device_back_s": reconnected - up,
              "restart_to_drained_s": drained - up, "last_device_back_to_drained_s": drained - reconnected,
              "drain_records_per_s": drain, "peak_drain_records_per_s": peak,
              "ratio": drain / reference, "peak_ratio": peak / reference, "ratio_vs_write_rate": drain / steady,
              **checks, "zero_loss": checks["zero_loss"] and checks["stored_once"],
              "timeline": timeline.thinned(), "target_ratio": 0.8}
    result["met"] = result["ratio"] >= result["target_ratio"] and result["zero_loss"]
    if publish:
        write_result("B8", result)
        update_readme_rows({"B8": _row(result)})
    return result


def _row(r: dict) -> str:
    capacity = r["capacity"]
    source = ("median of " + str(len(capacity["rounds"])) + " runs in the same invocation"
              if "rounds" in capacity else f"median from results/B3.json of {capacity['measured'][:10]}")
    return (f"| B8 | backlog drain after a {r['outage_min']:g}-min broker outage, {r['devices']} devices writing "
            f"{r['devices'] * r['rate_per_device_per_s']:,.0f} records/s, records/s stored "
            f"({r['backlog_records']:,} backlog, zero loss: {'yes' if r['zero_loss'] else 'NO'}) | "
            f"{r['drain_records_per_s']:,.0f}/s: restart → drained {r['restart_to_drained_s']:.1f} s (last device "
            f"back after {r['restart_to_last_device_back_s']:.1f} s; peak {r['peak_drain_records_per_s']:,.0f}/s "
            f"over one flush interval) | {capacity['records_per_s']:,.0f}/s the server's ingest capacity (B3-server, "
            f"{source}) | {r['ratio']:.2f}x (peak {r['peak_ratio']:.2f}x) | ≥ 0.8x | {'yes' if r['met'] else 'no'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-min", type=float, default=10.0, help="minutes the broker stays down")
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--rate", type=float, default=20.0, help="records per second per device")
    parser.add_argument("--steady-s", type=float, default=60.0, help="seconds of steady state measured before")
    parser.add_argument("--flush-interval-s", type=float, default=5.0, help="the agents' telemetry flush interval")
    parser.add_argument("--capacity-rounds", type=int, default=3,
                        help="runs of B3's server-only ingest for the reference (0: the median in results/B3.json)")
    args = parser.parse_args()
    out = run(args.devices, args.rate, args.steady_s, args.outage_min, args.flush_interval_s,
              capacity_rounds=args.capacity_rounds)
    print(f"capacity {out['capacity']['records_per_s']:,.0f} records/s ({out['capacity']['source']}); steady "
          f"{out['steady_records_per_s']:,.0f} records/s; drain of {out['backlog_records']:,} records "
          f"{out['drain_records_per_s']:,.0f}/s: restart → first row {out['restart_to_first_row_s']:.1f} s, → last "
          f"device back {out['restart_to_last_device_back_s']:.1f} s, → drained {out['restart_to_drained_s']:.1f} s "
          f"(peak {out['peak_drain_records_per_s']:,.0f}/s); ratio {out['ratio']:.2f}x of capacity "
          f"(peak {out['peak_ratio']:.2f}x); zero loss {out['zero_loss']} (missing {out['missing']}, "
          f"dropped {out['dropped_by_outboxes']}; delivered {out['delivered']:,}, of them duplicates "
          f"{out['duplicates_delivered']:,}, stored {out['rows_stored']:,} of {out['issued']:,} issued: "
          f"{out['guarantee']})")
