"""B10: one agent, one model, three wires at c=1: OIP REST with JSON, REST with binary tensor data, and gRPC.

The CNN of :mod:`benchmarks.models` (input 1x3xSIZExSIZE FP32; 64 by default:
48 KiB of raw floats, so encoding shows beside inference) is deployed through
the fleet (:func:`benchmarks.harness.bench_fleet`), then the agent runs alone
in its own process with ``grpc_port`` set (as B2's agent does). One client
thread, one keep-alive connection (``http.client``, TCP_NODELAY as wrk) or channel (grpcio) per
wire, request bodies built once; the wires take turns in rounds so that drift
hits all three. All three must give the same logits first. Reported: req/s,
p50 and p99 per wire. No target: the full gRPC-vs-MLServer comparison is B2's
job. The client is Python and shares the machine with the agent.

    python -m benchmarks.b10_wire [--seconds S] [--rounds N] [--size PIXELS]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from benchmarks.b2_serving import _free_ports, agent_process
from benchmarks.harness import bench_fleet
from benchmarks.models import cnn_onnx
from benchmarks.report import update_readme_rows, write_result
from fleet_protocol import oip, oip_binary, oip_grpc

MODEL = "cnn"


class RestWire:
    def __init__(self, url: str, body: bytes, headers: dict[str, str]):
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.connection.connect()  # http.client writes head and body apart: without NODELAY, Nagle holds the body
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # for the server's delayed ACK
        self.body, self.headers = body, headers

    def __call__(self) -> dict[str, np.ndarray]:
        self.connection.request("POST", f"/v2/models/{MODEL}/infer", body=self.body, headers=self.headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST answered {response.status}: {data[:200]!r}")
        length = response.getheader(oip_binary.HEADER)
        if length is None:
            return oip.decode_response(json.loads(data))
        header = json.loads(data[:int(length)])
        out = header["outputs"][0]
        return {out["name"]: oip.tensor_from_raw(out["datatype"], out["shape"], data[int(length):], "output")}

    def close(self) -> None:
        self.connection.close()


class GrpcWire:
    def __init__(self, address: str, feed: dict[str, np.ndarray]):
        self.channel = grpc.insecure_channel(address)
        request_cls, response_cls = oip_grpc.METHODS["ModelInfer"]
        self.call = self.channel.unary_unary(f"/{oip_grpc.SERVICE}/ModelInfer",
                                             request_serializer=request_cls.SerializeToString,
                                             response_deserializer=response_cls.FromString)
        self.message = oip_grpc.encode_infer_request(MODEL, None, oip.InferenceRequest(inputs=feed))

    def __call__(self) -> dict[str, np.ndarray]:
        return oip.decode_response(oip_grpc.decode_infer_response(self.call(self.message, timeout=30)))

    def close(self) -> None:
        self.channel.close()


def wires(url: str, grpc_address: str, feed: dict[str, np.ndarray]) -> dict:
    json_body = json.dumps(oip.encode_request(feed)).encode()
    (name, array), = feed.items()
    datatype, raw = oip.tensor_to_raw(array)
    header = json.dumps({"inputs": [{"name": name, "shape": list(array.shape), "datatype": datatype,
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return {"rest-json": RestWire(url, json_body, {"Content-Type": "application/json"}),
            "rest-binary": RestWire(url, header + raw, {"Content-Type": "application/octet-stream",
                                                        oip_binary.HEADER: str(len(header))}),
            "grpc": GrpcWire(grpc_address, feed),
            "_bytes": {"rest-json": len(json_body), "rest-binary": len(header) + len(raw)}}


def measure(calls: dict, *, seconds: float, rounds: int) -> dict:
    samples: dict[str, list[int]] = {side: [] for side in calls}
    busy: dict[str, float] = dict.fromkeys(calls, 0.0)
    clock = time.perf_counter_ns
    for _ in range(rounds):
        for side, call in calls.items():
            end = time.perf_counter() + seconds / rounds
            started = time.perf_counter()
            while time.perf_counter() < end:
                t0 = clock()
                call()
                samples[side].append(clock() - t0)
            busy[side] += time.perf_counter() - started
    return {side: {"requests": len(s), "requests_per_s": len(s) / busy[side],
                   "p50_ms": float(np.percentile(s, 50)) / 1e6, "p99_ms": float(np.percentile(s, 99)) / 1e6}
            for side, s in samples.items()}


def run(*, seconds: float = 30, rounds: int = 6, size: int = 64, publish: bool = True,
        workdir: Path | None = None) -> dict:
    model, feed = cnn_onnx(size=size)
    results: dict = {"model": f"CNN, input 1x3x{size}x{size} FP32", "concurrency": 1, "seconds_per_wire": seconds,
                     "rounds": rounds, "client": "one Python thread: http.client keep-alive / one grpcio channel"}
    with tempfile.TemporaryDirectory() as tmp:
        work = workdir or Path(tmp)
        with bench_fleet(work / "fleet") as fleet:
            fleet.deploy_model(MODEL, model)
            fleet.agent.stop()
            grpc_port = _free_ports(1)[0]
            with agent_process(fleet.agent.config, work / "agent", model=MODEL, grpc_port=grpc_port) as url:
                calls = wires(url, f"127.0.0.1:{grpc_port}", feed)
                results["request_bytes"] = calls.pop("_bytes")
                answers = {side: call() for side, call in calls.items()}
                first = answers["rest-json"]["logits"]
                if not all(np.allclose(a["logits"], first, rtol=1e-5) for a in answers.values()):
                    raise RuntimeError(f"the wires disagree: {answers}")
                measure(calls, seconds=min(2.0, seconds / 5), rounds=1)  # warm-up
                results["wires"] = measure(calls, seconds=seconds, rounds=rounds)
                for call in calls.values():
                    call.close()
    if publish:
        write_result("B10", results)
        update_readme_rows({"B10": _row(results)})
    return results


def _row(results: dict) -> str:
    w = results["wires"]

    def cell(side: str) -> str:
        return f"{w[side]['requests_per_s']:,.0f} req/s, p50 {w[side]['p50_ms']:.2f} ms, p99 {w[side]['p99_ms']:.2f} ms"

    return (f"| B10 | agent at c=1, {results['model']}: REST binary; gRPC (REST JSON is the reference) | "
            f"binary {cell('rest-binary')}; gRPC {cell('grpc')} | JSON {cell('rest-json')} | "
            f"{w['rest-binary']['requests_per_s'] / w['rest-json']['requests_per_s']:.2f}x / "
            f"{w['grpc']['requests_per_s'] / w['rest-json']['requests_per_s']:.2f}x req/s | no target | n/a |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="timed seconds per wire (split over the rounds)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args()
    print(json.dumps(run(seconds=args.seconds, rounds=args.rounds, size=args.size), indent=2))


if __name__ == "__main__":
    main()
