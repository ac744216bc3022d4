"""Agent versions built from this tree, and devices whose agents run under ``edgefleet agent supervise``.

:func:`agent_wheels` (once per session) copies the tree's packages to a temp dir and builds wheels with
``pip wheel --no-deps``: the version this tree has, the next one (good), and two broken ones above it, one that
crashes at start and one that cannot connect to its broker. Each device gets its own install prefix with an
environment of the tree's version made by the agent's own :func:`edge_agent.agent_envs.install_env`. New
environments reuse the test venv's site-packages for the dependencies (``agent_env_base``), so an agent bundle
here carries only the ``edgefleet`` wheel (~0.4 MB) and an install costs seconds, not a full onnxruntime install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge_agent import __version__
from edge_agent.agent_envs import install_env, switch
from simulators.devices import DeviceSpec, write_agent_config
from tests.support.fleet import FAST_AGENT_SETTINGS, AgentProcess, cli, wait_all_serving
from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("fleet_protocol", "edge_agent", "edgefleet_runtime", "fleet_server", "edgefleet_cli", "simulators",
            "firmware_profiles")
BASE_SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


def bumped(version: str, by: int) -> str:
    major, minor, patch = version.split(".")[:3]
    return f"{major}.{minor}.{int(patch) + by}"


GOOD, CRASHES, CANNOT_CONNECT = bumped(__version__, 1), bumped(__version__, 2), bumped(__version__, 3)

# The broken builds: one line of this tree changed, so the rest is the real agent.
CRASH_PATCH = ("edge_agent/__init__.py", "\n__version__ = ", "\nraise RuntimeError(\"this agent build crashes at "
               "start (a test's broken version)\")\n__version__ = ")
NO_CONNECT_PATCH = ("edge_agent/agent.py", "brokers = config.brokers",
                    "brokers = tuple(type(b)(b.url, b.host, 1, b.tls) for b in config.brokers)  # cannot connect")


def _build(work: Path, version: str, patch: tuple[str, str, str] | None) -> Path:
    """A wheels folder holding ``edgefleet-<version>-py3-none-any.whl`` built from a copy of this tree."""
    tree = work / f"tree-{version}"
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    edits = [("pyproject.toml", f'version = "{__version__}"', f'version = "{version}"'),
             ("edge_agent/__init__.py", f'__version__ = "{__version__}"', f'__version__ = "{version}"')]
    for path, old, new in edits + ([patch] if patch else []):
        text = (tree / path).read_text()
        assert text.count(old) == 1, f"{path} no longer holds {old!r}: update the test's patch"
        (tree / path).write_text(text.replace(old, new))
    out = work / f"wheels-{version}"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(tree)], check=True, cwd=work, timeout=300)
    shutil.rmtree(tree)
    return out


@pytest.fixture(scope="session")
def agent_wheels(tmp_path_factory) -> dict[str, Path]:
    """``{version: wheels folder}`` for this tree's version, the next (good) and the two broken ones."""
    work = tmp_path_factory.mktemp("agent-wheels")
    builds = {__version__: None, GOOD: None, CRASHES: CRASH_PATCH, CANNOT_CONNECT: NO_CONNECT_PATCH}
    with ThreadPoolExecutor(2) as pool:
        done = {v: pool.submit(_build, work, v, patch) for v, patch in builds.items()}
        return {v: future.result() for v, future in done.items()}


def start_supervised(workdir: Path, device_ids: list[str], *, broker_url: str, key_hex: str, wheels: Path,
                     tags: dict[str, str], **settings: object) -> list[AgentProcess]:
    """Per device: an install prefix with this tree's agent in ``envs/<version>`` (``current``), and
    ``edgefleet agent supervise`` running it; returns once every agent serves."""
    def prepare(device_id: str) -> Path:
        prefix = workdir / device_id / "opt"
        install_env(prefix, __version__, wheels, base_site_packages=BASE_SITE_PACKAGES)
        switch(prefix, __version__)
        switch(prefix, __version__, link="confirmed")  # where systemd would start the supervisor from
        return prefix

    with ThreadPoolExecutor(2) as pool:
        prefixes = list(pool.map(prepare, device_ids))
    agents = []
    for device_id, prefix in zip(device_ids, prefixes):
        port = free_port()
        spec = DeviceSpec(device_id, broker_url, [key_hex], port, "generic-cpu", dict(tags),
                          {**FAST_AGENT_SETTINGS, "install_prefix": str(prefix),
                           "agent_env_base": str(BASE_SITE_PACKAGES), **settings})
        config = write_agent_config(workdir / device_id, spec)
        log = workdir / device_id / "supervisor.log"
        agents.append(AgentProcess(device_id, cli("agent", "supervise", "--config", str(config), log=log), log,
                                   device_id=device_id, config=config, scoring_url=f"http://127.0.0.1:{port}",
                                   state_dir=workdir / device_id / "state"))
    return wait_all_serving(agents)
