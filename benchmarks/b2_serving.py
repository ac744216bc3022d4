"""B2: the agent's OIP v2 REST endpoint vs MLServer serving the same ONNX file, both on loopback.

Model: the 50-tree random forest of :mod:`benchmarks.models`, deployed to a
real agent through the fleet (:func:`benchmarks.harness.bench_fleet`); that
agent then restarts in a process of its own, as on a device (the harness runs
it beside the fleet server and broker), and serves what it installed. It is
served by MLServer from the same bytes through :mod:`benchmarks.mlserver_runtime`
(onnxruntime on both sides, so this measures serving). MLServer runs with
its production settings (``debug`` off) from its own virtual environment,
``benchmarks/.venv-mlserver``, created here on first use (its pins conflict
with the project's). Both answer the same request body before timing, and
must give the same prediction. Load: ``wrk`` with a POST script, ``c``
threads and ``c`` keep-alive connections for each concurrency, the servers
taking turns in ``runs`` rounds (the order flips every round; each row is
the median of the rounds, with the 1-minute load average at each round). MLServer is measured with ``parallel_workers`` 1 (its default:
inference in a worker process) and 0 (in the server's process), and the agent
is compared with the faster of the two at each concurrency. Targets: ≥ 1.5x
MLServer's requests/s and ≤ 0.67x its p99 latency. Responses over 399 and
socket errors are counted, not hidden.

With ``grpc`` (B2-gRPC) the agent also serves OIP over gRPC and the same
rounds load the agent's and each MLServer's gRPC endpoint with the closed-loop
client of :mod:`benchmarks.grpc_load` (c processes, one channel each; no
``ghz`` here), the same client for every server.

With ``--baseline NAME=ROOT`` (e.g. an unpacked ``git archive main``) another
agent runs ``ROOT``'s code from a copy of the same installed state, connected to
a Mosquitto of its own so that its heartbeats and flushes happen too; it is
the side ``agent-NAME`` of the same interleaved rounds, with its own ratios to
MLServer, so two endpoints are judged against MLServer under the same load.

    python -m benchmarks.b2_serving [--duration S] [--concurrency 1 8] [--parallel-workers 1 0] [--runs 3] [--grpc]
                                    [--baseline NAME=ROOT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import numpy as np

from benchmarks.grpc_load import run_grpc_load
from benchmarks.harness import bench_fleet
from benchmarks.models import random_forest_onnx
from benchmarks.report import update_readme_rows, write_result
from benchmarks.wrk import run_wrk, wrk_binary
from edge_agent.config import AgentConfig
from fleet_protocol import oip
from tests.support.mosquitto import start_mosquitto

HERE = Path(__file__).resolve().parent
MLSERVER_VENV = HERE / ".venv-mlserver"
# uvloop 0.22 made get_event_loop() raise where none is set, which kills MLServer 1.7.1's inference workers.
MLSERVER_REQUIREMENTS = ["mlserver==1.7.1", "onnxruntime", "uvloop<0.22"]
MODEL = "forest"
TARGET_THROUGHPUT, TARGET_P99 = 1.5, 0.67


class MlserverUnavailable(RuntimeError):
    """MLServer could not be installed or started; the reason is the message."""


def ensure_mlserver(venv: Path = MLSERVER_VENV) -> Path:
    """The ``mlserver`` executable of ``venv``, creating the venv and installing MLServer when missing."""
    executable, python = venv / "bin" / "mlserver", venv / "bin" / "python"
    stamp = venv / "edgefleet-requirements.txt"  # what the venv was built with: rebuilt when that changes
    wanted = "\n".join(MLSERVER_REQUIREMENTS) + "\n"
    if executable.exists() and stamp.exists() and stamp.read_text() == wanted:
        return executable
    print(f"creating {venv} with {' '.join(MLSERVER_REQUIREMENTS)} (once; reused afterwards)", flush=True)
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)],
             [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
             [str(python), "-m", "pip", "install", "-q", *MLSERVER_REQUIREMENTS],
             [str(python), "-c", "import mlserver, onnxruntime"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise MlserverUnavailable(f"`{' '.join(step)}` failed: {tail}")
    stamp.write_text(wanted)
    return executable


@contextlib.contextmanager
def mlserver(executable: Path, model: bytes, workdir: Path, *, parallel_workers: int = 1,
             timeout_s: float = 120) -> Iterator[tuple[str, str]]:
    """Serve ``model`` as ``MODEL`` with MLServer; yield its base URL and its gRPC address."""
    root = workdir / "mlserver"
    (root / MODEL).mkdir(parents=True, exist_ok=True)
    (root / MODEL / "model.onnx").write_bytes(model)
    http_port, grpc_port, metrics_port = _free_ports(3)
    (root / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "parallel_workers": parallel_workers}))
    (root / MODEL / "model-settings.json").write_text(json.dumps({
        "name": MODEL, "implementation": "mlserver_runtime.OnnxRuntime", "parameters": {"uri": "./model.onnx"}}))
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    env.pop("VIRTUAL_ENV", None)
    log_path = root / "mlserver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([str(executable), "start", "."], cwd=root, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(process, f"{url}/v2/models/{MODEL}/ready", log_path, "mlserver", timeout_s, MlserverUnavailable)
        yield url, f"127.0.0.1:{grpc_port}"
    finally:
        _end(process)


def _wait_ready(process: subprocess.Popen, ready_url: str, log_path: Path, what: str, timeout_s: float,
                error: type[Exception] = RuntimeError) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise error(f"{what} exited with {process.returncode}: {_tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(ready_url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise error(f"{what} did not serve {MODEL} within {timeout_s}s: {_tail(log_path)}")
        time.sleep(0.2)


def _end(process: subprocess.Popen) -> None:
    """SIGTERM to the process's own session (a server and its workers), SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def agent_process(config: AgentConfig, workdir: Path, *, timeout_s: float = 60, model: str = MODEL,
                  root: Path | None = None, **settings) -> Iterator[str]:
    """Run an agent with ``config`` (another port; ``settings`` added) in a process of its own, with ``root``'s code
    first on its path when given; yield its scoring URL once ``model`` is ready."""
    settings = {"device_id": config.device_id, "state_dir": str(config.state_dir), "broker_url": config.broker_url,
                "trusted_keys": list(config.trusted_keys), "scoring_port": _free_ports(1)[0], **settings}
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "agent.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (root, HERE.parent) if p)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", _AGENT_MAIN, json.dumps(settings)], stdout=log, env=env,
                                   cwd=root, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{settings['scoring_port']}"
    try:
        _wait_ready(process, f"{url}/v2/models/{model}/ready", log_path, "the agent", timeout_s)
        yield url
    finally:
        _end(process)


_AGENT_MAIN = ("import json, sys; from edge_agent.agent import Agent; from edge_agent.config import AgentConfig; "
               "Agent(AgentConfig(**json.loads(sys.argv[1]))).run_forever()")


def same_prediction(body: bytes, urls: dict[str, str]) -> dict:
    """POST ``body`` to each ``/v2/models/MODEL/infer``; the decoded outputs, and whether all agree."""
    outputs = {}
    for side, url in urls.items():
        response = httpx.post(f"{url}/v2/models/{MODEL}/infer", content=body,
                              headers={"Content-Type": "application/json"}, timeout=10)
        response.raise_for_status()
        outputs[side] = oip.decode_response(response.json())
    first, *rest = outputs.values()  # MLServer answers a 1-D output with a batch dimension: compare the values
    same = all(set(other) == set(first) and all(np.allclose(np.ravel(first[k]), np.ravel(other[k])) for k in first)
               for other in rest)
    return {"same": bool(same),
            "outputs": {side: {k: v.tolist() for k, v in out.items()} for side, out in outputs.items()}}


def run(duration_s: float = 10, concurrency: tuple[int, ...] = (1, 8), *, warmup_s: float = 2,
        workdir: Path | None = None, publish: bool = True, mlserver_venv: Path = MLSERVER_VENV,
        parallel_workers: tuple[int, ...] = (1, 0), runs: int = 3, grpc: bool = False,
        baselines: dict[str, Path] | None = None) -> dict:
    """Measure the agent and MLServer (once per ``parallel_workers`` setting) in ``runs`` interleaved rounds;
    compare medians with the fastest MLServer. With ``grpc``, the same over gRPC (rows ``grpc-c{c}``). Each of
    ``baselines`` (name: code root) is one more agent side, ``agent-NAME``, REST only."""
    baselines = baselines or {}
    wrk_binary()
    model, feed = random_forest_onnx()
    body = json.dumps(oip.encode_request(feed)).encode()
    results: dict = {"model": "50-tree random forest (iris, ZipMap off)", "duration_s": duration_s, "runs": runs,
                     "agent": "deployed through the fleet, then restarted alone in its own process",
                     "load_generator": "wrk, POST script, threads = connections = concurrency",
                     "request_bytes": len(body), "targets": {"throughput_ratio": TARGET_THROUGHPUT,
                                                             "p99_ratio": TARGET_P99},
                     "mlserver": {"version": "1.7.1", "debug": False, "requirements": MLSERVER_REQUIREMENTS,
                                  "runtime": "benchmarks.mlserver_runtime.OnnxRuntime",
                                  "configs": {f"mlserver-pw{n}": {"parallel_workers": n} for n in parallel_workers}}}
    if baselines:
        results["baselines"] = {f"agent-{name}": str(root) for name, root in baselines.items()}
    if grpc:
        results["grpc_load_generator"] = "benchmarks.grpc_load: c spawned Python processes, one grpcio channel each"
    with tempfile.TemporaryDirectory() as tmp:
        work = workdir or Path(tmp)
        try:
            executable: Path | None = ensure_mlserver(mlserver_venv)
        except MlserverUnavailable as exc:
            executable, results["mlserver_unavailable"] = None, str(exc)
        with bench_fleet(work / "fleet") as fleet, contextlib.ExitStack() as stack:
            fleet.deploy_model(MODEL, model)
            fleet.agent.stop()  # the same agent and state, alone in its own process from here on
            agent_grpc = f"127.0.0.1:{_free_ports(1)[0]}"
            grpc_settings = {"grpc_port": int(agent_grpc.rsplit(":", 1)[1])} if grpc else {}
            urls = {"agent": stack.enter_context(agent_process(fleet.agent.config, work / "agent", **grpc_settings))}
            grpc_addresses = {"agent": agent_grpc}
            if baselines:
                broker = start_mosquitto(work / "baseline-broker")
                stack.callback(broker.stop)
            for name, root in baselines.items():
                state = work / f"baseline-{name}" / "state"
                shutil.copytree(fleet.agent.config.state_dir, state)
                config = AgentConfig(device_id=fleet.agent.config.device_id, state_dir=state, broker_url=broker.url,
                                     trusted_keys=list(fleet.agent.config.trusted_keys))
                urls[f"agent-{name}"] = stack.enter_context(agent_process(config, work / f"baseline-{name}",
                                                                          root=root))
            for workers in parallel_workers if executable is not None else ():
                try:
                    urls[f"mlserver-pw{workers}"], grpc_addresses[f"mlserver-pw{workers}"] = stack.enter_context(
                        mlserver(executable, model, work / f"pw{workers}", parallel_workers=workers))
                except MlserverUnavailable as exc:
                    results["mlserver_unavailable"] = str(exc)
                    break
            results["prediction"] = same_prediction(body, urls)
            if not results["prediction"]["same"]:
                raise RuntimeError(f"the servers disagree on the prediction: {results['prediction']['outputs']}")
            for url in urls.values():  # warm every server: first connections, caches, the forest's trees
                run_wrk(f"{url}/v2/models/{MODEL}/infer", body, workdir=work / "wrk", connections=max(concurrency),
                        duration_s=warmup_s)

            def rest(side: str, c: int) -> dict:
                return run_wrk(f"{urls[side]}/v2/models/{MODEL}/infer", body, workdir=work / "wrk", connections=c,
                               duration_s=duration_s).as_dict()

            def over_grpc(side: str, c: int) -> dict:
                return run_grpc_load(grpc_addresses[side], MODEL, feed, connections=c, duration_s=duration_s)

            for c in concurrency:
                results[f"c{c}"] = _compare(rest, list(urls), c, runs)
                if grpc:
                    results[f"grpc-c{c}"] = _compare(over_grpc, list(grpc_addresses), c, runs)
    if publish:
        write_result("B2", results)
        rows = {f"B2-c{c}": _row(f"c{c}", results) for c in concurrency}
        if grpc:
            rows.update({f"B2-grpc-c{c}": _row(f"grpc-c{c}", results) for c in concurrency})
        update_readme_rows(rows)
    return results


def _compare(measure: Callable[[str, int], dict], sides: list[str], c: int, runs: int) -> dict:
    """``runs`` rounds of ``measure(side, c)`` over ``sides`` (the order flips every round); medians and ratios
    against the MLServer setting with the highest median requests/s."""
    raw: dict[str, list[dict]] = {side: [] for side in sides}
    loads = []
    for r in range(runs):
        loads.append(round(os.getloadavg()[0], 2))
        for side in sides if r % 2 == 0 else reversed(sides):
            raw[side].append(measure(side, c))
    row: dict = {side: {"requests_per_s": statistics.median(x["requests_per_s"] for x in rows),
                        "p50_ms": statistics.median(x["p50_ms"] for x in rows),
                        "p99_ms": statistics.median(x["p99_ms"] for x in rows),
                        "requests": sum(x["requests"] for x in rows), "failed": sum(x["failed"] for x in rows),
                        "runs_requests_per_s": [round(x["requests_per_s"]) for x in rows],
                        "runs_p99_ms": [round(x["p99_ms"], 3) for x in rows]} for side, rows in raw.items()}
    row["load_average_1m"] = loads
    references = [side for side in sides if side.startswith("mlserver")]
    if references:
        best = max(references, key=lambda side: row[side]["requests_per_s"])
        row["reference"] = best
        row["throughput_ratio"] = row["agent"]["requests_per_s"] / row[best]["requests_per_s"]
        row["p99_ratio"] = row["agent"]["p99_ms"] / row[best]["p99_ms"]
        for side in [s for s in sides if s.startswith("agent-")]:  # baselines: judged against the same MLServer
            row[side]["throughput_ratio"] = row[side]["requests_per_s"] / row[best]["requests_per_s"]
            row[side]["p99_ratio"] = row[side]["p99_ms"] / row[best]["p99_ms"]
    return row


def _row(key: str, results: dict) -> str:
    """The README row of ``results[key]`` (``c1``, ``grpc-c8``...): medians of the runs."""
    row, c = results[key], key.rsplit("c", 1)[1]
    agent = row["agent"]
    mine = f"{agent['requests_per_s']:,.0f} req/s, p99 {agent['p99_ms']:.2f} ms" + _failed(agent)
    how = "gRPC, grpcio client processes" if key.startswith("grpc") else "REST, wrk"
    name = f"B2-{key}"
    what = f"OIP {how} on loopback, 50-tree forest, c={c}, median of {results['runs']} runs: req/s, p99"
    target = f"≥ {TARGET_THROUGHPUT}x req/s, ≤ {TARGET_P99}x p99"
    if "reference" not in row:
        reason = results.get("mlserver_unavailable", "not run")
        return f"| {name} | {what} | {mine} | MLServer unavailable: {reason[:80]} | n/a | {target} | n/a |"
    ref = row[row["reference"]]
    workers = results["mlserver"]["configs"][row["reference"]]["parallel_workers"]
    theirs = (f"{ref['requests_per_s']:,.0f} req/s, p99 {ref['p99_ms']:.2f} ms" + _failed(ref)
              + f" MLServer 1.7.1 (parallel_workers={workers}, its faster setting here)")
    met = row["throughput_ratio"] >= TARGET_THROUGHPUT and row["p99_ratio"] <= TARGET_P99 and not agent["failed"]
    return (f"| {name} | {what} | {mine} | {theirs} | {row['throughput_ratio']:.2f}x req/s, "
            f"{row['p99_ratio']:.2f}x p99 | {target} | {'yes' if met else 'no'} |")


def _failed(side: dict) -> str:
    return f" ({side['failed']} failed)" if side["failed"] else ""


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _tail(path: Path, lines: int = 8) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) if path.exists() else ""


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of load per server and concurrency")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="wrk connections (= threads)")
    parser.add_argument("--parallel-workers", type=int, nargs="+", default=[1, 0],
                        help="MLServer parallel_workers settings to measure (1, its default: inference in a "
                             "worker process; 0: in the server's process); the faster is the reference")
    parser.add_argument("--runs", type=int, default=3, help="interleaved rounds; rows are their medians")
    parser.add_argument("--grpc", action="store_true", help="also B2-gRPC: the agent's and MLServer's gRPC endpoints")
    parser.add_argument("--baseline", action="append", default=[], metavar="NAME=ROOT",
                        help="one more agent side, agent-NAME, running the code under ROOT (e.g. an unpacked "
                             "`git archive main`) in the same rounds; repeatable")
    args = parser.parse_args()
    if any("=" not in b for b in args.baseline):
        parser.error("--baseline takes NAME=ROOT, e.g. threaded=/tmp/main-code")
    out = run(args.duration, tuple(args.concurrency), parallel_workers=tuple(args.parallel_workers), runs=args.runs,
              grpc=args.grpc, baselines={n: Path(r).resolve() for n, r in (b.split("=", 1) for b in args.baseline)})
    if "mlserver_unavailable" in out:
        print(f"MLServer unavailable: {out['mlserver_unavailable']}")
    for key in [k for k in out if k.startswith(("c", "grpc-c")) and isinstance(out[k], dict)]:
        row = out[key]
        for side, r in row.items():
            if isinstance(r, dict):
                ratios = (f"  {r['throughput_ratio']:.2f}x req/s, {r['p99_ratio']:.2f}x p99"
                          if "p99_ratio" in r else "")
                print(f"{key} {side:15s} {r['requests_per_s']:8.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                      f"p99 {r['p99_ms']:.2f} ms  failed {r['failed']}  runs p99 {r['runs_p99_ms']}{ratios}")
        if "reference" in row:
            print(f"{key} vs {row['reference']}: {row['throughput_ratio']:.2f}x req/s, {row['p99_ratio']:.2f}x p99"
                  f"  (load average {row['load_average_1m']})")
