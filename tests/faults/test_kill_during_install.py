"""kill -9 of an agent while it installs a new version leaves the old or the new version whole, then the new one.

A real ``edgefleet agent run`` process installs version N+1 (a few MB, fetched in 64 KiB chunks two at a time)
over version N and is killed with SIGKILL after a seeded random delay that lands in the download, the
verification, the switch or the health check. After every kill, before restarting, ``active.json`` must name a
version directory whose files match its manifest's digests; after the restart the agent must serve that
version or, when the resumed install already finished, N+1; then reach N+1 without help.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import pytest

from tests.agent.helpers import Bundle, FakeServer
from tests.support.fleet import AgentProcess, start_agent

from .conftest import infer_version

MODULE = "linear"
PAYLOAD_BYTES = 3 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


def big_bundle(server: FakeServer, version: int) -> Bundle:
    """Version ``version`` with a ``weights.bin`` of fresh random bytes, so no chunk is shared with earlier ones."""
    payload = random.Random(version).randbytes(PAYLOAD_BYTES)
    return server.bundle(module=MODULE, version=version, seed=version, chunk_size=CHUNK_BYTES,
                         extra_files={"weights.bin": payload})


def verified_active_version(state_dir: Path) -> int:
    """The version ``active.json`` names, after checking every file of its directory against the manifest."""
    module_dir = state_dir / "modules" / MODULE
    active = json.loads((module_dir / "active.json").read_text())
    version_dir = module_dir / active["dir"]
    signed = active["manifest"]["signed"]
    assert signed["version"] == active["version"]
    for entry in signed["files"]:
        data = (version_dir / entry["path"]).read_bytes()
        assert len(data) == entry["size"], f"{entry['path']} of v{active['version']} has the wrong size"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{entry['path']} of v{active['version']} differs"
    return int(active["version"])


def kill_points(rng: random.Random, count: int) -> list[float]:
    """Seconds after publishing the new desired state at which to kill: spread over download and switch."""
    return [rng.uniform(0.0, 2.5) for _ in range(count)]


def run_kills(tmp_path: Path, server: FakeServer, broker_url: str, delays: list[float]) -> list[dict]:
    agent: AgentProcess = start_agent(tmp_path, "kill-1", broker_url=broker_url, key_hex=server.key_hex,
                                      fetch_window_chunks=2, fetch_timeout_s=2)
    outcomes = []
    try:
        current = big_bundle(server, 1)
        server.publish_desired(agent.device_id, 1, [current])
        server.wait_running(agent.device_id, MODULE, 1, timeout=60)
        for i, delay in enumerate(delays, start=2):
            new = big_bundle(server, i)
            server.publish_desired(agent.device_id, i, [new])
            time.sleep(delay)
            agent.kill()
            on_disk = verified_active_version(agent.state_dir)
            assert on_disk in (i - 1, i), f"active.json names v{on_disk} while installing v{i} over v{i - 1}"
            started = time.monotonic()
            agent.restart()
            agent.wait_ready()
            served = infer_version(agent.scoring_url)  # the resumed install may already have switched again
            assert on_disk <= served <= i, f"the restarted agent serves v{served}; v{on_disk} was on disk"
            server.wait_running(agent.device_id, MODULE, i, timeout=60)
            outcomes.append({"kill_after_s": round(delay, 3), "found": "new" if on_disk == i else "old",
                             "to_new_version_s": round(time.monotonic() - started, 2)})
            assert verified_active_version(agent.state_dir) == i
            assert infer_version(agent.scoring_url) == i
    finally:
        agent.stop()
    print("kill points:", outcomes)
    return outcomes


def test_sigkill_at_eight_random_points_of_an_install_leaves_a_whole_version_then_the_new_one(tmp_path, mosquitto,
                                                                                            fake_server, rng):
    outcomes = run_kills(tmp_path, fake_server, mosquitto.url, kill_points(rng, 8))
    assert len(outcomes) == 8


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_at_fifty_random_points_of_an_install_leaves_a_whole_version_then_the_new_one(tmp_path, mosquitto,
                                                                                            fake_server, rng):
    outcomes = run_kills(tmp_path, fake_server, mosquitto.url, kill_points(rng, 50))
    assert len(outcomes) == 50
