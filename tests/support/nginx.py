"""A real nginx (Debian's ``nginx-light``) caching ``/content/`` in front of fleet server replicas, on a free port.

:func:`start_nginx` writes a configuration like the one in
``docs/content-cache.md`` (``proxy_cache`` keyed on the URI alone, one
upstream fetch per chunk however many devices miss at once, the cache status
in an ``X-Cache-Status`` header and in the access log), every path under the
test's folder, starts ``nginx -g 'daemon off;'`` in the foreground and stops
it by its pid. :meth:`Nginx.access` reads the access log as
``(uri, cache status, http status)``; :meth:`Nginx.cached_files` lists the
cache's files (a test corrupts one). Not a supervisor: nothing restarts it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .processes import stop_process
from .net import free_port, wait_port


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def nginx_config(*, port: int, upstreams: list[str], workdir: Path, workers: int = 1) -> str:
    """``upstreams``: ``host:port`` of each replica's API."""
    servers = "\n".join(f"        server {address} max_fails=1 fail_timeout=2s;" for address in upstreams)
    temp = workdir / "tmp"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers as the test's user: they write under its tmp dir
    return f"""{user}worker_processes {workers};
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
    log_format cache '$request_uri $upstream_cache_status $status $body_bytes_sent';
    access_log {workdir / "access.log"} cache;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    proxy_cache_path {workdir / "cache"} levels=1:2 keys_zone=edgefleet_content:16m max_size=10g inactive=30d
                     use_temp_path=off;
    upstream edgefleet_servers {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /content/ {{
            proxy_pass http://edgefleet_servers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edgefleet_content;
            proxy_cache_key $uri;
            proxy_cache_valid 200 365d;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_use_stale error timeout updating http_502 http_503 http_504;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
        location / {{ return 404; }}
    }}
}}
"""


@dataclass
class Nginx:
    port: int
    process: subprocess.Popen | None
    workdir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access(self) -> list[tuple[str, str, int]]:
        """Each request so far: ``(uri, $upstream_cache_status, status)`` (``-`` for a status nginx had none of)."""
        path = self.workdir / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [(uri, cache, int(status)) for uri, cache, status, _ in (line.split(" ") for line in lines)]

    def cached_files(self) -> list[Path]:
        return sorted(p for p in (self.workdir / "cache").rglob("*") if p.is_file())

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None


def start_nginx(workdir: Path, upstreams: list[str], *, port: int | None = None, workers: int = 1) -> Nginx:
    """Start nginx in the foreground caching ``/content/`` from ``upstreams``; returns once it listens."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed: run `make system-deps`")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "tmp").mkdir(exist_ok=True)
    port = port or free_port()
    config, log = workdir / "nginx.conf", workdir / "nginx.out"
    config.write_text(nginx_config(port=port, upstreams=upstreams, workdir=workdir, workers=workers))
    checked = subprocess.run([binary, "-t", "-q", "-c", str(config), "-p", str(workdir)], capture_output=True,
                             text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx refused {config}:\n{checked.stdout}{checked.stderr}")
    proxy = Nginx(port, subprocess.Popen([binary, "-c", str(config), "-p", str(workdir), "-g", "daemon off;"],
                                         stdout=log.open("ab"), stderr=subprocess.STDOUT), workdir)
    try:
        wait_port(port)
    except BaseException:
        proxy.stop()
        raise
    return proxy
