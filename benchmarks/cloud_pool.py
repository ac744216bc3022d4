"""Cloud client cost per call against a real local HTTPS server: latency, client CPU and RSS.

The server (:class:`tests.support.https_server.CountingHttpsServer`, HTTP/1.1
keep-alive, an ECDSA P-256 certificate from a fleet CA) runs in its own
process, so the CPU measured here is the client's alone. The client is the
agent's :class:`~edge_agent.cloud_client.CloudClient`, trusting the system's
CA bundle plus the test CA (``SSL_CERT_FILE``), as a device's client loads
the system roots (``--test-ca-only``: the test CA alone, which leaves the TLS
handshake without the cost of loading ~140 roots into a context). Each call posts a one-row OIP request and decodes the
answer; the figures are the median and 90th percentile wall time of a call,
the client's CPU time per call (``process_time``), the server's count of
TLS connections, and the client's RSS before the first call and after the
last. Nothing here is a target: it compares the client before and after
connection pooling.

    python -m benchmarks.cloud_pool [--calls N] [--test-ca-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                               "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()


def serve(directory: Path) -> None:
    from tests.support.https_server import CountingHttpsServer

    with CountingHttpsServer(directory) as server:
        print(server.port, flush=True)
        for line in sys.stdin:  # "count": how many connections so far; EOF: stop
            print(server.connections, flush=True)


def measure(calls: int, *, test_ca_only: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([sys.executable, "-m", "benchmarks.cloud_pool", "--serve", tmp],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            port = int(server.stdout.readline())
            bundle = Path(tmp) / "bundle.pem"
            roots = b"" if test_ca_only else SYSTEM_BUNDLE.read_bytes()
            bundle.write_bytes(roots + (Path(tmp) / "ca.crt").read_bytes())
            os.environ["SSL_CERT_FILE"] = str(bundle)
            from edge_agent.cloud_client import CloudClient

            process = psutil.Process()
            rss_before = process.memory_info().rss
            client = CloudClient(f"https://127.0.0.1:{port}", token=None, timeout_s=5.0)
            for _ in range(20):
                client.infer("m", 1, BODY)
            walls = []
            cpu_started = time.process_time()
            for _ in range(calls):
                started = time.perf_counter()
                client.infer("m", 1, BODY)
                walls.append(time.perf_counter() - started)
            cpu = time.process_time() - cpu_started
            rss_after = process.memory_info().rss
            server.stdin.write("count\n")
            server.stdin.flush()
            connections = int(server.stdout.readline())
        finally:
            server.stdin.close()
            server.wait(timeout=10)
    walls.sort()
    return {"calls": calls, "roots": "test CA" if test_ca_only else "system + test CA", "median_ms": round(statistics.median(walls) * 1000, 3),
            "p90_ms": round(walls[int(len(walls) * 0.9)] * 1000, 3),
            "cpu_ms_per_call": round(cpu / calls * 1000, 3), "server_connections": connections,
            "rss_mb_before": round(rss_before / 2**20, 1), "rss_mb_after": round(rss_after / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--test-ca-only", action="store_true", help="trust the test CA alone, not the system roots")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        print(json.dumps(measure(args.calls, test_ca_only=args.test_ca_only)))


if __name__ == "__main__":
    main()
