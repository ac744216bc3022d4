"""A real Prometheus (Debian's ``prometheus`` package) on a free loopback port, scraping what a test names.

Its configuration is written as JSON (which is YAML) into the test's folder
with its storage beside it; it scrapes every second, and it is stopped by
its pid. :meth:`Prometheus.targets` and :meth:`Prometheus.query` read its
HTTP API (``/api/v1/targets``, ``/api/v1/query``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .processes import stop_process
from .net import free_port, wait_for

BINARY = "/usr/bin/prometheus"


@dataclass
class ScrapeJob:
    name: str
    url: str  # http://host:port of the target
    metrics_path: str = "/metrics"
    token: str | None = None  # sent as a bearer token, from a file as in production


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen
    log: Path
    config: dict = field(default_factory=dict)

    def targets(self) -> list[dict]:
        """The active targets with their ``health`` (up, down, unknown) and ``lastError``."""
        response = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["activeTargets"]

    def query(self, promql: str) -> list[dict]:
        """An instant query's result vector: ``[{"metric": {...}, "value": [time, "text"]}, ...]``."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        stop_process(self.process, timeout=10)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


def start_prometheus(workdir: Path, jobs: list[ScrapeJob]) -> Prometheus:
    """Start Prometheus scraping ``jobs`` every second; return once it is ready."""
    if not Path(BINARY).exists() and shutil.which("prometheus") is None:
        raise AssertionError("prometheus is not installed: run `make test`, which installs it")
    workdir.mkdir(parents=True, exist_ok=True)
    scrape_configs = []
    for job in jobs:
        host = job.url.split("://", 1)[1].rstrip("/")
        config = {"job_name": job.name, "metrics_path": job.metrics_path, "static_configs": [{"targets": [host]}]}
        if job.token is not None:
            token_file = workdir / f"{job.name}.token"
            token_file.write_text(job.token)
            token_file.chmod(0o600)
            config["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        scrape_configs.append(config)
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": scrape_configs}
    config_file = workdir / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=2))
    port = free_port()
    log = workdir / "prometheus.log"
    process = subprocess.Popen([shutil.which("prometheus") or BINARY, f"--config.file={config_file}",
                                f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--log.level=warn"], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log, config)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"prometheus exited ({process.returncode}):\n{prometheus.tail()}")
        return httpx.get(f"{prometheus.url}/-/ready", timeout=2).status_code == 200

    try:
        wait_for(ready, timeout=30, what="prometheus to be ready")
    except BaseException:
        prometheus.stop()
        raise
    return prometheus
