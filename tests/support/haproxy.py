"""A real HAProxy (Debian's ``haproxy``) in front of fleet server replicas, on a free loopback port.

:func:`start_haproxy` writes a configuration like ``docs/haproxy.cfg.example``
with test-sized health-check timings (a dead replica leaves rotation after
``fall`` failed checks ``inter`` apart, ~1 s), starts ``haproxy -db -f cfg`` in
the foreground and stops it by its pid. :meth:`HAProxy.server_states` reads
each backend server's state (``UP``, ``DOWN``, ...) from the stats socket.
Not a supervisor: nothing here restarts HAProxy.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .processes import stop_process
from .net import free_port, wait_port

CHECK_INTERVAL_MS = 300
FALL = 2  # failed checks before a replica leaves rotation
RISE = 2  # passed checks before it is back


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)


def haproxy_config(*, port: int, backends: dict[str, str], stats_socket: Path) -> str:
    """``backends``: name -> ``host:port`` of each replica's API."""
    servers = "\n".join(f"    server {name} {address} check" for name, address in backends.items())
    return f"""global
    stats socket {stats_socket} mode 600 level admin
    maxconn 256

defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout check 1s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout

frontend api
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk
    http-check send meth GET uri /api/ready
    http-check expect status 200
    http-request disable-l7-retry unless METH_GET
    default-server inter {CHECK_INTERVAL_MS}ms fall {FALL} rise {RISE}
{servers}
"""


@dataclass
class HAProxy:
    port: int
    process: subprocess.Popen | None
    config: Path
    log: Path
    stats_socket: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def server_states(self) -> dict[str, str]:
        """Each backend server's status from ``show stat`` (``UP``, ``DOWN``, ``UP 1/2`` while rising, ...)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(b"show stat\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        lines = b"".join(chunks).decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "replicas"
                and r["svname"] not in ("FRONTEND", "BACKEND")}

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None


def start_haproxy(workdir: Path, backends: dict[str, str]) -> HAProxy:
    """Start HAProxy in the foreground (``-db``) balancing over ``backends``; returns once it listens."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed: run `make system-deps`")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config, log, stats = workdir / "haproxy.cfg", workdir / "haproxy.log", workdir / "haproxy.sock"
    config.write_text(haproxy_config(port=port, backends=backends, stats_socket=stats))
    checked = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"haproxy refused {config}:\n{checked.stdout}{checked.stderr}")
    proxy = HAProxy(port, subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log.open("ab"),
                                           stderr=subprocess.STDOUT), config, log, stats)
    try:
        wait_port(port)
    except BaseException:
        proxy.stop()
        raise
    return proxy
