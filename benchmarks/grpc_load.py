"""A closed-loop gRPC load generator for B2-gRPC: ``c`` client processes, one channel and one call in flight each.

There is no ``ghz`` on the machine, so this is the load generator, the same
for every server it measures. Each of ``connections`` processes (so the
clients do not share one GIL) opens its own grpcio channel to the server,
sends the same OIP ``ModelInfer`` message (serialized once) back to back for
``duration_s`` after a one-second warm-up, and times each call with
``perf_counter_ns``; the parent merges the latencies. Failed calls are
counted, not timed. Reported like :class:`benchmarks.wrk.WrkResult`:
requests/s over the timed window, p50/p99 in ms, failed. A Python client costs
more CPU per call than wrk does: on a 2-core machine it takes CPU from the
server it measures, equally for every server.

It measures only; B2 (:mod:`benchmarks.b2_serving`) runs it and publishes the rows.
"""

from __future__ import annotations

import multiprocessing
import time

import numpy as np

from fleet_protocol import oip, oip_grpc


def _client(address: str, message: bytes, duration_s: float, warmup_s: float, start_at: float) -> tuple[list, int]:
    import grpc  # in the child: grpcio must not be initialised before a fork

    _, response_cls = oip_grpc.METHODS["ModelInfer"]
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(f"/{oip_grpc.SERVICE}/ModelInfer", request_serializer=lambda raw: raw,
                                   response_deserializer=response_cls.FromString)
        while time.time() < start_at:  # every client starts its timed window together
            time.sleep(0.001)
        end_warmup = time.perf_counter() + warmup_s
        while time.perf_counter() < end_warmup:
            call(message, timeout=30)
        latencies, failed = [], 0
        clock, end = time.perf_counter_ns, time.perf_counter() + duration_s
        while time.perf_counter() < end:
            t0 = clock()
            try:
                call(message, timeout=30)
            except grpc.RpcError:
                failed += 1
                continue
            latencies.append(clock() - t0)
    return latencies, failed


def run_grpc_load(address: str, model: str, feed: dict[str, np.ndarray], *, connections: int,
                  duration_s: float, warmup_s: float = 1.0) -> dict:
    """Load ``address`` with ModelInfer calls of ``feed`` for ``model``; requests_per_s, p50_ms, p99_ms, failed."""
    message = oip_grpc.encode_infer_request(model, None, oip.InferenceRequest(inputs=feed)).SerializeToString()
    start_at = time.time() + 2.0  # the processes' start-up is not timed
    with multiprocessing.get_context("spawn").Pool(connections) as pool:
        results = pool.starmap(_client, [(address, message, duration_s, warmup_s, start_at)] * connections)
    latencies = np.concatenate([np.asarray(lat, dtype=np.int64) for lat, _ in results])
    if latencies.size == 0:
        raise RuntimeError(f"no gRPC call to {address} succeeded")
    return {"requests": int(latencies.size), "requests_per_s": latencies.size / duration_s,
            "p50_ms": float(np.percentile(latencies, 50)) / 1e6, "p99_ms": float(np.percentile(latencies, 99)) / 1e6,
            "failed": sum(failed for _, failed in results)}
