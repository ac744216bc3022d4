"""Launch simulated devices: a real ``edgefleet agent run`` process per device.

Each device gets a folder with its ``agent.toml``, its state directory and
its log. Used by ``edgefleet demo`` and by the end-to-end tests. For load
tests with thousands of devices per process (one MQTT loop, no HTTP server
per device) see :mod:`simulators.fleet` and ``edgefleet simulate``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DeviceSpec:
    device_id: str
    broker_url: str
    trusted_keys: list[str]
    scoring_port: int
    profile: str = "generic-cpu"
    tags: dict[str, str] = field(default_factory=dict)
    settings: dict[str, float | int | str] = field(default_factory=dict)  # any other AgentConfig field


def _toml_value(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def write_agent_config(device_dir: Path, spec: DeviceSpec) -> Path:
    """Write ``device_dir/agent.toml`` (state in ``device_dir/state``) and return its path."""
    device_dir.mkdir(parents=True, exist_ok=True)
    values = {"device_id": spec.device_id, "state_dir": "state", "broker_url": spec.broker_url,
              "trusted_keys": spec.trusted_keys, "profile": spec.profile, "scoring_port": spec.scoring_port,
              **spec.settings}
    lines = [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    lines += ["[tags]", *(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in spec.tags.items())]
    config = device_dir / "agent.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def spawn_agent(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``edgefleet agent run --config CONFIG`` with output appended to ``log``."""
    return subprocess.Popen([sys.executable, "-m", "edgefleet_cli.main", "agent", "run", "--config", str(config)],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
