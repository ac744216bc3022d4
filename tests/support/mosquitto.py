"""A real Mosquitto broker on a free loopback port, started and stopped by tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .processes import stop_process
from .net import free_port, wait_port


@dataclass
class Mosquitto:
    host: str
    port: int
    process: subprocess.Popen | None
    config: Path
    log: Path

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(self.config)], stdout=self.log.open("ab"),
                                        stderr=subprocess.STDOUT)
        wait_port(self.port)

    def stop(self) -> None:
        stop_process(self.process, timeout=5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def start_mosquitto(workdir: Path, *, port: int | None = None, extra_config: str = "") -> Mosquitto:
    """Start Mosquitto with persistence in ``workdir``; the same port survives restarts."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = workdir / "mosquitto.conf"
    # As root, Mosquitto drops to the mosquitto user, which cannot write its persistence file into
    # pytest's private temp folders: sessions would then be forgotten across a broker restart.
    run_as = "user root\n" if os.geteuid() == 0 and "user " not in extra_config else ""
    config.write_text(
        run_as +
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence true\n"
        f"persistence_location {workdir}/\n"
        "max_queued_messages 100000\n"
        "max_inflight_messages 100\n"
        f"{extra_config}"
    )
    broker = Mosquitto("127.0.0.1", port, None, config, workdir / "mosquitto.log")
    broker.start()
    return broker
