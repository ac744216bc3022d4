"""Drive an HTTP endpoint with ``wrk`` (Debian's package) and a POST script; parse its summary.

The Lua script reads the request body from a file (a CNN's input is over a
megabyte of JSON) and prints one ``WRK_JSON {...}`` line from ``done()``:
requests, duration, socket errors, responses with a status over 399, and
latency percentiles in microseconds. With ``marker``, every response body is
also searched for that string and the hits are counted (B7 uses it to count
answers from the new version).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

_SCRIPT = r"""
local body_file = io.open(%(body_path)s, "rb")
wrk.method = "POST"
wrk.body = body_file:read("*a")
body_file:close()
wrk.headers["Content-Type"] = "application/json"
local threads = {}
local marker = %(marker)s

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  hits = 0
end

if marker ~= nil then
  function response(status, headers, body)
    if body ~= nil and string.find(body, marker, 1, true) then
      hits = hits + 1
    end
  end
end

function done(summary, latency, requests)
  local total_hits = 0
  for _, thread in ipairs(threads) do
    total_hits = total_hits + (thread:get("hits") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"mean_us":%%.1f,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"marker_hits":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, total_hits))
end
"""


class WrkMissing(RuntimeError):
    """``wrk`` is not installed (``make bench-deps`` installs Debian's package)."""


@dataclass
class WrkResult:
    connections: int
    threads: int
    requests: int
    duration_s: float
    requests_per_s: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int  # connect, read, write and timeout errors together
    non_2xx: int  # responses with a status over 399 (nothing here answers 1xx or 3xx)
    marker_hits: int

    @property
    def failed(self) -> int:
        return self.socket_errors + self.non_2xx

    def as_dict(self) -> dict:
        return {**asdict(self), "failed": self.failed}


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing("wrk is not installed: run `make bench-deps` (apt-get install wrk)")
    return path


class WrkRun:
    """One ``wrk`` run in the background: POST ``body`` to ``url`` on ``connections`` keep-alive connections.

    :meth:`wait` lets it run its ``duration_s``; :meth:`stop` ends it early with SIGINT, after which wrk
    still prints its summary.
    """

    def __init__(self, url: str, body: bytes, *, workdir: Path, connections: int, duration_s: float,
                 threads: int | None = None, timeout_s: float = 5.0, marker: str | None = None):
        self.connections, self.threads = connections, min(threads or connections, connections)
        self.duration_s, self.timeout_s = duration_s, timeout_s
        workdir.mkdir(parents=True, exist_ok=True)
        files = Path(tempfile.mkdtemp(prefix="wrk-", dir=workdir))
        (files / "body.json").write_bytes(body)
        script = files / "post.lua"
        script.write_text(_SCRIPT % {"body_path": _lua_string(str(files / "body.json")),
                                     "marker": "nil" if marker is None else _lua_string(marker)})
        command = [wrk_binary(), f"-t{self.threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
                   f"--timeout={max(1, round(timeout_s))}s", "--latency", "-s", str(script), url]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self) -> WrkResult:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        return self.wait()

    def wait(self) -> WrkResult:
        try:
            stdout, stderr = self._process.communicate(timeout=self.duration_s + self.timeout_s + 60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            stdout, stderr = self._process.communicate()
        line = next((ln for ln in stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
        if self._process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed (exit {self._process.returncode}): {stderr.strip() or stdout.strip()}")
        raw = json.loads(line[len("WRK_JSON "):])
        duration = raw["duration_us"] / 1e6
        return WrkResult(connections=self.connections, threads=self.threads, requests=raw["requests"],
                         duration_s=duration, requests_per_s=raw["requests"] / duration if duration else 0.0,
                         mean_ms=raw["mean_us"] / 1000, p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000,
                         p99_ms=raw["p99_us"] / 1000, max_ms=raw["max_us"] / 1000,
                         socket_errors=raw["connect"] + raw["read"] + raw["write"] + raw["timeout"],
                         non_2xx=raw["status"], marker_hits=raw["marker_hits"])


def run_wrk(url: str, body: bytes, *, workdir: Path, connections: int, duration_s: float,
            threads: int | None = None, timeout_s: float = 5.0, marker: str | None = None) -> WrkResult:
    """POST ``body`` to ``url`` with ``connections`` keep-alive connections for ``duration_s`` seconds."""
    return WrkRun(url, body, workdir=workdir, connections=connections, duration_s=duration_s, threads=threads,
                  timeout_s=timeout_s, marker=marker).wait()


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for these (ASCII) values
