"""B1: in-process agent scoring (``Agent.infer``) vs a bare ``InferenceSession.run``.

Same model file, same input, same session settings (the defaults), measured
in the same process, interleaved in rounds so that drift hits both sides.
Targets: at most 1 µs added per call on a 50-tree random forest; at most
1.02x on a CNN of about 1 ms.

    python -m benchmarks.b1_scoring [--calls N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.harness import bench_fleet
from benchmarks.models import cnn_onnx, random_forest_onnx
from benchmarks.report import update_readme_rows, write_result


def _timed(call, calls: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


def compare(agent, name: str, model: bytes, feed: dict, *, calls: int, rounds: int = 10) -> dict:
    bare = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    bare_samples, agent_samples = [], []
    warmup = max(50, calls // 20)
    _timed(lambda: bare.run(None, feed), warmup)
    _timed(lambda: agent.infer(name, feed), warmup)
    per_round = max(1, calls // rounds)
    for _ in range(rounds):
        bare_samples += _timed(lambda: bare.run(None, feed), per_round)
        agent_samples += _timed(lambda: agent.infer(name, feed), per_round)
    agent_out = agent.infer(name, feed).outputs
    bare_out = dict(zip([o.name for o in bare.get_outputs()], bare.run(None, feed)))
    same = all(np.allclose(agent_out[k], bare_out[k]) for k in bare_out)

    def stats(samples: list[int]) -> dict:
        return {"p50_us": float(np.percentile(samples, 50)) / 1000, "p99_us": float(np.percentile(samples, 99)) / 1000}

    agent_stats, bare_stats = stats(agent_samples), stats(bare_samples)
    return {"model": name, "calls_per_side": len(bare_samples), "same_outputs": bool(same),
            "agent": agent_stats, "bare": bare_stats,
            "added_p50_us": agent_stats["p50_us"] - bare_stats["p50_us"],
            "added_p99_us": agent_stats["p99_us"] - bare_stats["p99_us"],
            "ratio_p50": agent_stats["p50_us"] / bare_stats["p50_us"],
            "ratio_p99": agent_stats["p99_us"] / bare_stats["p99_us"]}


def run(calls: int = 20_000, cnn_calls: int = 2_000, *, workdir: Path | None = None, publish: bool = True) -> dict:
    forest, forest_feed = random_forest_onnx()
    cnn, cnn_feed = cnn_onnx()
    with tempfile.TemporaryDirectory() as tmp, bench_fleet(workdir or Path(tmp)) as fleet:
        fleet.deploy_model("forest", forest)
        fleet.deploy_model("cnn", cnn)
        results = {"forest": compare(fleet.agent, "forest", forest, forest_feed, calls=calls),
                   "cnn": compare(fleet.agent, "cnn", cnn, cnn_feed, calls=cnn_calls)}
    results["targets"] = {"forest_added_p50_us": 1.0, "cnn_ratio_p50": 1.02}
    if publish:
        write_result("B1", results)
        f, c = results["forest"], results["cnn"]
        update_readme_rows({
            "B1-forest": _row("B1-forest", "in-process scoring, 50-tree forest, p50 (p99)", f,
                              f"+{f['added_p50_us']:.2f} µs", "≤ +1 µs", f["added_p50_us"] <= 1.0),
            "B1-cnn": _row("B1-cnn", "in-process scoring, ~1 ms CNN, p50 (p99)", c,
                           f"{c['ratio_p50']:.3f}x", "≤ 1.02x", c["ratio_p50"] <= 1.02),
        })
    return results


def _row(bench_id: str, what: str, r: dict, ratio: str, target: str, met: bool) -> str:
    return (f"| {bench_id} | {what} | {r['agent']['p50_us']:.2f} µs ({r['agent']['p99_us']:.2f}) | "
            f"{r['bare']['p50_us']:.2f} µs ({r['bare']['p99_us']:.2f}) bare `InferenceSession.run` | {ratio} | "
            f"{target} | {'yes' if met else 'no'} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per side on the forest")
    parser.add_argument("--cnn-calls", type=int, default=2_000, help="calls per side on the CNN")
    args = parser.parse_args()
    out = run(args.calls, args.cnn_calls)
    for key in ("forest", "cnn"):
        r = out[key]
        print(f"{key}: agent p50 {r['agent']['p50_us']:.2f} µs p99 {r['agent']['p99_us']:.2f} | bare p50 "
              f"{r['bare']['p50_us']:.2f} µs p99 {r['bare']['p99_us']:.2f} | added p50 {r['added_p50_us']:+.2f} µs, "
              f"ratio {r['ratio_p50']:.3f}")
